"""Streamed answers and the OpenAI SDK as the suite records them (support.client.event_streams, openai_sdk): events
read as they arrive whatever the reads cut, a readable masked transcript, and every attempt the SDK makes (a
timed-out one and a retry included) recorded under the call's request id with the API key masked."""
from __future__ import annotations

import json

import httpx
import openai
import pytest

from support.client import evidence
from support.client.api import ApiClient
from support.client.event_streams import EventReader, StreamedExchange, _read_events
from support.client.openai_sdk import SdkApplication

API_KEY = "tg_" + "k" * 30
CHUNK = {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "héllo"},
                                                                      "finish_reason": None}]}
FINISH = {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
USAGE = {"id": "c1", "object": "chat.completion.chunk", "choices": [],
         "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}}
STREAM = "".join(f"data: {json.dumps(c, ensure_ascii=False)}\n\n" for c in (CHUNK, FINISH, USAGE)) + "data: [DONE]\n\n"
ANSWER = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5}}


@pytest.fixture
def recorded(monkeypatch):
    attached = []
    monkeypatch.setattr(evidence, "attach_exchange", attached.append)
    return attached


def _api() -> ApiClient:
    return ApiClient("http://gateway.test", request_id_prefix="t", trace_id="0" * 32, timeout=5)


def _streamed() -> StreamedExchange:
    return StreamedExchange("POST", "http://gateway.test/v1/chat/completions", "/v1/chat/completions", {}, {},
                            "t.001", status=200, response_headers={"Content-Type": "text/event-stream"})


def test_events_are_read_whatever_the_reads_cut():
    exchange = _streamed()
    reader = EventReader(exchange, started=0.0)
    raw = STREAM.encode("utf-8")
    cut = raw.index("é".encode()) + 1  # in the middle of a two-byte character, and of an event
    for piece in (raw[:cut], raw[cut:cut + 7], raw[cut + 7:]):
        reader.feed(piece)
    reader.close()
    assert [e.data for e in exchange.events][-1] == "[DONE]"
    assert exchange.texts() == {0: "héllo"}
    assert exchange.finish_reasons() == {0: "stop"}
    assert exchange.usage() == USAGE["usage"]
    assert exchange.ended_with_done and exchange.error_event() is None
    assert len(exchange.content_events()) == 1


def test_the_reader_is_told_of_the_events_as_each_read_brings_them():
    class Arrives:
        closed = False

        def iter_content(self, chunk_size=None, decode_unicode=False):
            raw = STREAM.encode("utf-8")
            yield raw[:10]  # no whole event yet
            yield raw[10:]

        def close(self):
            self.closed = True

    exchange, seen = _streamed(), []
    _read_events(exchange, Arrives(), 0.0, None, lambda e: seen.append(len(e.events)))
    assert seen == [0, 4]
    leaving = Arrives()
    _read_events(_streamed(), leaving, 0.0, 1, seen.append)
    assert leaving.closed  # the client went away after its first piece, once told


def test_the_transcript_is_masked_and_the_body_points_to_it():
    exchange = _streamed()
    reader = EventReader(exchange, started=0.0)
    reader.feed(f'data: {{"error": {{"message": "bad key {API_KEY}", "type": "server_error", "code": "x"}}}}\n\n'
                .encode())
    reader.close()
    shown = json.dumps(exchange.evidence(), ensure_ascii=False)
    assert API_KEY not in shown and "«masked:api-key#" in shown
    assert exchange.evidence()["response"]["body"] == "(an event stream: see transcript, and its first event in full)"
    assert exchange.error_event()["code"] == "x" and "error" in exchange.title()


def test_every_attempt_of_the_sdk_is_recorded_under_the_call_s_request_id(recorded):
    calls = []

    def backend(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ReadTimeout("timed out", request=request)
        if len(calls) == 2:
            return httpx.Response(429, headers={"Retry-After": "0", "Content-Type": "application/json"},
                                  json={"error": {"message": "slow down", "type": "rate_limit_error", "code": "r"}})
        return httpx.Response(200, json=ANSWER)

    app = SdkApplication(_api(), API_KEY, transport=httpx.MockTransport(backend))
    call = app.call(lambda client, headers: client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], extra_headers=headers), max_retries=3)
    assert call.error is None and call.result.choices[0].message.content == "hello"
    assert [a.exchange.status for a in call.attempts] == [None, 429, 200]
    assert call.attempts[0].exchange.error.startswith("ReadTimeout") and call.attempts[0].answered_at is None
    assert {a.exchange.request_id for a in call.attempts} == {"t.001"}
    assert [e.status for e in recorded] == [None, 429, 200]
    shown = json.dumps([e.evidence() for e in recorded])
    assert API_KEY not in shown
    assert recorded[-1].json() == ANSWER


def test_a_hook_runs_once_when_an_attempt_gets_no_answer_before_the_sdk_retries():
    events = []

    def backend(request: httpx.Request) -> httpx.Response:
        events.append("attempt")
        if events.count("attempt") < 3:
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(200, json=ANSWER)

    app = SdkApplication(_api(), API_KEY, transport=httpx.MockTransport(backend))
    app.when_an_attempt_gets_no_answer(lambda: events.append("hook"))
    call = app.call(lambda client, headers: client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], extra_headers=headers), max_retries=3)
    assert call.error is None
    assert events == ["attempt", "hook", "attempt", "attempt"]


class Arriving(httpx.SyncByteStream):
    """A body that arrives in pieces (not one already read, as `content=` would make it)."""

    def __iter__(self):
        raw = STREAM.encode()
        yield from (raw[at:at + 50] for at in range(0, len(raw), 50))


def test_a_streamed_answer_is_recorded_once_the_sdk_has_read_it(recorded):
    def backend(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, stream=Arriving())

    app = SdkApplication(_api(), API_KEY, transport=httpx.MockTransport(backend))

    def stream(client, headers):
        with client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True,
                                            extra_headers=headers) as chunks:
            return list(chunks)
    call = app.call(stream)
    assert [c.choices[0].delta.content for c in call.result if c.choices] == ["héllo", None]
    assert call.result[-1].usage.completion_tokens == 2
    assert len(recorded) == 1 and isinstance(recorded[0], StreamedExchange)
    assert recorded[0].texts() == {0: "héllo"} and recorded[0].ended_with_done


def test_an_sdk_error_is_kept_on_the_call():
    def backend(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": {"message": "The model 'm' does not exist", "type": "not_found_error",
                                                   "code": "model_not_found"}})

    app = SdkApplication(_api(), API_KEY, transport=httpx.MockTransport(backend))
    call = app.call(lambda client, headers: client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], extra_headers=headers))
    assert isinstance(call.error, openai.NotFoundError) and "does not exist" in str(call.error)
