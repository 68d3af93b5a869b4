"""Streamed answers from the model stub: OpenAI's chunk format, the usage chunk, delays between chunks, faults
mid-stream, and the call record's ``stream`` entry."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import time
from typing import Iterator

import httpx
import pytest
from stub_helpers import calls, chat, chat_body, set_behaviour, start_stub, stop
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

LONG_QUESTION = "z" * 200  # with max_tokens 100: "Echo: " + 200 characters, 52 content chunks of 4 characters


def sse_events(response: httpx.Response) -> Iterator[dict | str]:
    """The stream's events as they arrive: each chunk's JSON, or the string "[DONE]"."""
    buffer = b""
    for data in response.iter_bytes():
        buffer += data
        while b"\n\n" in buffer:
            raw, buffer = buffer.split(b"\n\n", 1)
            assert raw.startswith(b"data: "), f"not a data event: {raw!r}"
            payload = raw.removeprefix(b"data: ").decode("utf-8")
            yield payload if payload == "[DONE]" else json.loads(payload)
    assert buffer == b"", f"the stream ended inside an event: {buffer!r}"


def stream_url(ns: str) -> str:
    return f"/ns/{ns}/v1/chat/completions"


def streamed(client: httpx.Client, ns: str, body: dict) -> list[dict | str]:
    with client.stream("POST", stream_url(ns), json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(sse_events(response))


def content_of(events: list, index: int) -> str:
    return "".join(event["choices"][0]["delta"].get("content", "") for event in events
                   if isinstance(event, dict) and event.get("choices") and event["choices"][0]["index"] == index)


def content_chunks(events: list) -> list[dict]:
    return [event for event in events if isinstance(event, dict) and event.get("choices")
            and event["choices"][0]["delta"].get("content")]


def stream_record(client: httpx.Client, ns: str) -> dict:
    recorded = calls(client, ns)
    assert recorded and "stream" in recorded[-1], f"expected a streamed call on record, got {recorded}"
    return recorded[-1]["stream"]


def wait_for_record(client: httpx.Client, ns: str, awaited: str, holds) -> dict:
    """Poll the call record until ``holds(stream)``; on timeout, say what was awaited and what was last seen."""
    seen: list[dict] = []

    @retry(retry=retry_if_exception_type(AssertionError), stop=stop_after_delay(10), wait=wait_fixed(0.02))
    def poll() -> dict:
        seen[:] = [stream_record(client, ns)]
        assert holds(seen[0])
        return seen[0]

    try:
        return poll()
    except Exception as exc:
        raise AssertionError(f"awaited a stream record where {awaited}; last seen: {seen}") from exc


def ended_record(client: httpx.Client, ns: str) -> dict:
    return wait_for_record(client, ns, "the stream has ended", lambda stream: stream["ended"])


def record_of(prompt: int, contents: list[str], chunks: int, tokens: int, finished: bool = False,
              client_went_away: bool = False) -> dict:
    return {"prompt_tokens": prompt, "content_chunks_sent": chunks, "completion_tokens_sent": tokens,
            "contents_sent": contents, "finished": finished, "client_went_away": client_went_away, "ended": True,
            "paused": False}


def test_a_stream_is_the_whole_answer_in_order(client, ns):
    body = chat_body("stream me please", n=2)
    whole = chat(client, ns, body).json()
    events = streamed(client, ns, body)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    for chunk in chunks:
        assert {key: chunk[key] for key in ("id", "created", "model", "system_fingerprint")} == \
            {key: whole[key] for key in ("id", "created", "model", "system_fingerprint")}
        assert chunk["object"] == "chat.completion.chunk"
        assert "usage" not in chunk  # not asked for
    roles, finishes = chunks[:2], chunks[-2:]
    assert [(c["choices"][0]["index"], c["choices"][0]["delta"]) for c in roles] == \
        [(0, {"role": "assistant", "content": ""}), (1, {"role": "assistant", "content": ""})]
    assert [(c["choices"][0]["index"], c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in finishes] \
        == [(0, {}, "stop"), (1, {}, "stop")]
    middle = chunks[2:-2]
    assert middle == content_chunks(events)
    assert [c["choices"][0]["index"] for c in middle] == [0, 1] * (len(middle) // 2)
    assert all(len(c["choices"][0]["delta"]["content"]) <= 4 for c in middle)
    for index in (0, 1):
        assert content_of(events, index) == whole["choices"][index]["message"]["content"] == "Echo: stream me please"


def test_a_cut_answer_streams_the_same_cut(client, ns):
    body = chat_body(LONG_QUESTION, max_completion_tokens=5)
    whole = chat(client, ns, body).json()
    events = streamed(client, ns, body)
    assert content_of(events, 0) == whole["choices"][0]["message"]["content"] == ("Echo: " + LONG_QUESTION)[:20]
    assert events[-2]["choices"][0]["finish_reason"] == "length"


def test_chunk_chars_sets_the_size_of_the_pieces(client, ns):
    set_behaviour(client, ns, chunk_chars=1)
    events = streamed(client, ns, chat_body("abc"))
    assert [c["choices"][0]["delta"]["content"] for c in content_chunks(events)] == list("Echo: abc")


def test_the_usage_chunk_comes_last_and_only_when_asked(client, ns):
    body = chat_body("count me", n=2)
    whole_usage = chat(client, ns, body).json()["usage"]
    asked = streamed(client, ns, {**body, "stream_options": {"include_usage": True}})
    assert asked[-1] == "[DONE]"
    assert asked[-2]["choices"] == [] and asked[-2]["usage"] == whole_usage
    assert [event for event in asked[:-2] if "usage" in event] == []
    for options in ({}, {"stream_options": {"include_usage": False}}):
        events = streamed(client, ns, {**body, **options})
        assert [event for event in events[:-1] if "usage" in event or not event["choices"]] == []


@pytest.mark.parametrize("stream_usage, include_usage, has_usage", [
    ("always", False, True), ("never", True, False), ("request", True, True), ("request", False, False),
])
def test_stream_usage_overrides_what_the_request_asks(client, ns, stream_usage, include_usage, has_usage):
    set_behaviour(client, ns, stream_usage=stream_usage, usage={"prompt_tokens": 7, "completion_tokens": 9})
    events = streamed(client, ns, chat_body(stream_options={"include_usage": include_usage}))
    usage_chunks = [event["usage"] for event in events[:-1] if "usage" in event]
    assert usage_chunks == ([{"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16}] if has_usage else [])


def test_a_streamed_call_is_recorded_with_what_was_sent(client, ns):
    events = streamed(client, ns, chat_body("record this", n=3))
    # "Echo: record this" is 17 characters: 5 chunks and 5 tokens a choice
    assert len(content_chunks(events)) == 3 * 5
    assert ended_record(client, ns) == record_of(prompt=3, contents=["Echo: record this"] * 3, chunks=15, tokens=15,
                                                 finished=True)


@pytest.mark.parametrize("told", [None, {"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16}])
def test_a_streamed_call_is_recorded_with_the_usage_and_answer_it_would_give_whole(client, ns, told):
    """Without a usage chunk, the record still says the usage and the answer the same request gets whole; the
    stream entry counts the prompt by the stub's own rule, whatever usage it was told to report."""
    if told:
        set_behaviour(client, ns, usage=told)
    body = chat_body("tell me twice", n=2)
    whole = chat(client, ns, body).json()
    streamed(client, ns, body)
    ended_record(client, ns)
    record = calls(client, ns)[-1]
    assert record["usage"] == whole["usage"] == (told or record["usage"])
    assert record["answer"] == {"contents": [c["message"]["content"] for c in whole["choices"]], "n": 2}
    assert record["stream"]["prompt_tokens"] == 4  # "tell me twice": 13 characters
    assert record["stream"]["contents_sent"] == record["answer"]["contents"]


def test_chunks_are_spaced_by_the_delay_and_the_record_shows_a_running_stream(client, ns):
    set_behaviour(client, ns, chunk_delay_ms=250)
    started = time.monotonic()
    with client.stream("POST", stream_url(ns), json=chat_body("slow", stream=True)) as response:
        events = sse_events(response)
        seen = [next(events), next(events)]  # the role chunk, then the first piece of content
        running = stream_record(client, ns)
        seen += list(events)
    elapsed = time.monotonic() - started
    assert content_chunks(seen)[0]["choices"][0]["delta"]["content"] == "Echo"
    assert running["finished"] is False and running["ended"] is False
    assert 1 <= running["content_chunks_sent"] < len(content_chunks(seen))
    # Six events (role, "Echo", ": sl", "ow", finish, [DONE]) 250 ms apart take 1.25 s; loosely, at least 1 s.
    assert len(seen) == 6 and elapsed >= 1.0, (seen, elapsed)


def test_a_client_going_away_mid_stream_is_recorded(client, ns):
    set_behaviour(client, ns, chunk_delay_ms=50)
    with client.stream("POST", stream_url(ns), json=chat_body(LONG_QUESTION, max_tokens=100, stream=True)) as resp:
        events = sse_events(resp)
        received = [next(events) for _ in range(4)]  # the role chunk and three pieces
    record = ended_record(client, ns)
    assert record["client_went_away"] is True and record["finished"] is False
    assert 3 <= record["content_chunks_sent"] < 52
    assert record["completion_tokens_sent"] == record["content_chunks_sent"]  # 4 ASCII characters a chunk
    assert record["contents_sent"] == [("Echo: " + LONG_QUESTION)[:4 * record["content_chunks_sent"]]]
    assert len(content_chunks(received)) == 3


def test_fault_error_ends_the_stream_with_an_openai_error(client, ns):
    set_behaviour(client, ns, stream_fault={"after_chunks": 2, "kind": "error"})
    events = streamed(client, ns, chat_body(LONG_QUESTION))
    assert len(content_chunks(events)) == 2
    assert events[-1] == {"error": {"message": events[-1]["error"]["message"], "type": "server_error",
                                    "code": "stream_failed"}}
    assert "[DONE]" not in events
    assert ended_record(client, ns) == record_of(prompt=50, contents=["Echo: zz"], chunks=2, tokens=2)


@pytest.mark.parametrize("after_chunks, pieces", [(0, []), (1000, ["Echo", ": hi"])])
def test_a_fault_fires_after_the_last_piece_at_the_latest(client, ns, after_chunks, pieces):
    set_behaviour(client, ns, stream_fault={"after_chunks": after_chunks, "kind": "error"})
    events = streamed(client, ns, chat_body("hi"))
    assert [c["choices"][0]["delta"]["content"] for c in content_chunks(events)] == pieces
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "error" in events[-1] and not any(c["choices"][0]["finish_reason"] for c in events[:-1])


def test_fault_drop_cuts_the_connection_mid_body(stub, client, ns):
    set_behaviour(client, ns, stream_fault={"after_chunks": 3, "kind": "drop"})
    received = []
    with pytest.raises(httpx.RemoteProtocolError):
        with client.stream("POST", stream_url(ns), json=chat_body(LONG_QUESTION, stream=True)) as response:
            received += sse_events(response)
    assert len(content_chunks(received)) == 3
    assert ended_record(client, ns) == record_of(prompt=50, contents=["Echo: zzzzzz"], chunks=3, tokens=3)
    assert "Exception in ASGI application" not in stub.stderr()


def test_fault_hang_waits_until_the_client_goes_away(client, ns):
    set_behaviour(client, ns, stream_fault={"after_chunks": 2, "kind": "hang"})
    received = []
    with pytest.raises(httpx.ReadTimeout):
        body = chat_body(LONG_QUESTION, stream=True)
        with client.stream("POST", stream_url(ns), json=body, timeout=httpx.Timeout(10, read=0.5)) as response:
            received += sse_events(response)
    assert len(content_chunks(received)) == 2
    record = wait_for_record(client, ns, "the hung stream has seen its client go",
                             lambda stream: stream["client_went_away"])
    assert record == record_of(prompt=50, contents=["Echo: zz"], chunks=2, tokens=2, client_went_away=True)


def test_fault_hang_is_released_by_a_behaviour_change(stub, client, ns):
    set_behaviour(client, ns, stream_fault={"after_chunks": 1, "kind": "hang"})

    def hung_stream() -> list:
        received = []
        with httpx.Client(base_url=stub.url, timeout=30) as other:
            with pytest.raises(httpx.RemoteProtocolError):
                with other.stream("POST", stream_url(ns), json=chat_body(stream=True)) as response:
                    received += sse_events(response)
        return received

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(hung_stream)
        wait_for_record(client, ns, "one piece was sent", lambda stream: stream["content_chunks_sent"] == 1)
        set_behaviour(client, ns)
        assert len(content_chunks(future.result(timeout=10))) == 1
    assert ended_record(client, ns) == record_of(prompt=3, contents=["Echo"], chunks=1, tokens=1)


def test_a_streamed_request_has_the_id_of_the_same_request_whole(client, ns):
    body = chat_body("same id", temperature=0.5)
    whole = chat(client, ns, body).json()
    events = streamed(client, ns, {**body, "stream_options": {"include_usage": True}})
    assert {event["id"] for event in events[:-1]} == {whole["id"]}


def test_fault_pause_writes_the_rest_once_released(stub, client, ns):
    set_behaviour(client, ns, stream_fault={"after_chunks": 2, "kind": "pause"})
    body = chat_body("stream me please", stream=True)

    def paused_stream() -> list:
        with httpx.Client(base_url=stub.url, timeout=30) as other:
            return streamed(other, ns, body)

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(paused_stream)
        record = wait_for_record(client, ns, "two pieces were sent, then the stream paused",
                                 lambda stream: stream["paused"])
        assert (record["content_chunks_sent"], record["finished"]) == (2, False)
        assert not future.done()
        assert client.post(f"/_stub/{ns}/release").json() == {"namespace": ns, "released": 1}
        events = future.result(timeout=10)
    assert events[-1] == "[DONE]"
    assert content_of(events, 0) == "Echo: stream me please"
    assert ended_record(client, ns) == record_of(prompt=4, contents=["Echo: stream me please"], chunks=6, tokens=6,
                                                 finished=True)


def test_fault_pause_ends_when_the_client_goes_away(client, ns):
    set_behaviour(client, ns, stream_fault={"after_chunks": 1, "kind": "pause"})
    with pytest.raises(httpx.ReadTimeout):
        with client.stream("POST", stream_url(ns), json=chat_body(stream=True),
                           timeout=httpx.Timeout(10, read=0.3)) as response:
            list(sse_events(response))
    record = wait_for_record(client, ns, "the paused stream has seen its client go",
                             lambda stream: stream["client_went_away"])
    assert record == record_of(prompt=3, contents=["Echo"], chunks=1, tokens=1, client_went_away=True)
    assert client.post(f"/_stub/{ns}/release").json()["released"] == 0


@pytest.mark.parametrize("payload", [
    {"chunk_chars": 0},
    {"chunk_chars": "4"},
    {"chunk_delay_ms": -1},
    {"chunk_delay_ms": 0.5},
    {"stream_usage": "sometimes"},
    {"stream_fault": {"after_chunks": -1, "kind": "error"}},
    {"stream_fault": {"after_chunks": 1, "kind": "explode"}},
    {"stream_fault": {"after_chunks": 1}},
    {"stream_fault": {"after_chunks": 1, "kind": "drop", "extra": True}},
    {"stream_fault": "drop"},
])
def test_invalid_stream_behaviour_is_422(client, ns, payload):
    response = client.put(f"/_stub/{ns}/behaviour", json=payload)
    assert response.status_code == 422, response.text
    assert next(iter(payload)) in response.json()["message"]


def test_stored_stream_behaviour(client, ns):
    stored = set_behaviour(client, ns, chunk_chars=2, chunk_delay_ms=10, stream_usage="never",
                           stream_fault={"kind": "drop", "after_chunks": 5})
    assert {key: stored[key] for key in ("chunk_chars", "chunk_delay_ms", "stream_usage", "stream_fault")} == {
        "chunk_chars": 2, "chunk_delay_ms": 10, "stream_usage": "never",
        "stream_fault": {"after_chunks": 5, "kind": "drop"}}


def test_stops_promptly_with_a_slow_stream(tmp_path):
    own = start_stub(tmp_path)
    try:
        with httpx.Client(base_url=own.url, timeout=30) as c:
            set_behaviour(c, "slow", chunk_delay_ms=60_000)
            with c.stream("POST", stream_url("slow"), json=chat_body(stream=True)) as response:
                events = sse_events(response)
                next(events)
                started = time.monotonic()
                own.proc.send_signal(signal.SIGTERM)
                with pytest.raises(httpx.RemoteProtocolError):
                    list(events)
            assert own.proc.wait(timeout=10) in (0, -signal.SIGTERM)
            assert time.monotonic() - started < 5
    finally:
        stop(own.proc)
    assert "Traceback" not in own.stderr()
