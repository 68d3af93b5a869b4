"""A bounded flood of refused requests (bad tokens, unknown keys, random logins, metrics scrapes) from a few
attacker addresses, beside an org's chat traffic; what it measured, and what it grew the audit log by.

The audit budget is the sampling rule of the suite's stacks (support/stacks/base.py): refusals without credentials
are audited one by one up to a budget per client address and per window, then counted and summarised once per
action and address at the end of the window.
"""
from __future__ import annotations

import json
import math
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import requests
from sqlalchemy import Text, cast, func, or_, select

from support.database.reflection import Database
from support.domain.attacks import attacker_address
from support.domain.platform_api import chat_body
from support.harness.waits import wait_until
from support.stacks.base import GATEWAY_TEST_SETTINGS
from support.stress.load import percentile

AUDIT_WINDOW_SECONDS = float(GATEWAY_TEST_SETTINGS["AUDIT_SAMPLING_WINDOW_SECONDS"])
AUDIT_PER_ADDRESS = int(GATEWAY_TEST_SETTINGS["AUDIT_UNAUTHENTICATED_PER_ADDRESS"])
AUDIT_PER_WINDOW = int(GATEWAY_TEST_SETTINGS["AUDIT_UNAUTHENTICATED_PER_WINDOW"])
REFUSALS_COUNTED = "gateway_unaudited_refusals_total"


@dataclass
class FloodFigures:
    """What a flood beside normal traffic measured."""
    flood: str
    addresses: int
    sent: int
    flood_statuses: dict[int | str, int]
    seconds: float
    normal_sent: int
    normal_statuses: dict[int | str, int]
    normal_p50_ms: float | None
    normal_p99_ms: float | None
    audit_events: int  # written by the flood: one by one, and summaries of what was only counted
    audit_allowed: int  # what the sampling rule allows for that many addresses over the windows it spanned
    windows: int

    def as_report(self) -> dict:
        return dict(self.__dict__)


class Floods:
    """A bounded flood of refused requests from a few attacker addresses, beside an org's chat traffic."""

    KINDS = ("bad access tokens", "unknown API keys", "logins with random emails", "metrics scrapes")

    def __init__(self, base_url: str, db: Database, request_id_prefix: str, org_slug: str, artifacts_dir: str,
                 read_metrics: Callable[[], str] | None = None):
        self.folder = Path(artifacts_dir) / "security"
        self.base_url = base_url.rstrip("/")
        # The deployment's /metrics text (every replica's, put together, behind a load balancer).
        self.read_metrics = read_metrics or (lambda: requests.get(f"{self.base_url}/metrics", timeout=10).text)
        self.db = db
        self.prefix = f"{request_id_prefix}.flood"
        self.org_slug = org_slug

    def _attack(self, kind: str, number: int, address: str) -> tuple[str, str, dict, dict | None]:
        headers = {"X-Forwarded-For": address, "X-Request-ID": f"{self.prefix}.{number}"}
        if kind == "bad access tokens":
            headers["Authorization"] = f"Bearer eyJhbGciOiJFUzI1NiJ9.{secrets.token_urlsafe(24)}.x"
            return "GET", f"/orgs/{self.org_slug}/members", headers, None
        if kind == "unknown API keys":
            headers["Authorization"] = f"Bearer tg_{secrets.token_urlsafe(32)}"
            return "POST", "/v1/chat/completions", headers, chat_body("any-model")
        if kind == "logins with random emails":
            return "POST", "/auth/login", headers, {"email": f"{secrets.token_hex(6)}@flood.example",
                                                    "password": "correct-horse-battery"}
        if kind == "metrics scrapes":
            return "GET", "/metrics", headers, None
        raise AssertionError(f"No flood of {kind!r}; the suite knows: {', '.join(self.KINDS)}")

    def run(self, kind: str, *, total: int, addresses: int, key_secret: str, model: str,
            normal_clients: int = 2) -> FloodFigures:
        """`total` requests of the flood from `addresses` attackers at once, while `normal_clients` customers keep
        asking `model` for completions with the key until the flood is over."""
        attackers = [attacker_address() for _ in range(addresses)]
        flood: list[int | str] = []
        normal: list[tuple[int | str, float]] = []
        over = threading.Event()

        def attacker(index: int) -> None:
            with requests.Session() as session:
                for number in range(index, total, addresses):
                    method, path, headers, body = self._attack(kind, number, attackers[index])
                    flood.append(_status(lambda: session.request(method, self.base_url + path, headers=headers,
                                                                 json=body, timeout=30)))

        def customer() -> None:
            with requests.Session() as session:
                while not over.is_set():
                    started = time.perf_counter()
                    status = _status(lambda: session.post(
                        self.base_url + "/v1/chat/completions", json=chat_body(model),
                        headers={"Authorization": f"Bearer {key_secret}"}, timeout=30))
                    normal.append((status, (time.perf_counter() - started) * 1000))

        counted_before = self.refusals_counted()
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=addresses + normal_clients) as pool:
            customers = [pool.submit(customer) for _ in range(normal_clients)]
            for future in [pool.submit(attacker, i) for i in range(addresses)]:
                future.result()
            over.set()
            for future in customers:
                future.result()
        seconds = time.perf_counter() - started
        audited = self._audited_once_counted_summed(attackers, self.refusals_counted() - counted_before)
        latencies = sorted(ms for _, ms in normal)
        windows = math.ceil(seconds / AUDIT_WINDOW_SECONDS) + 1  # a flood may straddle one more window boundary
        per_window = min(AUDIT_PER_WINDOW, AUDIT_PER_ADDRESS * addresses) + addresses  # + one summary per address
        return FloodFigures(kind, addresses, total, _count(flood), round(seconds, 2), len(normal),
                            _count(status for status, _ in normal), _round(percentile(latencies, 0.50)),
                            _round(percentile(latencies, 0.99)), audited, windows * per_window, windows)

    def keep(self, figures: FloodFigures) -> Path:
        """The figures as an artifact of the run, beside the report."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"flood-{figures.flood.replace(' ', '-')}-{self.prefix.split('.')[0]}.json"
        path.write_text(json.dumps(figures.as_report(), indent=2, default=str))
        return path

    def _audited_once_counted_summed(self, attackers: list[str], counted: float) -> int:
        """The audit events the flood wrote: one by one under its request ids, and, when the gateway counted some
        refusals instead, the summaries of them (written at the end of their sampling window, so waited for)."""
        one_by_one, summaries = self.audit_events_of(attackers)
        if counted > 0 and summaries == 0:
            one_by_one, summaries = wait_until(
                "the summary audit events of the flood's refusals that were counted, not audited one by one",
                lambda: self.audit_events_of(attackers), lambda seen: seen[1] > 0,
                timeout=AUDIT_WINDOW_SECONDS + 5, describe=lambda seen: f"{seen[0]} events one by one and "
                f"{seen[1]} summaries, while the gateway counted {counted:g} refusals", max_interval=1.0)
        return one_by_one + summaries

    def refusals_counted(self) -> float:
        """The reference gateway's count of refusals it did not audit one by one (0 where it has no such metric)."""
        text = self.read_metrics()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(REFUSALS_COUNTED + "{"))

    def audit_events_of(self, attackers: list[str]) -> tuple[int, int]:
        """(events under the flood's request ids, summaries naming one of its addresses)."""
        events = self.db.table("audit_events")
        summaries = [cast(events.c.details, Text).contains(address, autoescape=True) for address in attackers]
        count = select(func.count()).select_from(events)
        with self.db.engine.connect() as conn:
            return (conn.execute(count.where(events.c.request_id.like(f"{self.prefix}.%"))).scalar_one(),
                    conn.execute(count.where(events.c.request_id.is_(None), or_(*summaries))).scalar_one())


def _status(send) -> int | str:
    try:
        return send().status_code
    except requests.RequestException as exc:
        return type(exc).__name__


def _count(values) -> dict:
    counted: dict = {}
    for value in values:
        counted[value] = counted.get(value, 0) + 1
    return dict(sorted(counted.items(), key=lambda kv: str(kv[0])))


def _round(value):
    return None if value is None else round(value, 1)
