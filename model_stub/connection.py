"""Ending a connection without an HTTP response, and the uvicorn protocol that makes it possible.

ASGI has no message for "close without a response", and an app that returns or raises before starting a
response makes uvicorn send a 500. The stub therefore runs uvicorn with a small subclass of its httptools protocol
(:class:`StubHttpProtocol`; httptools parses in C, h11 in Python at about twice the stub's CPU per request) that puts the connection's transport into ``scope["extensions"]``; the app closes that
transport and waits for uvicorn's ``http.disconnect``, after which uvicorn sends nothing. A stream is cut the
same way, so its chunked body is never finished.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from model_stub.state import Namespace, StubState

TRANSPORT_EXTENSION = "model_stub.transport"
HANG_MAX_SECONDS = 300.0
DISCONNECT_WAIT_SECONDS = 5.0


async def wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def transport_of(scope: Scope) -> Any:
    transport = scope.get("extensions", {}).get(TRANSPORT_EXTENSION)
    if transport is None:
        raise RuntimeError("closing a connection needs the model stub's uvicorn protocol (run python -m model_stub)")
    return transport


async def close_connection(transport: Any, disconnected: asyncio.Future) -> None:
    """Close the TCP connection as it stands and wait until uvicorn has seen it go."""
    transport.close()
    done, _ = await asyncio.wait({disconnected}, timeout=DISCONNECT_WAIT_SECONDS)
    if not done:  # pragma: no cover - uvicorn always reports it
        transport.abort()


async def hang_until_released(state: StubState, ns: Namespace, disconnected: asyncio.Future) -> bool:
    """Wait for the client to leave, a release of the namespace (its release call, a change of its behaviour, its
    reset), shutdown or HANG_MAX_SECONDS; True when the client left."""
    release = ns.release
    waits = {asyncio.ensure_future(release.wait()), asyncio.ensure_future(state.stopping.wait())}
    ns.waiting += 1
    try:
        await asyncio.wait(waits | {disconnected}, timeout=HANG_MAX_SECONDS, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not release.is_set():  # a release counted it already
            ns.waiting -= 1
        for task in waits:
            task.cancel()
    return disconnected.done()


class CloseConnection(Response):
    """Close the TCP connection without sending any HTTP response bytes."""

    def __init__(self) -> None:  # no body, no headers
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = transport_of(scope)
        await close_connection(transport, asyncio.ensure_future(wait_for_disconnect(receive)))


class Hang(Response):
    """Never answer: wait for the client to leave, a release, shutdown, or the bound; then close."""

    def __init__(self, state: StubState, ns: Namespace) -> None:
        self.background = None
        self.state = state
        self.ns = ns

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = transport_of(scope)
        disconnected = asyncio.ensure_future(wait_for_disconnect(receive))
        await hang_until_released(self.state, self.ns, disconnected)
        await close_connection(transport, disconnected)


class StubHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, handing the connection's transport to the app.

    The transport goes into ``scope["extensions"]["model_stub.transport"]`` so that the ``drop`` and ``hang``
    modes and the stream faults can close the connection without finishing a response. On server shutdown,
    hanging requests and running streams are released so that the process stops at once.
    """

    stopping_hook: Callable[[], None] = staticmethod(lambda: None)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        inner = self.app

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                extensions = dict(scope.get("extensions") or {})
                extensions[TRANSPORT_EXTENSION] = self.transport
                scope["extensions"] = extensions
            await inner(scope, receive, send)

        self.app = app

    def shutdown(self) -> None:
        type(self).stopping_hook()
        super().shutdown()
