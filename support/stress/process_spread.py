"""Requests spread over every gateway process, as the @scale scenarios send them.

* Which process served an answer: the `X-Gateway-Process` header a gateway in test mode sends (host:pid).
* Bursts (each request on its own connection, so the kernel or the load balancer hands them to different
  processes) sent again and again until their answers came from enough processes, within the poll timeout.
* Steady traffic through the load balancer, on a few threads, while a replica is killed (the compose stack), and
  what came of each request: when it was sent, when it ended, and its answer or the error that cut it off.

Imports support.domain (the requests its services describe) and the layers below."""
from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import requests

from support.client import evidence
from support.client.api import ApiClient, Exchange, Request
from support.client.assertions import expect_true
from support.harness.waits import wait_until
from support.stress.burst import Burst

PROCESS_HEADER = "X-Gateway-Process"
WAVE = 8  # requests per burst while spreading


def served_by(exchange: Exchange) -> str | None:
    """The gateway process that answered, or None (no answer, or a gateway that does not say)."""
    return (exchange.response_headers or {}).get(PROCESS_HEADER) if exchange.error is None else None


def processes(exchanges: list[Exchange]) -> Counter:
    """How many answers each gateway process gave."""
    return Counter(p for p in map(served_by, exchanges) if p)


def spread_summary(exchanges: list[Exchange]) -> str:
    statuses = Counter(e.status if e.error is None else "no answer" for e in exchanges)
    shown = ", ".join(e.request_id for e in exchanges[:4]) + (", ..." if len(exchanges) > 4 else "")
    return (f"{len(exchanges)} requests (request ids {shown}): statuses {dict(statuses)}, answered by processes "
            f"{dict(processes(exchanges)) or f'none named (no {PROCESS_HEADER} header: is the gateway in test mode?)'}")


class ProcessSpread:
    def __init__(self, expected_processes: int, timeout: float, at_once: Callable[..., Burst]):
        self.expected = expected_processes  # the gateway processes the suite was told serve it
        self.timeout = timeout
        self.at_once = at_once  # ScenarioState.at_once: a burst on the scenario's client, kept as evidence

    def until(self, request: Request, title: str, enough: Callable[[list[Exchange]], bool]) -> list[Exchange]:
        """Bursts of WAVE copies of `request` until `enough(every exchange so far)`, or the poll timeout."""
        sent: list[Exchange] = []
        deadline = time.monotonic() + self.timeout
        while True:
            sent += self.at_once([request] * WAVE, title=f"{title} (wave {len(sent) // WAVE + 1})").exchanges
            if enough(sent) or time.monotonic() > deadline:
                return sent

    def reaching_every_process(self, request: Request, title: str) -> list[Exchange]:
        return self.until(request, title, lambda sent: len(processes(sent)) >= self.expected)

    def expect_several(self, exchanges: list[Exchange], what: str) -> None:
        seen = processes(exchanges)
        expect_true(len(seen) > 1, f"Expected {what} to reach more than one of the {self.expected} gateway "
                                   f"processes, but it did not: {spread_summary(exchanges)}")

    def expect_every(self, exchanges: list[Exchange], what: str) -> None:
        seen = processes(exchanges)
        expect_true(len(seen) >= self.expected, f"Expected {what} to reach every one of the {self.expected} gateway "
                                                f"processes within {self.timeout:g} s, but only {len(seen)} answered: "
                                                f"{spread_summary(exchanges)}")


# ---- steady traffic across a fault ---------------------------------------------------------------------------------

@dataclass
class Sent:
    exchange: Exchange
    started: float  # time.monotonic()
    ended: float = 0.0


@dataclass
class SteadyTraffic:
    """`request` sent one after another on `threads` threads, each on a connection of its own (a new one after a
    failure), until stop(); every exchange is kept with when it started and ended."""
    api: ApiClient
    request: Request
    threads: int
    sent: list[Sent] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self._workers = [threading.Thread(target=self._send_until_stopped, name=f"traffic-{n}", daemon=True)
                         for n in range(self.threads)]
        for worker in self._workers:
            worker.start()

    def _send_until_stopped(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            with self._lock:  # the client numbers its requests: one at a time
                exchange = self.api.prepare(self.request.method, self.request.path, token=self.request.token,
                                            json_body=self.request.json_body, headers=dict(self.request.headers))
                record = Sent(exchange, time.monotonic())
                self.sent.append(record)
            try:
                self.api.send(exchange, json_body=self.request.json_body, session=session)
            except AssertionError:  # no answer: the error is on the exchange
                session.close()
                session = requests.Session()
            record.ended = time.monotonic()
        session.close()

    def ended(self) -> list[Sent]:
        with self._lock:
            return [s for s in self.sent if s.ended]

    def wait_for(self, what: str, count: Callable[[list[Sent]], int], wanted: int) -> None:
        wait_until(what, lambda: count(self.ended()), lambda n: n >= wanted, timeout=self.api.timeout * 2,
                   describe=lambda n: f"{n} of {wanted}")

    def stop(self, title: str) -> list[Sent]:
        """Stop sending, wait for the requests in flight, and attach every exchange as one piece of evidence."""
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=self.api.timeout * 2)
        self.api.exchanges.extend(s.exchange for s in self.sent)
        evidence.attach_json(f"{title}: {len(self.sent)} requests → "
                             f"{dict(Counter(s.exchange.status or 'no answer' for s in self.sent))}",
                             {"exchanges": [s.exchange.evidence() for s in self.sent]})
        return self.sent
