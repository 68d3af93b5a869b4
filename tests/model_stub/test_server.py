"""Tests of model_stub/ (the model backend double), run as a real subprocess (python -m model_stub)."""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from stub_helpers import ROOT, calls, chat, chat_body, set_behaviour, start_stub, stop
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed


def expected_usage(messages: list, reply: str, max_tokens: int | None = None) -> dict:
    texts = [m["content"] if isinstance(m["content"], str) else "".join(p["text"] for p in m["content"])
             for m in messages]
    chars = sum(len(text) for text in texts)
    prompt = math.ceil(chars / 4)
    completion = min(16 if max_tokens is None else max_tokens, math.ceil(len(reply) / 4))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


# ------------------------------------------------------------------------ basics


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_chat_completion_shape(client, ns):
    response = chat(client, ns, chat_body("  hello world  "))
    assert response.status_code == 200
    data = response.json()
    assert data["object"] == "chat.completion"
    assert data["id"].startswith("chatcmpl-")
    assert data["model"] == "gpt-test"
    assert isinstance(data["created"], int)
    choice = data["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Echo: hello world"}
    assert choice["finish_reason"] == "stop"
    assert data["usage"] == expected_usage(chat_body("  hello world  ")["messages"], "Echo: hello world")


def test_deterministic_for_the_same_body(client, ns):
    body = chat_body("same question", temperature=0.2)
    first = chat(client, ns, body).json()
    second = client.post("/v1/chat/completions", json=body).json()
    assert first == second
    # Key order does not matter: the id hashes the canonical body.
    reordered = json.dumps(dict(reversed(list(body.items()))))
    third = client.post(
        f"/ns/{ns}/v1/chat/completions", content=reordered, headers={"content-type": "application/json"}
    ).json()
    assert third == first
    other = chat(client, ns, chat_body("another question")).json()
    assert other["id"] != first["id"]
    assert other["created"] == first["created"]  # fixed, not the wall clock


@pytest.mark.parametrize(
    "messages, max_tokens, reply, finish",
    [
        ([{"role": "user", "content": "hi"}], None, "Echo: hi", "stop"),
        (
            [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "Echo: first"},
                {"role": "user", "content": [{"type": "text", "text": "text parts count too"}]},
                {"role": "user", "content": "second one"},
            ],
            100,
            "Echo: second one",
            "stop",
        ),
        ([{"role": "user", "content": "x" * 200}], None, ("Echo: " + "x" * 200)[:64], "length"),
        ([{"role": "user", "content": "abcdefghijklmnopqrstuvwxyz"}], 3, "Echo: abcdef", "length"),
        ([{"role": "user", "content": "abc"}], 3, "Echo: abc", "stop"),
        ([{"role": "system", "content": "no user message"}], None, "Echo:", "stop"),
    ],
)
def test_token_rule(client, ns, messages, max_tokens, reply, finish):
    body = {"model": "m", "messages": messages}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    data = chat(client, ns, body).json()
    assert data["choices"][0]["message"]["content"] == reply
    assert data["choices"][0]["finish_reason"] == finish
    assert data["usage"] == expected_usage(messages, reply, max_tokens)


def test_prompt_tokens_round_up(client, ns):
    # 9 characters in total -> ceil(9 / 4) = 3
    body = {"model": "m", "messages": [{"role": "system", "content": "abcd"}, {"role": "user", "content": "efghi"}]}
    assert chat(client, ns, body).json()["usage"]["prompt_tokens"] == 3


def test_usage_override(client, ns):
    stored = set_behaviour(client, ns, usage={"prompt_tokens": 1234, "completion_tokens": 56})
    assert stored["usage"] == {"prompt_tokens": 1234, "completion_tokens": 56, "total_tokens": 1290}
    data = chat(client, ns, chat_body(max_tokens=5)).json()
    assert data["usage"] == {"prompt_tokens": 1234, "completion_tokens": 56, "total_tokens": 1290}


def test_an_answered_call_is_recorded_with_its_usage_and_answer(client, ns):
    data = chat(client, ns, chat_body("record me", n=3)).json()
    record = calls(client, ns)[-1]
    assert record["usage"] == data["usage"]
    assert record["answer"] == {"contents": ["Echo: record me"] * 3, "n": 3}
    assert "stream" not in record
    set_behaviour(client, ns, usage={"prompt_tokens": 1234, "completion_tokens": 56})
    chat(client, ns, chat_body("record me"))
    assert calls(client, ns)[-1]["usage"] == {"prompt_tokens": 1234, "completion_tokens": 56, "total_tokens": 1290}


def test_what_a_slow_call_will_answer_is_on_record_while_it_waits(stub, client, ns):
    set_behaviour(client, ns, latency_ms=2000)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        with httpx.Client(base_url=stub.url, timeout=30) as other:
            answered = pool.submit(chat, other, ns, chat_body("later"))
            recorded = calls(client, ns)
            while not recorded and not answered.done():
                recorded = calls(client, ns)
            assert not answered.done(), "the call was answered before the test could read its record"
            assert recorded[0]["answer"] == {"contents": ["Echo: later"], "n": 1}
            assert recorded[0]["usage"] == answered.result().json()["usage"]


def test_a_call_not_answered_has_no_usage_or_answer_on_record(client, ns):
    chat(client, ns, {"model": "m", "messages": []})  # refused: no messages
    set_behaviour(client, ns, mode="error")
    chat(client, ns, chat_body("fail me"))
    assert [sorted(set(c) & {"usage", "answer", "stream"}) for c in calls(client, ns)] == [[], []]


def test_models(client, ns):
    data = client.get(f"/ns/{ns}/v1/models").json()
    assert data["object"] == "list"
    assert [m["id"] for m in data["data"]] == ["stub-model"]
    set_behaviour(client, ns, models=["a", "b"])
    assert [m["id"] for m in client.get(f"/ns/{ns}/v1/models").json()["data"]] == ["a", "b"]
    assert client.get("/v1/models").status_code == 200


def test_bad_chat_requests_are_openai_4xx(client, ns):
    response = client.post(f"/ns/{ns}/v1/chat/completions", content=b"{not json")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    response = chat(client, ns, {"model": "m"})
    assert response.status_code == 400
    response = chat(client, ns, chat_body(max_tokens=0))
    assert response.status_code == 400
    response = client.get("/v1/unknown")
    assert response.status_code == 404
    assert "error" in response.json()


# ------------------------------------------------------------------------ namespaces


def test_namespaces_are_isolated(client):
    a, b = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    try:
        set_behaviour(client, a, mode="error", status=500)
        assert chat(client, a, chat_body()).status_code == 500
        assert chat(client, b, chat_body()).status_code == 200
        assert client.get(f"/_stub/{b}/behaviour").json()["mode"] == "ok"
        assert len(calls(client, a)) == 1
        assert len(calls(client, b)) == 1
        assert calls(client, f"never-{uuid.uuid4().hex[:8]}") == []
    finally:
        client.delete(f"/_stub/{a}")
        client.delete(f"/_stub/{b}")


def test_plain_path_is_the_default_namespace(client):
    client.delete("/_stub/default")
    try:
        client.post("/v1/chat/completions", json=chat_body("plain"))
        recorded = calls(client, "default")
        assert [c["path"] for c in recorded] == ["/v1/chat/completions"]
        assert recorded[0]["body"]["messages"][0]["content"] == "plain"
    finally:
        client.delete("/_stub/default")


# ------------------------------------------------------------------------ modes


def test_error_mode_default_is_503_openai_error(client, ns):
    stored = set_behaviour(client, ns, mode="error")
    assert stored["status"] == 503
    response = chat(client, ns, chat_body())
    assert response.status_code == 503
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code", "param"}


def test_error_mode_4xx_uses_openai_error_body(client, ns):
    set_behaviour(client, ns, mode="error", status=400)
    response = chat(client, ns, chat_body())
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_error_mode_custom_body(client, ns):
    set_behaviour(client, ns, mode="error", status=429, body={"error": {"message": "slow down"}})
    response = chat(client, ns, chat_body())
    assert response.status_code == 429
    assert response.json() == {"error": {"message": "slow down"}}


@pytest.mark.parametrize("mode, status", [("ok", 200), ("error", 502)])
def test_latency(client, ns, mode, status):
    set_behaviour(client, ns, mode=mode, status=502, latency_ms=300)
    started = time.monotonic()
    response = chat(client, ns, chat_body())
    elapsed = time.monotonic() - started
    assert response.status_code == status
    assert elapsed >= 0.3


def test_hang_never_answers(client, ns):
    set_behaviour(client, ns, mode="hang")
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        chat(client, ns, chat_body(), timeout=httpx.Timeout(10, read=0.5))
    assert time.monotonic() - started < 5
    assert len(calls(client, ns)) == 1  # recorded before hanging
    client.delete(f"/_stub/{ns}")
    assert chat(client, ns, chat_body()).status_code == 200


def test_hang_is_released_by_a_behaviour_change(stub, client, ns):
    set_behaviour(client, ns, mode="hang")

    def hung_request():
        with httpx.Client(base_url=stub.url, timeout=30) as other:
            return chat(other, ns, chat_body())

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(hung_request)

        @retry(retry=retry_if_exception_type(AssertionError), stop=stop_after_delay(10), wait=wait_fixed(0.02), reraise=True)
        def arrived():
            assert len(calls(client, ns)) == 1

        arrived()
        started = time.monotonic()
        set_behaviour(client, ns, mode="ok")
        with pytest.raises(httpx.RemoteProtocolError):
            future.result(timeout=10)
        assert time.monotonic() - started < 5


def _held_request(stub, ns: str, body: dict):
    with httpx.Client(base_url=stub.url, timeout=30) as other:
        return chat(other, ns, body)


def _await_held(client, ns: str, count: int) -> list:
    """The namespace's calls, once its last `count` are held."""
    @retry(retry=retry_if_exception_type(AssertionError), stop=stop_after_delay(10), wait=wait_fixed(0.02), reraise=True)
    def held():
        recorded = calls(client, ns)
        assert len(recorded) >= count and [c.get("held") for c in recorded[-count:]] == [True] * count
        return recorded
    return held()


def test_hold_answers_once_released(stub, client, ns):
    set_behaviour(client, ns, hold=2)
    body = chat_body("held for a while")
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(_held_request, stub, ns, body) for _ in range(2)]
        recorded = _await_held(client, ns, 2)
        assert recorded[0]["answer"] == {"contents": ["Echo: held for a while"], "n": 1}  # on record while held
        time.sleep(0.2)  # nothing answers a held call but a release
        assert not any(f.done() for f in futures)
        assert client.post(f"/_stub/{ns}/release").json() == {"namespace": ns, "released": 2}
        answers = [f.result(timeout=10) for f in futures]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json()["choices"][0]["message"]["content"] == "Echo: held for a while"
    assert [c["held"] for c in calls(client, ns)] == [False, False]
    assert client.get(f"/_stub/{ns}/behaviour").json()["hold"] == 0
    # Only the first two were held: the next call is answered at once.
    assert chat(client, ns, body).status_code == 200
    assert "held" not in calls(client, ns)[-1]


def test_a_held_error_answers_its_error_once_released(stub, client, ns):
    set_behaviour(client, ns, mode="error", status=502, hold=1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(_held_request, stub, ns, chat_body())
        _await_held(client, ns, 1)
        set_behaviour(client, ns, mode="error", status=502)  # a change of behaviour releases it too
        assert future.result(timeout=10).status_code == 502


def test_a_held_call_whose_client_left_is_let_go(client, ns):
    set_behaviour(client, ns, hold=1)
    with pytest.raises(httpx.ReadTimeout):
        chat(client, ns, chat_body(), timeout=httpx.Timeout(10, read=0.3))

    @retry(retry=retry_if_exception_type(AssertionError), stop=stop_after_delay(10), wait=wait_fixed(0.02), reraise=True)
    def let_go():
        assert [c["held"] for c in calls(client, ns)] == [False]
    let_go()
    assert client.post(f"/_stub/{ns}/release").json()["released"] == 0


def test_release_of_an_unknown_namespace_releases_nothing(client):
    assert client.post("/_stub/never-used/release").json() == {"namespace": "never-used", "released": 0}


def test_drop_closes_without_a_response(stub, client, ns):
    set_behaviour(client, ns, mode="drop")
    with httpx.Client(base_url=stub.url, timeout=5) as fresh:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending"):
            chat(fresh, ns, chat_body())
    # Raw socket: not a single byte of HTTP comes back.
    host, port = stub.url.removeprefix("http://").split(":")
    payload = json.dumps(chat_body()).encode()
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            f"POST /ns/{ns}/v1/chat/completions HTTP/1.1\r\nHost: stub\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        assert sock.recv(1024) == b""
    assert len(calls(client, ns)) == 2
    set_behaviour(client, ns, mode="ok")
    assert chat(client, ns, chat_body()).status_code == 200
    assert "Exception in ASGI application" not in stub.stderr()


# ------------------------------------------------------------------------ recording and control


def test_calls_are_recorded_with_headers_in_order(client, ns):
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    chat(client, ns, chat_body("one"), headers={"traceparent": traceparent, "X-Request-ID": "req-1"})
    client.get(f"/ns/{ns}/v1/models", headers={"Authorization": "Bearer backend-key"})
    chat(client, ns, chat_body("two"))
    recorded = calls(client, ns)
    assert [c["method"] for c in recorded] == ["POST", "GET", "POST"]
    assert recorded[0]["path"] == f"/ns/{ns}/v1/chat/completions"
    assert recorded[0]["headers"]["traceparent"] == traceparent
    assert recorded[0]["headers"]["x-request-id"] == "req-1"
    assert recorded[1]["headers"]["authorization"] == "Bearer backend-key"
    assert recorded[0]["body"] == chat_body("one")
    assert recorded[2]["body"]["messages"][0]["content"] == "two"
    assert all(isinstance(c["at"], str) and c["at"] for c in recorded)
    assert recorded[0]["at"] <= recorded[1]["at"] <= recorded[2]["at"]


def test_calls_are_recorded_in_every_mode(client, ns):
    for behaviour in ({"mode": "error"}, {"mode": "drop"}, {"mode": "ok"}):
        set_behaviour(client, ns, **behaviour)
        try:
            chat(client, ns, chat_body(behaviour["mode"]))
        except httpx.TransportError:
            pass
    assert [c["body"]["messages"][0]["content"] for c in calls(client, ns)] == ["error", "drop", "ok"]


def test_no_delayed_ack_stall(client, ns):
    # Without TCP_NODELAY each response stalls ~40 ms on a delayed ACK (Nagle).
    chat(client, ns, chat_body())
    started = time.monotonic()
    for _ in range(30):
        assert chat(client, ns, chat_body()).status_code == 200
    assert (time.monotonic() - started) / 30 < 0.02


def test_calls_are_bounded(client, ns):
    for i in range(1005):
        client.get(f"/ns/{ns}/v1/models", params={"i": i})
    recorded = calls(client, ns)
    assert len(recorded) == 1000
    assert recorded[0]["query"] == "i=5"
    assert recorded[-1]["query"] == "i=1004"


def test_reset(client, ns):
    set_behaviour(client, ns, mode="error", status=500)
    chat(client, ns, chat_body())
    response = client.delete(f"/_stub/{ns}")
    assert response.status_code == 200
    assert calls(client, ns) == []
    assert client.get(f"/_stub/{ns}/behaviour").json()["mode"] == "ok"
    assert chat(client, ns, chat_body()).status_code == 200


def test_put_returns_the_stored_behaviour(client, ns):
    stored = set_behaviour(client, ns, mode="error", status=418, latency_ms=5, body={"x": 1})
    assert stored == {
        "mode": "error",
        "status": 418,
        "body": {"x": 1},
        "latency_ms": 5,
        "usage": None,
        "models": ["stub-model"],
        "chunk_chars": 4,
        "chunk_delay_ms": 0,
        "stream_usage": "request",
        "stream_fault": None,
        "hold": 0,
    }
    assert client.get(f"/_stub/{ns}/behaviour").json() == stored


@pytest.mark.parametrize(
    "payload",
    [
        {"mode": "explode"},
        {"mode": "error", "status": 200},
        {"mode": "error", "status": "503"},
        {"latency_ms": -1},
        {"latency_ms": 1.5},
        {"usage": {"prompt_tokens": 1}},
        {"usage": {"prompt_tokens": -1, "completion_tokens": 1}},
        {"mode": "ok", "unexpected": True},
        {"hold": True},
        {"hold": -1},
        {"hold": "1"},
        ["mode", "ok"],
    ],
)
def test_invalid_behaviour_is_422(client, ns, payload):
    response = client.put(f"/_stub/{ns}/behaviour", json=payload)
    assert response.status_code == 422
    assert response.json()["message"]
    assert client.get(f"/_stub/{ns}/behaviour").json()["mode"] == "ok"


def test_malformed_behaviour_json_is_422(client, ns):
    response = client.put(f"/_stub/{ns}/behaviour", content=b"{nope")
    assert response.status_code == 422
    assert response.json()["message"]


# ------------------------------------------------------------------------ process


def test_stops_promptly_with_a_hanging_request(tmp_path):
    own = start_stub(tmp_path)
    try:
        with httpx.Client(base_url=own.url, timeout=10) as c:
            set_behaviour(c, "h", mode="hang")
            with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:

                def hung_request():
                    with httpx.Client(base_url=own.url, timeout=30) as other:
                        return chat(other, "h", chat_body())

                future = pool.submit(hung_request)

                @retry(retry=retry_if_exception_type(AssertionError), stop=stop_after_delay(10), wait=wait_fixed(0.02), reraise=True)
                def arrived():
                    assert len(calls(c, "h")) == 1

                arrived()
                started = time.monotonic()
                own.proc.send_signal(signal.SIGTERM)
                # uvicorn re-raises the signal it caught after a clean shutdown
                assert own.proc.wait(timeout=10) in (0, -signal.SIGTERM)
                assert time.monotonic() - started < 5
                with pytest.raises(httpx.TransportError):
                    future.result(timeout=10)
    finally:
        stop(own.proc)
    assert "Traceback" not in own.stderr()


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_port_zero_announces_the_port(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "model_stub", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("model_stub listening on http://127.0.0.1:")
        url = line.split()[-1]
        assert httpx.get(f"{url}/healthz", timeout=5).json() == {"status": "ok"}
    finally:
        stop(proc)
        proc.stdout.close()
