"""Many requests at the same moment: each on its own thread and connection, released together by a barrier.

Every exchange is recorded like the suite's other requests (its own request id, the scenario's trace id), and the
burst is attached to the report once, from the scenario's thread, as one piece of evidence."""
from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import requests

from support.client import evidence
from support.client.api import ApiClient, Exchange


def burst(api: ApiClient, count: int, method: str, path: str, *, token: str, json_body, title: str,
          timeout: float | None = None) -> list[Exchange]:
    """Send `count` copies of one request at once; returns the exchanges in the order they were prepared."""
    prepared = [Exchange(method, api.base_url + path, path,
                         {"X-Request-ID": api.next_request_id(),
                          "traceparent": f"00-{api.trace_id}-{secrets.token_hex(8)}-01",
                          "Authorization": f"Bearer {token}"}, json_body, "")
                for _ in range(count)]
    for exchange in prepared:
        exchange.request_id = exchange.request_headers["X-Request-ID"]
    gate = threading.Barrier(count)

    def send(exchange: Exchange) -> Exchange:
        with requests.Session() as session:
            gate.wait(timeout=30)
            started = time.perf_counter()
            try:
                response = session.request(method, exchange.url, json=json_body, headers=exchange.request_headers,
                                           timeout=timeout or api.timeout)
            except requests.RequestException as exc:
                exchange.error = f"{type(exc).__name__}: {exc}"
            else:
                exchange.status = response.status_code
                exchange.response_headers = response.headers
                exchange.text = response.text
            exchange.elapsed_ms = (time.perf_counter() - started) * 1000
        return exchange

    with ThreadPoolExecutor(max_workers=count) as pool:
        done = list(pool.map(send, prepared))
    api.exchanges.extend(done)
    statuses = Counter(e.status if e.error is None else "no answer" for e in done)
    evidence.attach_json(f"{title}: {count} requests at once → {dict(statuses)}",
                         {"statuses": {str(k): v for k, v in statuses.items()},
                          "exchanges": [e.evidence() for e in done]})
    return done
