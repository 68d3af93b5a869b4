"""The gateway's billing as an operator reads it from /metrics (issue 16): reservations by state (true counts, read
from the database at most every METRICS_REFRESH_SECONDS), and counters of the ledger's moves, overruns, the
settlement journal's retries and its dead letters. A reading is taken before and after; a Then expects each metric
to have moved by exactly what the scenario did, polling while the reservation counts catch up."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from support.client.api import Exchange
from support.client.assertions import expect_status
from support.database.reflection import Database
from support.harness.waits import wait_until
from support.harness.world import Metrics

STATES = ("pending", "finalized", "released", "expired", "voided")
# What the sentence calls a metric -> (sample name, labels that pick it; samples matching are summed).
METRICS = {
    **{f"reservations {state}": ("gateway_reservations", {"state": state}) for state in STATES},
    **{words: ("gateway_billing_moves_total", {"move": move}) for words, move in (
        ("reserves", "reserve"), ("finalizes", "finalize"), ("releases", "release"), ("expiries", "expire"),
        ("voids", "void"), ("late charges", "late_charge"))},
    "overruns": ("gateway_chat_overruns_total", {}),
    "journal retries": ("gateway_settlement_retries_total", {}),
    "dead letters": ("gateway_settlement_dead_letters_total", {}),
}
QUIET_FOR = timedelta(seconds=60)  # no hold of earlier work may expire within this of the first reading


class BillingMetrics:
    def __init__(self, scrape: Callable[[], Exchange], db: Database, metrics: Metrics, timeout: float):
        self.scrape, self.db, self.metrics, self.timeout = scrape, db, metrics, timeout  # scrape: GET /metrics

    def read(self) -> tuple[dict[str, float], Exchange]:
        exchange = expect_status(self.scrape(), 200, "an operator reading the gateway's metrics")
        samples = [s for family in text_string_to_metric_families(exchange.text) for s in family.samples]
        reading = {}
        for words, (name, labels) in METRICS.items():
            reading[words] = sum(s.value for s in samples
                                 if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))
        return reading, exchange

    def await_quiet(self) -> None:
        """No hold placed before this scenario is due to expire while it reads the metrics (a serial scenario: no
        other scenario moves money meanwhile), so the differences are the scenario's own."""
        reservations = self.db.table("reservations")

        def due() -> int:
            with self.db.engine.connect() as conn:
                return conn.scalar(select(func.count()).select_from(reservations).where(
                    reservations.c.status == "pending",
                    reservations.c.expires_at < datetime.now(timezone.utc) + QUIET_FOR))
        wait_until("the holds of earlier work to settle or expire before the metrics are read", due,
                   lambda count: count == 0, timeout=self.timeout + 15, describe=lambda count: f"{count} still pending")

    def first_reading(self) -> None:
        """The first reading, once its reservation counts are the database's: a gateway refreshes them every few
        seconds (METRICS_REFRESH_SECONDS), and the scenario before may have just removed reservations of its own."""
        reservations = self.db.table("reservations")
        with self.db.engine.connect() as conn:
            truth = dict(conn.execute(select(reservations.c.status, func.count())
                                      .group_by(reservations.c.status)).all())
        fresh = {f"reservations {state}": truth.get(state, 0) for state in STATES}
        self.metrics.before, self.metrics.answer = wait_until(
            "the metrics' reservation counts to be the database's before the first reading", self.read,
            lambda reading: all(reading[0][words] == count for words, count in fresh.items()),
            timeout=self.timeout, describe=lambda reading: f"{ {w: reading[0][w] for w in fresh} } against the "
            f"database's {fresh} (request {reading[1].request_id})", max_interval=0.05)

    def expect_moved(self, expected: dict[str, int]) -> None:
        """Every metric named moved by exactly its change since the first reading (read again until the counts
        catch up, at most the poll timeout)."""
        unknown = [words for words in expected if words not in METRICS]
        if unknown:
            raise AssertionError(f"Unknown metric(s) {unknown}; the suite knows: {', '.join(METRICS)}")
        before = self.metrics.before

        def moved() -> tuple[dict, Exchange]:
            after, exchange = self.read()
            return {words: after[words] - before[words] for words in expected}, exchange

        def wrong(seen) -> str:
            off = {words: f"{seen[0][words]:g}, not {change}" for words, change in expected.items()
                   if seen[0][words] != change}
            return f"these moved otherwise: {off} (the last reading: request {seen[1].request_id})"

        wait_until(f"each billing metric to move by exactly its change since the first reading ({expected})", moved,
                   lambda seen: seen[0] == expected, timeout=self.timeout + 5, describe=wrong, max_interval=0.05)
