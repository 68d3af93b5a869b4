"""A streamed answer: server-sent chat.completion.chunk events, the injected mid-stream faults, and the live
``stream`` entry of the call's record."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from model_stub.completions import Answer, chunk_body, chunk_choice
from model_stub.connection import (DISCONNECT_WAIT_SECONDS, close_connection, hang_until_released, transport_of,
                                   wait_for_disconnect)
from model_stub.state import Namespace, StubState
from model_stub.tokens import tokens

STREAM_FAILED = {"error": {"message": "model stub: injected failure mid-stream", "type": "server_error",
                           "code": "stream_failed"}}
HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]


class ClientWentAway(Exception):
    pass


class ServerStopping(Exception):
    pass


def event(data: Any) -> bytes:
    return f"data: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n".encode("utf-8")


class EventStream(Response):
    """Writes ``answer`` as chunks; ``progress`` (the call record's ``stream`` entry) follows what was written."""

    def __init__(self, answer: Answer, behaviour: dict, include_usage: bool, progress: dict,
                 state: StubState, ns: Namespace) -> None:
        self.background = None
        self.answer = answer
        self.chunk_chars = behaviour["chunk_chars"]
        self.delay = behaviour["chunk_delay_ms"] / 1000
        self.fault = behaviour["stream_fault"]
        usage_wanted = {"request": include_usage, "always": True, "never": False}[behaviour["stream_usage"]]
        self.usage = answer.usage if usage_wanted else None
        self.state = state
        self.ns = ns
        self.progress = progress
        self.sent_text = [""] * answer.n
        progress.update(content_chunks_sent=0, completion_tokens_sent=0, contents_sent=self.sent_text,
                        finished=False, client_went_away=False, ended=False, paused=False)
        self.events_sent = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.transport = transport_of(scope)
        self.disconnected = asyncio.ensure_future(wait_for_disconnect(receive))
        self.stopping = asyncio.ensure_future(self.state.stopping.wait())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            await self._write_answer(send)
        except ClientWentAway:
            self.progress["client_went_away"] = True
            await asyncio.wait({self.disconnected}, timeout=DISCONNECT_WAIT_SECONDS)
        except ServerStopping:
            await close_connection(self.transport, self.disconnected)
        finally:
            self.progress["ended"] = True
            self.disconnected.cancel()
            self.stopping.cancel()

    async def _write_answer(self, send: Send) -> None:
        answer = self.answer
        for index in range(answer.n):
            await self._write(send, chunk_body(answer, [chunk_choice(index, {"role": "assistant", "content": ""})]))
        pieces = [answer.content[at:at + self.chunk_chars] for at in range(0, len(answer.content), self.chunk_chars)]
        content_chunks = [(index, piece) for piece in pieces for index in range(answer.n)]
        after = self.fault["after_chunks"] if self.fault else len(content_chunks)
        # A fault fires after its number of content chunks, or after the last when there are fewer.
        content_chunks, rest = content_chunks[:after], content_chunks[after:]
        await self._write_content(send, content_chunks)
        if self.fault and self.fault["kind"] != "pause":
            await self._fail(send, self.fault["kind"])
            return
        if self.fault:
            await self._wait_for_release()
            await self._write_content(send, rest)
        for index in range(answer.n):
            await self._write(send, chunk_body(answer, [chunk_choice(index, {}, answer.finish_reason)]))
        if self.usage is not None:
            await self._write(send, chunk_body(answer, [], self.usage))
        await self._write(send, b"data: [DONE]\n\n", last=True)
        self.progress["finished"] = True

    async def _write_content(self, send: Send, content_chunks: list[tuple[int, str]]) -> None:
        for index, piece in content_chunks:
            await self._write(send, chunk_body(self.answer, [chunk_choice(index, {"content": piece})]))
            self.sent_text[index] += piece
            self.progress["content_chunks_sent"] += 1
            self.progress["completion_tokens_sent"] = sum(tokens(text) for text in self.sent_text)

    async def _wait_for_release(self) -> None:
        """Write nothing until released; then the stream goes on (unless the client left or the server stops)."""
        self.progress["paused"] = True
        left = await hang_until_released(self.state, self.ns, self.disconnected)
        self.progress["paused"] = False
        if left:
            raise ClientWentAway()
        if self.state.stopping.is_set():
            raise ServerStopping()

    async def _fail(self, send: Send, kind: str) -> None:
        if kind == "error":
            await self._write(send, STREAM_FAILED, last=True)
        elif kind == "hang" and await hang_until_released(self.state, self.ns, self.disconnected):
            raise ClientWentAway()
        else:  # drop, or a hang released without the client leaving
            await close_connection(self.transport, self.disconnected)

    async def _write(self, send: Send, data: dict | bytes, last: bool = False) -> None:
        if self.events_sent:
            await self._pause()
        if self.disconnected.done() or self.transport.is_closing():
            raise ClientWentAway()
        body = data if isinstance(data, bytes) else event(data)
        await send({"type": "http.response.body", "body": body, "more_body": not last})
        self.events_sent += 1

    async def _pause(self) -> None:
        """Wait chunk_delay_ms (at least yield), unless the client leaves or the server stops first."""
        if not self.delay:
            await asyncio.sleep(0)
            return
        await asyncio.wait({self.disconnected, self.stopping}, timeout=self.delay,
                           return_when=asyncio.FIRST_COMPLETED)
        if self.stopping.done() and not self.disconnected.done():
            raise ServerStopping()
