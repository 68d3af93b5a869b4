"""The chat path's internals: request parsing, usage from a backend's answer, calling backends in route order
(against a real local aiohttp server), the rate limiter, and how a refusal without a JSON body is answered."""
from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest
from aiohttp import web

from gateway.errors import ApiError
from gateway.routers import chat
from gateway.runtime import RateLimiter
from gateway.services import routing
from gateway.services.routing import RouteResult, Upstream, call_in_order

MESSAGES = [{"role": "user", "content": "Hello, gateway"}]


# ---- parsing -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, words", [
    (b'{"model": "m", "messages": [', "not valid JSON"),
    (b"[1]", "JSON object"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}', "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (json.dumps({"model": "m" * 201, "messages": MESSAGES}).encode(), "at most 200"),
    (json.dumps({"model": "a\u0000b", "messages": MESSAGES}).encode(), "printable"),
    (json.dumps({"model": "m", "messages": MESSAGES, "max_tokens": True}).encode(), "max_tokens"),
    (json.dumps({"model": "m", "messages": MESSAGES, "max_tokens": 0}).encode(), "max_tokens"),
    (json.dumps({"model": "m", "messages": ["hi"]}).encode(), "messages[0]"),
    (json.dumps({"model": "m", "messages": MESSAGES, "stream": "yes"}).encode(), "'stream'"),
    (json.dumps({"model": "m", "messages": MESSAGES, "stream_options": {"include_usage": True}}).encode(),
     "only allowed when 'stream' is true"),
    (json.dumps({"model": "m", "messages": MESSAGES, "stream": True, "stream_options": []}).encode(),
     "'stream_options' must be an object"),
    (json.dumps({"model": "m", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": 1}})
     .encode(), "stream_options.include_usage"),
    (json.dumps({"model": "m", "messages": MESSAGES, "n": 9}).encode(), "'n' must be an integer from 1 to 8"),
    (json.dumps({"model": "m", "messages": MESSAGES, "n": 0}).encode(), "'n'"),
    (json.dumps({"model": "m", "messages": MESSAGES, "max_completion_tokens": 0}).encode(), "max_completion_tokens"),
])
def test_a_malformed_body_is_a_400_naming_the_problem(raw, words):
    with pytest.raises(ApiError) as refused:
        chat._parse(raw)
    assert refused.value.status == 400
    assert words in refused.value.message


def test_a_lone_surrogate_is_refused_when_the_payload_is_encoded():
    body = chat._parse(b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}')
    with pytest.raises(ApiError) as refused:
        chat._encode(body)
    assert refused.value.status == 400 and "surrogate" in refused.value.message


# ---- usage ---------------------------------------------------------------------------------------------------------

def test_reported_usage_is_used_as_is():
    assert chat.reported_usage({"prompt_tokens": 7, "completion_tokens": 3}) == (7, 3)


@pytest.mark.parametrize("usage", [None, "lots", {"prompt_tokens": "7", "completion_tokens": 3},
                                   {"prompt_tokens": -1, "completion_tokens": 3},
                                   {"prompt_tokens": True, "completion_tokens": 3}, {"prompt_tokens": 7}])
def test_missing_or_malformed_usage_is_not_usage(usage):
    assert chat.reported_usage(usage) is None


def test_without_usage_the_charge_is_the_bounds_the_generated_bytes_at_most_the_completion_bound():
    admitted = SimpleNamespace(prompt_bound=21, completion_bound=16)
    assert chat.usage_tokens(admitted, None, 20) == (21, 16, False)
    assert chat.usage_tokens(admitted, {"prompt_tokens": 5}, 8) == (21, 8, False)
    assert chat.usage_tokens(admitted, {"prompt_tokens": 5, "completion_tokens": 500}, 8) == (5, 500, True)


# ---- calling backends ----------------------------------------------------------------------------------------------

CALLS = web.AppKey("calls", list)


def _backend_app(behaviours: dict) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        request.app[CALLS].append(name)
        kind, status, body = behaviours[name]
        if kind == "json":
            return web.json_response(body, status=status)
        if kind == "text":
            return web.Response(text=body, status=status)
        if kind == "hang":
            await asyncio.sleep(30)
        if kind == "redirect":
            raise web.HTTPFound("/elsewhere")
        raise AssertionError(kind)

    app = web.Application()
    app[CALLS] = []
    app.router.add_post("/{name}", handle)
    return app


def _route(behaviours: dict, order: list, **timeouts) -> tuple[RouteResult, list]:
    async def run():
        app = _backend_app(behaviours)
        runner = web.AppRunner(app, handler_cancellation=True)  # a hanging handler ends with its client
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        upstream = Upstream()
        try:
            backends = [b if not isinstance(b, str) else {"name": b, "url": f"http://127.0.0.1:{port}/{b}",
                                                         **({"timeout_seconds": timeouts[b]} if b in timeouts else {})}
                        for b in order]
            result = await call_in_order(upstream, backends, b'{"model": "m"}', default_timeout=2,
                                         connect_timeout=1)
        finally:
            await upstream.close()
            await runner.cleanup()
        return result, app[CALLS]
    return asyncio.run(run())


OK = ("json", 200, {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})


def test_a_server_error_falls_back_to_the_next_backend():
    result, calls = _route({"a": ("json", 503, {"error": {}}), "b": OK}, ["a", "b"])
    assert (result.backend, result.status, calls) == ("b", 200, ["a", "b"])
    assert [a.outcome for a in result.attempts] == ["server_error", "ok"]


def test_a_refusal_is_returned_without_fallback():
    result, calls = _route({"a": ("json", 400, {"error": {"code": "x"}}), "b": OK}, ["a", "b"])
    assert (result.backend, result.status, calls) == ("a", 400, ["a"])
    assert json.loads(result.raw) == {"error": {"code": "x"}}


@pytest.mark.parametrize("answer", [("text", 200, "not json"), ("json", 200, [1, 2]), ("redirect", 302, None)])
def test_an_answer_that_is_not_a_json_object_falls_back(answer):
    result, calls = _route({"a": answer, "b": OK}, ["a", "b"])
    assert (result.backend, calls[-1]) == ("b", "b")
    assert result.attempts[0].outcome == "server_error"


def test_a_backend_that_does_not_answer_in_time_falls_back():
    result, _ = _route({"a": ("hang", 0, None), "b": OK}, ["a", "b"], a=0.2)
    assert result.backend == "b" and result.attempts[0].outcome == "timeout"


def test_unreachable_and_misconfigured_backends_are_passed_over():
    stopped = {"name": "stopped", "url": "http://127.0.0.1:9/v1/chat/completions"}
    broken = {"name": "broken"}
    result, _ = _route({"b": OK}, [stopped, broken, 42, "b"])
    assert [a.outcome for a in result.attempts] == ["connection_error", "misconfigured", "misconfigured", "ok"]
    assert result.backend == "b"


def test_when_every_backend_fails_nothing_answered():
    result, _ = _route({"a": ("json", 500, {}), "b": ("json", 502, {})}, ["a", "b"])
    assert not result.answered and [a.status for a in result.attempts] == [500, 502]


def test_a_refusal_without_a_json_body_becomes_an_openai_error_naming_the_backend():
    result = RouteResult("primary", 404, None, b"<html>no</html>", "text/html", [])
    with pytest.raises(ApiError) as answer:
        chat._answer(result)
    assert answer.value.status == 404 and "primary" in answer.value.message
    assert answer.value.headers["X-Gateway-Backend"] == "primary"


def test_a_reservation_outlasts_trying_every_backend():
    backends = [{"timeout_seconds": 0.5}, {}, {"timeout_seconds": "soon"}]
    assert routing.worst_case_seconds(backends, 10, 2) == (0.5 + 2) + (10 + 2) + (10 + 2)


# ---- rate limiter --------------------------------------------------------------------------------------------------

def test_the_rate_limiter_counts_per_key_and_frees_the_window(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("gateway.runtime.time.monotonic", lambda: now[0])
    limiter = RateLimiter()
    assert limiter.check("k1", 2, 3) is None and limiter.check("k1", 2, 3) is None
    assert limiter.check("k1", 2, 3) == 3000  # milliseconds until the oldest leaves the window
    assert limiter.check("k2", 2, 3) is None  # another key has its own window
    now[0] += 2.2
    assert limiter.check("k1", 2, 3) == 800  # refused requests do not count; the oldest leaves in 0.8 s
    now[0] += 0.7999
    assert limiter.check("k1", 2, 3) == 1  # rounded up: never a wait too short
    now[0] += 0.0001
    assert limiter.check("k1", 2, 3) is None
