"""A bounded flood of refused requests (bad tokens, unknown keys, random logins, metrics scrapes) from a few
attacker addresses, beside an org's chat traffic; what it measured, and what it grew the audit log by.

The audit budget is the sampling rule of the suite's stacks (support/stacks/base.py): refusals without credentials
are audited one by one up to a budget per client address and per window, then counted and summarised, once a
window, in one event per action and address by each gateway process that counted some. The flood is sent from one
event loop over keep-alive connections, so the client takes little of the machine, and the customers beside it send
at a steady pace (as an org's applications do), so the gateway spends most of its time on the flood.

A flood of N refusals lasting T seconds may touch W = ceil(T / window) + 1 windows, each allowing B = min(per window,
per address x addresses) + addresses x processes events. It outgrows W x B while the gateway refuses faster than
(B / window) / (1 - 2B / N): on the suite's stacks (window 0.5 s, B 64, or 68 with 2 processes) 188 a second for
N = 400. A flood sent "at least" N goes on past N until it has outgrown the budget of the windows it spanned (at
most four times N), so a slow moment of a loaded machine lengthens the flood instead of hiding the sampling.
"""
from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import requests
from sqlalchemy import Text, cast, func, or_, select

from support.client.keep_alive import Connection
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
CUSTOMER_INTERVAL_SECONDS = 0.1  # each customer's pace: a completion every 100 ms, answered or not


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
    sent_by_address: list[int]
    told_to_retry_by_address: list[int]  # answers 429 with a Retry-After of whole seconds, from each address
    request_ids: str

    def as_report(self) -> dict:
        return dict(self.__dict__)


class Floods:
    """A bounded flood of refused requests from a few attacker addresses, beside an org's chat traffic."""

    KINDS = ("bad access tokens", "unknown API keys", "logins with random emails", "metrics scrapes")

    def __init__(self, base_url: str, db: Database, request_id_prefix: str, org_slug: str, artifacts_dir: str,
                 read_metrics: Callable[[], str] | None = None, processes: int = 1):
        self.folder = Path(artifacts_dir) / "security"
        self.base_url = base_url.rstrip("/")
        # The deployment's /metrics text (every replica's, put together, behind a load balancer).
        self.read_metrics = read_metrics or (lambda: requests.get(f"{self.base_url}/metrics", timeout=10).text)
        self.db = db
        self.prefix = f"{request_id_prefix}.flood"
        self.org_slug = org_slug
        self.processes = processes  # the gateway processes serving the deployment: each summarises what it counted

    def _attack(self, kind: str, number: int, address: str) -> tuple[str, str, dict, bytes | None]:
        headers = {"X-Forwarded-For": address, "X-Request-ID": f"{self.prefix}.{number}"}
        if kind == "bad access tokens":
            headers["Authorization"] = f"Bearer eyJhbGciOiJFUzI1NiJ9.{secrets.token_urlsafe(24)}.x"
            return "GET", f"/orgs/{self.org_slug}/members", headers, None
        if kind == "unknown API keys":
            headers["Authorization"] = f"Bearer tg_{secrets.token_urlsafe(32)}"
            return "POST", "/v1/chat/completions", headers, json.dumps(chat_body("any-model")).encode()
        if kind == "logins with random emails":
            return "POST", "/auth/login", headers, json.dumps({"email": f"{secrets.token_hex(6)}@flood.example",
                                                               "password": "correct-horse-battery"}).encode()
        if kind == "metrics scrapes":
            return "GET", "/metrics", headers, None
        raise AssertionError(f"No flood of {kind!r}; the suite knows: {', '.join(self.KINDS)}")

    def run(self, kind: str, *, total: int, addresses: int, key_secret: str, model: str, outgrow_budget: bool = False,
            normal_clients: int = 2) -> FloodFigures:
        """`total` requests of the flood from `addresses` attackers at once (with `outgrow_budget`, more until they
        outgrow the audit budget of the windows they spanned), while `normal_clients` customers keep asking `model`
        for completions with the key until the flood is over."""
        attackers = [attacker_address() for _ in range(addresses)]
        counted_before = self.refusals_counted()
        enough = self._outgrown(total, addresses) if outgrow_budget else (lambda sent, seconds: False)
        flood, normal, seconds = asyncio.run(self._send(kind, enough, total * 4 if outgrow_budget else total,
                                                        attackers, key_secret, model, normal_clients))
        sent_in_all = len(flood)
        by_address = [[(status, retry) for index, status, retry in flood if index == attacker]
                      for attacker in range(addresses)]
        audited = self._audited_once_counted_summed(attackers, self.refusals_counted() - counted_before)
        if audited:
            self._await_a_whole_budget()
        latencies = sorted(ms for _, ms in normal)
        windows = _windows(seconds)
        per_window = self._budget_per_window(addresses)
        return FloodFigures(kind, addresses, sent_in_all, _count(status for _, status, _ in flood), round(seconds, 2),
                            len(normal), _count(status for status, _ in normal), _round(percentile(latencies, 0.50)),
                            _round(percentile(latencies, 0.99)), audited, windows * per_window, windows,
                            [len(sent) for sent in by_address],
                            [sum(status == 429 and _whole_seconds(retry) for status, retry in sent)
                             for sent in by_address], f"{self.prefix}.0 to {self.prefix}.{sent_in_all - 1}")

    def _budget_per_window(self, addresses: int) -> int:
        """One-by-one events up to the budget, and one summary per address from each process that counted some."""
        return min(AUDIT_PER_WINDOW, AUDIT_PER_ADDRESS * addresses) + addresses * self.processes

    def _outgrown(self, total: int, addresses: int) -> Callable[[int, float], bool]:
        """Whether a flood that has sent `sent` requests in `seconds` may stop: at least `total`, and more than the
        budget allows over the windows it spans so far and the one its last answers may reach into."""
        per_window = self._budget_per_window(addresses)
        return lambda sent, seconds: sent >= total and sent > (_windows(seconds) + 1) * per_window

    async def _send(self, kind: str, enough: Callable[[int, float], bool], most: int, attackers: list[str],
                    key_secret: str, model: str, normal_clients: int) -> tuple[list, list, float]:
        """The flood over one keep-alive connection per attacker until it has sent `enough` (or `most`), and the
        customers' completions meanwhile, from one event loop (threads and `requests` would take the client more CPU
        than the gateway takes); and how long the flood lasted."""
        flood: list[tuple[int, int | str, str | None]] = []  # (attacker, status, Retry-After)
        normal: list[tuple[int | str, float]] = []
        over = asyncio.Event()
        completion = json.dumps(chat_body(model)).encode()
        numbers = iter(range(most))
        started = time.perf_counter()

        async def attacker(index: int) -> None:
            connection = Connection(self.base_url)
            try:
                for number in numbers:
                    method, path, headers, body = self._attack(kind, number, attackers[index])
                    flood.append((index, *await _answered(connection, method, path, headers, body)))
                    if enough(len(flood), time.perf_counter() - started):
                        return
            finally:
                connection.close()

        async def customer(offset: float) -> None:
            connection = Connection(self.base_url)
            due = time.perf_counter() + offset
            try:
                while not over.is_set():
                    # At a steady pace, as an application sends; a slow answer makes the next one due at once.
                    with suppress(TimeoutError):
                        await asyncio.wait_for(over.wait(), max(0.0, due - time.perf_counter()))
                    if over.is_set():
                        return
                    due += CUSTOMER_INTERVAL_SECONDS
                    sent = time.perf_counter()
                    status, _ = await _answered(connection, "POST", "/v1/chat/completions",
                                                {"Authorization": f"Bearer {key_secret}"}, completion)
                    normal.append((status, (time.perf_counter() - sent) * 1000))
            finally:
                connection.close()

        customers = [asyncio.create_task(customer(k * CUSTOMER_INTERVAL_SECONDS / normal_clients))
                     for k in range(normal_clients)]
        try:
            await asyncio.gather(*(attacker(index) for index in range(len(attackers))))
            # The flood's refusals were all made between its first request and its last answer; the customers'
            # last completions, answered after that, refuse nothing.
            seconds = time.perf_counter() - started
        finally:
            over.set()
            await asyncio.gather(*customers)
        return flood, normal, seconds

    def keep(self, figures: FloodFigures) -> Path:
        """The figures as an artifact of the run, beside the report."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"flood-{figures.flood.replace(' ', '-')}-{self.prefix.split('.')[0]}.json"
        path.write_text(json.dumps(figures.as_report(), indent=2, default=str))
        return path

    def _audited_once_counted_summed(self, attackers: list[str], counted: float) -> int:
        """The audit events the flood wrote: one by one under its request ids, and, when the gateway counted some
        refusals instead, the summaries of them (written once a sampling window, so waited for until they sum up
        every refusal the gateway counted during the flood)."""
        seen = self.audit_events_of(attackers)
        if counted > 0 and seen.summed < counted:
            seen = wait_until(
                f"summary audit events of the flood's addresses that sum up the {counted:g} refusals the gateway "
                "counted during the flood instead of auditing them one by one",
                lambda: self.audit_events_of(attackers), lambda seen: seen.summed >= counted,
                timeout=AUDIT_WINDOW_SECONDS + 5, describe=lambda seen: f"{seen.one_by_one} events one by one and "
                f"{seen.summaries} summaries of {seen.summed} refusals")
        return seen.one_by_one + seen.summaries

    def _await_a_whole_budget(self) -> None:
        """Until a refusal from an address of its own is audited one by one again: the window whose budget the flood
        spent is over, so the scenario after this one on the stack finds that budget whole (the gateway summarises a
        window once it is over, so this is seldom a wait at all)."""
        def probe() -> tuple[str, int]:
            request_id = f"{self.prefix}-probe.{secrets.token_hex(4)}"
            method, path, headers, _ = self._attack("bad access tokens", 0, attacker_address())
            requests.request(method, self.base_url + path, headers={**headers, "X-Request-ID": request_id},
                             timeout=10)
            events = self.db.table("audit_events")
            with self.db.engine.connect() as conn:
                return request_id, conn.execute(select(func.count()).select_from(events).where(
                    events.c.request_id == request_id)).scalar_one()

        wait_until("a refusal from an address of its own audited one by one again, once the sampling window whose "
                   "budget the flood spent is over", probe, lambda seen: seen[1] == 1,
                   timeout=AUDIT_WINDOW_SECONDS + 5, describe=lambda seen: f"{seen[1]} audit events under the "
                   f"request id {seen[0]}")

    def refusals_counted(self) -> float:
        """The reference gateway's count of refusals it did not audit one by one (0 where it has no such metric)."""
        text = self.read_metrics()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(REFUSALS_COUNTED + "{"))

    def audit_events_of(self, attackers: list[str]) -> "AuditedFlood":
        """The events under the flood's request ids, and the summaries naming one of its addresses."""
        events = self.db.table("audit_events")
        names_an_attacker = or_(*(cast(events.c.details, Text).contains(address, autoescape=True)
                                  for address in attackers))
        with self.db.engine.connect() as conn:
            one_by_one = conn.execute(select(func.count()).select_from(events).where(
                events.c.request_id.like(f"{self.prefix}.%"))).scalar_one()
            summaries = [_details(row) for row in conn.execute(select(events.c.details).where(
                events.c.request_id.is_(None), names_an_attacker)).scalars()]
        return AuditedFlood(one_by_one, len(summaries),
                            sum(int(details.get("unrecorded_refusals") or 0) for details in summaries))


@dataclass(frozen=True)
class AuditedFlood:
    one_by_one: int
    summaries: int
    summed: int  # the refusals the summaries say were counted, not audited one by one


def _details(value) -> dict:
    return (json.loads(value) if isinstance(value, str) else value) or {}


async def _answered(connection: Connection, method: str, path: str, headers: dict,
                    body: bytes | None) -> tuple[int | str, str | None]:
    """(the answer's status, its Retry-After), or the name of what went wrong instead (a dropped connection, a
    time-out) and None."""
    try:
        answer = await connection.request(method, path, headers, body)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
        connection.close()  # the next request opens a new one
        return type(exc).__name__, None
    return answer.status, answer.headers.get("retry-after")


def _windows(seconds: float) -> int:
    """The sampling windows a flood lasting `seconds` may touch: it may straddle one more window boundary."""
    return math.ceil(seconds / AUDIT_WINDOW_SECONDS) + 1


def _whole_seconds(value: str | None) -> bool:
    return value is not None and value.isdigit() and int(value) >= 1


def _count(values) -> dict:
    counted: dict = {}
    for value in values:
        counted[value] = counted.get(value, 0) + 1
    return dict(sorted(counted.items(), key=lambda kv: str(kv[0])))


def _round(value):
    return None if value is None else round(value, 1)
