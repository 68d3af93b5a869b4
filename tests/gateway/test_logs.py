"""Structured logs: one JSON object per line, and every line emitted while serving a request carries its id.

A small app behind the gateway's own middleware is served by a real uvicorn server in a thread, with the
gateway's log configuration; its routes log from the event loop and from a worker thread, warn, raise, and
return without answering (which only uvicorn itself reports, after the app has returned).
"""
from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
import warnings

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from gateway import logs
from gateway.errors import install as install_errors
from gateway.middleware import GatewayMiddleware

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _app() -> FastAPI:
    app = FastAPI()
    install_errors(app)
    chatty = logging.getLogger("gateway.test")

    @app.get("/log")
    async def log_line():
        chatty.info("from the event loop")
        await run_in_threadpool(chatty.info, "from a worker thread")
        return {"ok": True}

    @app.get("/warn")
    def warn():
        warnings.warn("a deprecated thing was used", DeprecationWarning, stacklevel=1)
        return {"ok": True}

    @app.get("/boom")
    def boom():
        raise RuntimeError("something broke")

    async def silent(scope, receive, send):  # an ASGI app that never answers
        return None

    async def half(scope, receive, send):  # an ASGI app that starts an answer and never finishes it
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})

    app.mount("/silent", silent)
    app.mount("/half", half)
    app.add_middleware(GatewayMiddleware, max_body_bytes=1000)
    return app


@pytest.fixture(scope="module")
def served():
    saved = logging.getLogger().handlers[:], logging.getLogger().level
    logs.configure()
    stream = io.StringIO()
    for handler in logging.getLogger().handlers:
        handler.setStream(stream)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(_app(), host="127.0.0.1", port=port, log_config=None,
                                           access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    sent = {}
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            for path in ("/log", "/warn", "/boom", "/silent/x", "/half/x"):
                rid = "t.logs" + path.replace("/", ".")
                headers = {"X-Request-ID": rid, "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}
                try:
                    response = client.get(path, headers=headers)
                except httpx.HTTPError as exc:  # /half: the connection ends mid-body
                    response = exc
                sent[path] = (rid, response)
            minted = client.get("/log")
    server.should_exit = True
    thread.join(10)
    lines = [line for line in stream.getvalue().splitlines() if line.strip()]
    logging.getLogger().handlers[:], _ = saved[0], logging.getLogger().setLevel(saved[1])
    return {"lines": lines, "sent": sent, "minted": minted}


def _parsed(served) -> list[dict]:
    return [json.loads(line) for line in served["lines"]]


def test_every_line_is_one_json_object(served):
    assert served["lines"], "nothing was logged"
    for line in served["lines"]:
        assert isinstance(json.loads(line), dict), line


def test_every_line_emitted_while_serving_carries_the_request_and_trace_id(served):
    parsed = _parsed(served)
    for path, (rid, response) in served["sent"].items():
        if path == "/half/x":
            continue
        assert response.headers["X-Request-ID"] == rid
        assert response.headers["X-Trace-ID"] == TRACE
        mine = [p for p in parsed if p.get("request_id") == rid]
        assert mine, f"no log line carries {rid}: {served['lines']}"
        assert all(p["trace_id"] == TRACE for p in mine), mine
    for message in ("from the event loop", "from a worker thread"):
        ids = [p["request_id"] for p in parsed if p["message"] == message]
        assert ids[0] == "t.logs.log" and ids[1] == served["minted"].headers["X-Request-ID"], ids


def test_warnings_become_log_lines_of_the_request(served):
    [line] = [p for p in _parsed(served) if "a deprecated thing was used" in p["message"]]
    assert line["request_id"] == "t.logs.warn" and line["logger"] == "py.warnings"


def test_an_exception_is_logged_once_with_its_traceback_and_request_id(served):
    rid, response = served["sent"]["/boom"]
    assert response.status_code == 500 and response.json()["request_id"] == rid
    errors = [p for p in _parsed(served) if p.get("exception")]
    assert len(errors) == 1, errors
    assert errors[0]["request_id"] == rid and "RuntimeError: something broke" in errors[0]["exception"]


def test_an_app_that_never_answers_gets_a_500_with_the_ids_and_a_log_line(served):
    rid, response = served["sent"]["/silent/x"]
    assert response.status_code == 500 and response.json()["code"] == "internal_error"
    assert any(p["request_id"] == rid and p["level"] == "error" for p in _parsed(served)), served["lines"]


def test_uvicorn_own_error_lines_carry_the_request_id(served):
    """uvicorn reports an unfinished answer after the app is done: still a line of that request."""
    rid, _ = served["sent"]["/half/x"]
    uvicorn_lines = [p for p in _parsed(served) if p["logger"].startswith("uvicorn") and p["level"] == "error"]
    assert uvicorn_lines, served["lines"]
    assert all(p["request_id"] == rid for p in uvicorn_lines), uvicorn_lines


def test_a_request_without_an_id_gets_one_minted_and_logged(served):
    minted = served["minted"].headers["X-Request-ID"]
    assert minted.startswith("gw-")
    assert any(p.get("request_id") == minted for p in _parsed(served))


def test_lines_outside_requests_carry_no_request_id(served):
    startup = [p for p in _parsed(served) if "Uvicorn running" in p["message"] or "Started server" in p["message"]]
    assert startup and all(p["request_id"] is None for p in startup), startup
