"""support.stress.burst against a local HTTP server: requests released together, recorded like the suite's own,
attached once, and what a watcher saw meanwhile."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from support.client import evidence
from support.client.api import ApiClient, Request
from support.stress import burst

COUNT = 4


@pytest.fixture
def server(serving):
    everyone = threading.Barrier(COUNT, timeout=5)  # broken (500) unless all requests are in at the same time

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            try:
                everyone.wait()
                status = 201
            except threading.BrokenBarrierError:
                status = 500
            answer = json.dumps({"echo": json.loads(body), "request_id": self.headers["X-Request-ID"],
                                 "authorization": self.headers.get("Authorization")}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    with serving(Handler) as httpd:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"


@pytest.fixture
def attached(monkeypatch):
    seen = []
    monkeypatch.setattr(evidence, "attach_json", lambda name, data: seen.append((name, data)))
    return seen


def test_requests_are_released_together_and_recorded_like_the_suites_own(server, attached):
    api = ApiClient(server, request_id_prefix="r1.abc", trace_id="t" * 32, timeout=5)
    batch = [Request("POST", "/things", token=f"token-{i}", json_body={"n": i}) for i in range(COUNT)]
    sent = burst.at_once(api, batch, title="four things")
    assert sent.statuses() == {201: COUNT}
    assert [e.request_id for e in sent.exchanges] == [f"r1.abc.{i:03d}" for i in range(1, COUNT + 1)]
    assert [e.json()["echo"] for e in sent.exchanges] == [{"n": i} for i in range(COUNT)]
    assert [e.json()["authorization"] for e in sent.exchanges] == [f"Bearer token-{i}" for i in range(COUNT)]
    assert all(e.request_headers["traceparent"].split("-")[1] == "t" * 32 for e in sent.exchanges)
    assert api.exchanges == sent.exchanges
    [(title, data)] = attached
    assert title.startswith("four things: 4 requests at once") and len(data["exchanges"]) == COUNT


def test_a_watcher_samples_while_the_burst_lasts(server, attached):
    api = ApiClient(server, request_id_prefix="r1.abc", trace_id="t" * 32, timeout=5)
    readings = iter(range(10_000))
    sent = burst.at_once(api, [Request("POST", "/things", json_body={})] * COUNT, title="watched",
                         watch=lambda: {"reading": next(readings)})
    assert sent.samples == [{"reading": i} for i in range(len(sent.samples))]
    assert "samples" in attached[0][0]


def test_a_request_that_gets_no_answer_is_recorded_not_raised(attached):
    api = ApiClient("http://127.0.0.1:9", request_id_prefix="r1.abc", trace_id="t" * 32, timeout=2)
    sent = burst.at_once(api, [Request("GET", "/nothing-listens")] * 2, title="nowhere")
    assert sent.statuses() == {"no answer": 2}
    assert all(e.error and e.status is None for e in sent.exchanges)
