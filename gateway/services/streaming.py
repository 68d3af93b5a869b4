"""Streamed chat completions: reading a backend's server-sent events and relaying them to the client as they come.

An `EventSource` reads one backend's answer event by event; routing opens it and reads the first event before the
client sees anything, so a backend that fails before that is passed over for the next one. `StreamRelay` is the
ASGI response that passes every event on as soon as it is read (never the whole answer at once), keeps back the
usage chunk the gateway asked for on its own, and counts what passed (`Tally`): the usage the backend reported and
the bytes of the text it generated. A backend failing after the first event ends the client's stream with an error
event in OpenAI's shape; a client going away closes the backend's connection, which stops its generation. Either
way the relay then calls `finish(tally)` once, shielded from cancellation, to charge and audit the request; a stream
its client reads to the end ends only after that, so a retry finds the first answer recorded.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import aiohttp
from starlette.responses import Response

from gateway.services.token_bounds import answer_text_len

MAX_EVENT_BYTES = 1024 * 1024  # one event longer than this (no blank line yet) is a broken stream
MAX_STREAM_BYTES = 16 * 1024 * 1024
DONE = b"data: [DONE]"
READ_FAILURES = (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError)


class StreamBroken(Exception):
    """The backend's stream cannot go on: an error event, an event that is not a JSON object, a cut connection,
    an end without [DONE], or an answer too large."""


def is_event_stream(content_type: str | None) -> bool:
    return bool(content_type) and content_type.split(";", 1)[0].strip().lower() == "text/event-stream"


def event_data(event: bytes) -> bytes | None:
    """The data of one event (its `data:` lines joined), or None for an event without data (a comment)."""
    lines = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def error_of(chunk: dict) -> dict | None:
    error = chunk.get("error")
    return error if isinstance(error, dict) else ({"message": str(error)} if error is not None else None)


def error_event(message: str, code: str = "backend_stream_failed") -> bytes:
    body = {"error": {"message": message, "type": "server_error", "code": code, "param": None}}
    return b"data: " + json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class EventSource:
    """One backend's event stream, read event by event (`event` bytes, without the blank line that ends them)."""

    def __init__(self, backend: str, response: aiohttp.ClientResponse):
        self.backend = backend
        self._response = response
        self._buffer = b""
        self._read = 0
        self.first: list[bytes] = []

    async def _next_events(self) -> list[bytes]:
        """The events completed by the next read; [] at the end of the stream."""
        while True:
            data = await self._response.content.readany()
            if not data:
                if self._buffer.strip():
                    raise StreamBroken("the stream ended in the middle of an event")
                return []
            self._read += len(data)
            if self._read > MAX_STREAM_BYTES:
                raise StreamBroken(f"the stream went over {MAX_STREAM_BYTES} bytes")
            buffer = (self._buffer + data).replace(b"\r\n", b"\n")
            *events, self._buffer = buffer.split(b"\n\n")
            if len(self._buffer) > MAX_EVENT_BYTES:
                raise StreamBroken(f"an event went over {MAX_EVENT_BYTES} bytes")
            events = [e for e in events if e.strip()]
            if events:
                return events

    async def open(self) -> None:
        """Read up to the first event; StreamBroken when there is none or it is an error."""
        self.first = await self._next_events()
        if not self.first:
            raise StreamBroken("the stream ended before its first event")
        data = event_data(self.first[0])
        if data is not None and data.startswith(b"{"):
            try:
                error = error_of(json.loads(data))
            except ValueError:
                error = None
            if error is not None:
                raise StreamBroken(f"its first event was an error: {str(error.get('message'))[:200]}")

    async def events(self):
        for event in self.first:
            yield event
        while events := await self._next_events():
            for event in events:
                yield event

    def close(self) -> None:
        self._response.close()


@dataclass
class Tally:
    """What passed through one stream."""
    usage: dict | None = None  # the backend's reported usage, when it sent one
    generated_bytes: int = 0  # UTF-8 bytes of the text the backend generated (content, refusals, tool calls)
    content_chunks: int = 0  # chunks that carried generated text
    outcome: str = "completed"  # completed, backend_failed, client_disconnected
    detail: str | None = None  # why the backend failed
    first_token_at: float | None = None  # perf_counter() when the first chunk with text was passed on
    events: list[str] | None = None  # every event the client was sent, when `record` (Idempotency-Key replays)
    done: bool = False  # [DONE] was passed on


async def _client_gone(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class StreamRelay(Response):
    """The ASGI response of a streamed completion (see the module's docstring)."""

    def __init__(self, source: EventSource, forward_usage: bool, finish: Callable[[Tally], Awaitable[None]], *,
                 backend_header: dict, record: bool):
        self.background = None
        self.source = source
        self.forward_usage = forward_usage  # the client asked for the usage chunk (stream_options.include_usage)
        self.finish = finish
        self.extra_headers = backend_header
        self.tally = Tally(events=[] if record else None)
        self.client_gone = False

    async def __call__(self, scope, receive, send) -> None:
        headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.extra_headers.items()]
        watcher = asyncio.ensure_future(_client_gone(receive))
        watcher.add_done_callback(self._on_client_gone)
        finished = False
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await self._relay(send)
            self.source.close()
            # Charged (and its Idempotency-Key answer recorded) before the body ends: a client that retries as soon
            # as its stream is over finds the first answer to replay, never a request still in progress.
            finished = True
            await asyncio.shield(self.finish(self.tally))
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.remove_done_callback(self._on_client_gone)
            watcher.cancel()
            self.source.close()
            if not finished:
                await asyncio.shield(self.finish(self.tally))

    def _on_client_gone(self, watcher: asyncio.Future) -> None:
        if not watcher.cancelled() and watcher.exception() is None:
            self.client_gone = True
            self.source.close()  # stops the backend's generation: it sees its client go away

    async def _pass_on(self, send, event: bytes) -> None:
        await send({"type": "http.response.body", "body": event + b"\n\n", "more_body": True})
        if self.tally.events is not None:
            self.tally.events.append(event.decode("utf-8", "replace"))

    async def _relay(self, send) -> None:
        tally = self.tally
        try:
            async for event in self.source.events():
                if self.client_gone:
                    break
                data = event_data(event)
                if data is None:  # a comment (a keep-alive): passed on as it is
                    await self._pass_on(send, event)
                    continue
                if data == b"[DONE]":
                    await self._pass_on(send, DONE)
                    tally.done = True
                    return
                if not self._count(data):
                    continue
                await self._pass_on(send, event)
            if not self.client_gone:
                raise StreamBroken("the stream ended without [DONE]")
        except (StreamBroken, *READ_FAILURES) as exc:
            if not self.client_gone:
                tally.outcome, tally.detail = "backend_failed", str(exc) or type(exc).__name__
                await self._pass_on(send, error_event(f"Backend '{self.source.backend}' failed mid-stream "
                                                      f"({tally.detail}); the answer is incomplete."))
        if self.client_gone:
            tally.outcome = "client_disconnected"

    def _count(self, data: bytes) -> bool:
        """Count one chunk; False when it is not to be passed on (the usage chunk nobody asked for)."""
        try:
            chunk = json.loads(data)
        except (ValueError, RecursionError):
            raise StreamBroken("it sent an event that is not JSON")
        if not isinstance(chunk, dict):
            raise StreamBroken("it sent an event that is not a JSON object")
        error = error_of(chunk)
        if error is not None:
            raise StreamBroken(f"it sent an error: {str(error.get('message'))[:300]}")
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.tally.usage = usage
        generated = answer_text_len(chunk, "delta")
        if generated:
            self.tally.generated_bytes += generated
            self.tally.content_chunks += 1
            if self.tally.first_token_at is None:
                self.tally.first_token_at = time.perf_counter()
        return self.forward_usage or usage is None or bool(chunk.get("choices"))
