"""/metrics costs at most one reservation count per interval, whoever scrapes, and may want a token."""
from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway import metrics
from gateway.errors import install as install_errors
from gateway.middleware import GatewayMiddleware


class CountingDatabase:
    def __init__(self):
        self.reads = 0

    @contextmanager
    def sessions(self):
        self.reads += 1
        yield SimpleNamespace(execute=lambda statement: SimpleNamespace(all=lambda: [("pending", 3)]))


def test_a_flood_of_scrapes_counts_reservations_once_per_interval(monkeypatch):
    database = CountingDatabase()
    runtime = SimpleNamespace(db=database, settings=SimpleNamespace(metrics_refresh_seconds=60))
    monkeypatch.setattr(metrics, "_runtime", runtime)
    states = metrics.ReservationStates()
    for _ in range(100):
        [family] = list(states.collect())
    assert database.reads == 1
    assert {s.labels["state"]: s.value for s in family.samples}["pending"] == 3


def _app(token: str | None) -> TestClient:
    app = FastAPI()
    install_errors(app)

    @app.get("/metrics")
    def scrape():
        return {"ok": True}

    app.add_middleware(GatewayMiddleware, max_body_bytes=1000, metrics_token=token)
    return TestClient(app)


def test_metrics_want_the_token_when_one_is_set():
    client = _app("m" * 32)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {'m' * 32}"}).status_code == 200
    assert _app(None).get("/metrics").status_code == 200
