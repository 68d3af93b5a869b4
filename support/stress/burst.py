"""Many requests at the same moment: each on its own thread and connection, released together by a barrier,
optionally while a watcher samples something (an account's balances) as fast as it can.

Every exchange is recorded like the suite's other requests (its own request id, the scenario's trace id), and the
burst is attached to the report once, from the scenario's thread, as one piece of evidence."""
from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import requests

from support.client import evidence
from support.client.api import ApiClient, Exchange, Request

SAMPLE_EVERY_SECONDS = 0.01


@dataclass
class Burst:
    """Requests fired at once, in the order they were given, and what the watcher saw meanwhile."""
    exchanges: list[Exchange]
    samples: list[dict] = field(default_factory=list)
    elapsed_s: float = 0.0

    def statuses(self) -> dict[int | str, int]:
        return dict(Counter(e.status if e.error is None else "no answer" for e in self.exchanges))

    def answered(self, status: int) -> list[Exchange]:
        return [e for e in self.exchanges if e.status == status]


def at_once(api: ApiClient, batch: list[Request], *, title: str, watch: Callable[[], dict | None] | None = None,
            timeout: float | None = None) -> Burst:
    """Send every request of `batch` at the same instant; `watch` (if given) is called every 10 ms meanwhile and
    what it returns (unless None) is kept as a sample."""
    prepared = [_prepare(api, request) for request in batch]
    gate = threading.Barrier(len(prepared))
    over = threading.Event()
    samples: list[dict] = []

    def sample() -> None:
        while not over.wait(SAMPLE_EVERY_SECONDS):
            seen = watch()
            if seen is not None:
                samples.append(seen)

    def send(exchange: Exchange) -> Exchange:
        with requests.Session() as session:
            gate.wait(timeout=30)
            started = time.perf_counter()
            try:
                response = session.request(exchange.method, exchange.url, json=exchange.request_body,
                                           headers=exchange.request_headers, timeout=timeout or api.timeout * 2)
            except requests.RequestException as exc:
                exchange.error = f"{type(exc).__name__}: {exc}"
            else:
                exchange.status, exchange.text = response.status_code, response.text
                exchange.response_headers = response.headers
            exchange.elapsed_ms = (time.perf_counter() - started) * 1000
        return exchange

    watcher = threading.Thread(target=sample, name="burst-watch", daemon=True) if watch else None
    if watcher:
        watcher.start()
    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=len(prepared), thread_name_prefix="burst") as pool:
            done = list(pool.map(send, prepared))
    finally:
        over.set()
        if watcher:
            watcher.join(timeout=10)
    burst = Burst(done, samples, time.perf_counter() - started)
    api.exchanges.extend(done)
    evidence.attach_json(f"{title}: {len(done)} requests at once → {burst.statuses()} in {burst.elapsed_s:.2f} s"
                         + (f", {len(samples)} samples" if watch else ""),
                         {"exchanges": [e.evidence() for e in done], "samples": samples[:500]})
    return burst


def _prepare(api: ApiClient, request: Request) -> Exchange:
    request_id = api.next_request_id()
    headers = {"X-Request-ID": request_id, "traceparent": f"00-{api.trace_id}-{secrets.token_hex(8)}-01"}
    if request.token is not None:
        headers["Authorization"] = f"Bearer {request.token}"
    headers.update(request.headers)
    return Exchange(request.method, api.base_url + request.path, request.path, headers, request.json_body,
                    request_id)
