"""Streamed answers (server-sent events) as the suite receives them: read as they arrive, each event with the
time it came, the client free to go away after a number of pieces. The exchange is evidence like any other, with
a transcript of its events (masked) in place of a body.

A `StreamedExchange` is an `Exchange`: a refusal (402, 400...) has its JSON body in `text` as usual; an answer that
is not an event stream (a replay of the assembled answer) is read as one piece."""
from __future__ import annotations

import codecs
import json
import time
from dataclasses import dataclass, field
from typing import Callable

import requests

from support.client.api import ApiClient, Exchange, GatewayUnreachable
from support.harness.redaction import mask_text

DONE = "[DONE]"


@dataclass
class StreamEvent:
    at_ms: float  # since the request was sent
    data: str  # the event's data lines joined ("[DONE]", or a JSON document)

    def chunk(self) -> dict | None:
        """The event's JSON object, or None ([DONE], a comment, or data that is not JSON)."""
        try:
            parsed = json.loads(self.data)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None


@dataclass
class StreamedExchange(Exchange):
    events: list[StreamEvent] = field(default_factory=list)
    went_away_after: int | None = None  # content pieces received when the client closed the connection

    @property
    def is_event_stream(self) -> bool:
        kind = (self.response_headers or {}).get("Content-Type", "")
        return kind.split(";")[0].strip().lower() == "text/event-stream"

    def chunks(self) -> list[dict]:
        return [c for c in (e.chunk() for e in self.events) if c is not None and "error" not in c]

    def content_events(self) -> list[StreamEvent]:
        """The events that carried text of the answer."""
        return [e for e in self.events if any((choice.get("delta") or {}).get("content")
                                              for choice in ((e.chunk() or {}).get("choices") or []))]

    def error_event(self) -> dict | None:
        """The error event the stream ended with, if it did."""
        last = self.events[-1].chunk() if self.events else None
        return last.get("error") if last and isinstance(last.get("error"), dict) else None

    @property
    def ended_with_done(self) -> bool:
        return bool(self.events) and self.events[-1].data == DONE

    def usage(self) -> dict | None:
        """The usage chunk's usage (for an answer in one piece, its usage)."""
        if not self.is_event_stream:
            return self.json().get("usage") if self.status == 200 else None
        found = [c["usage"] for c in self.chunks() if isinstance(c.get("usage"), dict)]
        return found[-1] if found else None

    def texts(self) -> dict[int, str]:
        """Each choice's text, by index: the content deltas put together (an answer in one piece: its messages)."""
        if not self.is_event_stream:
            return {c["index"]: c["message"].get("content") or "" for c in self.json().get("choices", [])}
        texts: dict[int, str] = {}
        for chunk in self.chunks():
            for choice in chunk.get("choices") or []:
                texts[choice["index"]] = texts.get(choice["index"], "") + ((choice.get("delta") or {}).get("content")
                                                                           or "")
        return texts

    def finish_reasons(self) -> dict[int, str | None]:
        if not self.is_event_stream:
            return {c["index"]: c.get("finish_reason") for c in self.json().get("choices", [])}
        return {choice["index"]: choice["finish_reason"] for chunk in self.chunks()
                for choice in chunk.get("choices") or [] if choice.get("finish_reason")}

    def transcript(self) -> list[str]:
        """One line per event, when it arrived and what it said: a choice's role, text or finish; the usage; an
        error; [DONE]."""
        return [f"+{e.at_ms:8.1f} ms  {mask_text(_described(e))}" for e in self.events]

    def title(self) -> str:
        if not self.is_event_stream:
            return super().title()
        ending = (f", client left after {self.went_away_after} pieces" if self.went_away_after is not None
                  else ", [DONE]" if self.ended_with_done else ", error" if self.error_event() else ", cut")
        return (f"{self.method} {mask_text(self.path)} → {self.status} stream of {len(self.events)} events"
                f"{ending} ({self.elapsed_ms:.0f} ms) [{self.request_id}]")

    def evidence(self) -> dict:
        shown = super().evidence()
        if self.is_event_stream and shown["response"] is not None:
            shown["response"]["body"] = "(an event stream: see transcript, and its first event in full)"
            shown["transcript"] = self.transcript()
            shown["first_event"] = mask_text(self.events[0].data) if self.events else None
            shown["texts"] = {str(index): text for index, text in self.texts().items()}
        return shown

    def summary(self) -> str:
        if not self.is_event_stream:
            return super().summary()
        lines = self.transcript()
        shown = lines if len(lines) <= 12 else lines[:6] + [f"… {len(lines) - 10} more events …"] + lines[-4:]
        return (f"{self.method} {mask_text(self.path)} → {self.status}, a stream of {len(self.events)} events "
                f"[request id {self.request_id}]\n" + "\n".join(shown))


def _described(event: StreamEvent) -> str:
    chunk = event.chunk()
    if chunk is None:
        return event.data
    if isinstance(chunk.get("error"), dict):
        return f"error {json.dumps(chunk['error'], ensure_ascii=False)}"
    said = []
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        said += [f"[{choice.get('index')}] role {delta['role']}"] if delta.get("role") else []
        said += [f"[{choice.get('index')}] {json.dumps(delta['content'], ensure_ascii=False)}"] if delta.get(
            "content") else []
        said += [f"[{choice.get('index')}] finish {choice['finish_reason']}"] if choice.get("finish_reason") else []
    if isinstance(chunk.get("usage"), dict):
        said.append(f"usage {json.dumps(chunk['usage'])}")
    return "; ".join(said) or json.dumps(chunk, ensure_ascii=False)


def send_streamed(api: ApiClient, path: str, *, token: str, json_body: dict, headers: dict | None = None,
                  leave_after: int | None = None,
                  on_event: Callable[[StreamedExchange], None] | None = None) -> StreamedExchange:
    """POST a request whose answer streams; read its events as they come (closing the connection once
    `leave_after` pieces of text have arrived, when given; calling `on_event(exchange)` as each read adds events),
    record it as evidence and return it."""
    prepared = api.prepare("POST", path, token=token, json_body=json_body, headers=headers)
    exchange = StreamedExchange(**prepared.__dict__)
    started = time.perf_counter()
    try:
        with api.session.post(exchange.url, json=json_body, headers=exchange.request_headers, stream=True,
                              timeout=api.timeout) as response:
            api.answered(exchange, response)
            if not exchange.is_event_stream:
                exchange.text = response.text
            else:
                _read_events(exchange, response, started, leave_after, on_event)
    except requests.RequestException as exc:
        exchange.error = f"{type(exc).__name__}: {exc}"
        raise GatewayUnreachable(f"POST {mask_text(path)} (request id {exchange.request_id}) got no answer or a "
                                 f"broken stream from the gateway at {api.base_url}: {exchange.error}") from None
    finally:
        exchange.elapsed_ms = (time.perf_counter() - started) * 1000
        api.record(exchange)
    return exchange


class EventReader:
    """Server-sent events out of the bytes of a stream as they arrive, each event stamped with its arrival."""

    def __init__(self, exchange: StreamedExchange, started: float):
        self.exchange, self.started = exchange, started
        self.buffer, self.raw = "", []
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")  # a character may span two reads

    def feed(self, piece: bytes) -> None:
        arrived = (time.perf_counter() - self.started) * 1000
        self.raw.append(piece)
        self.buffer += self.decoder.decode(piece).replace("\r\n", "\n")
        *complete, self.buffer = self.buffer.split("\n\n")
        for block in complete:
            lines = [line[5:].removeprefix(" ") for line in block.split("\n") if line.startswith("data:")]
            if lines:
                self.exchange.events.append(StreamEvent(arrived, "\n".join(lines)))

    def close(self) -> None:
        self.exchange.text = b"".join(self.raw).decode("utf-8", "replace")


def _read_events(exchange: StreamedExchange, response: requests.Response, started: float,
                 leave_after: int | None, on_event: Callable[[StreamedExchange], None] | None) -> None:
    reader = EventReader(exchange, started)
    try:
        for piece in response.iter_content(chunk_size=None, decode_unicode=False):
            reader.feed(piece)
            if on_event is not None:
                on_event(exchange)
            if leave_after is not None and len(exchange.content_events()) >= leave_after:
                exchange.went_away_after = len(exchange.content_events())
                response.close()  # the client goes away: the connection is closed mid-stream
                return
    finally:
        reader.close()
