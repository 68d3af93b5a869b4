"""A reverse proxy that corrupts a deployment's answers one way at a time (tools/prove/corruptions.py), so the
suite can be run through it to see which broken answers it would catch.

It runs its own asyncio loop (aiohttp) on a thread of its own, on a free loopback port; `corruption` is swapped
between runs. Everything else passes through unchanged: method, path, query, headers (X-Forwarded-For included,
so the gateway sees the client addresses the suite chooses) and body; event streams are relayed as they come."""
from __future__ import annotations

import asyncio
import socket
import threading

import aiohttp
from aiohttp import web

from tools.prove.corruptions import Corruption, Exchange

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones aiohttp sets itself.
NOT_FORWARDED = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                 "transfer-encoding", "upgrade", "host", "content-length"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def forwarded(headers) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in NOT_FORWARDED}


class CorruptingProxy:
    def __init__(self, target: str):
        self.target = target.rstrip("/")
        self.corruption: Corruption | None = None
        self.corrupted = 0  # answers the current corruption changed
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="corrupting-proxy", daemon=True)
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None

    def start(self) -> CorruptingProxy:
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError(f"the corrupting proxy did not start on {self.url}")
        return self

    def use(self, corruption: Corruption | None) -> None:
        self.corruption, self.corrupted = corruption, 0

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(15)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(15)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._open())
        self._ready.set()
        self._loop.run_forever()

    async def _open(self) -> None:
        self._client = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            upstream = await self._client.request(request.method, self.target + request.rel_url.raw_path_qs,
                                                  headers=forwarded(request.headers), data=body or None,
                                                  allow_redirects=False)
        except aiohttp.ClientError as problem:
            return web.Response(status=502, text=f"corrupting proxy: {self.target} did not answer: {problem}")
        try:
            exchange = Exchange(request.method, request.path, upstream.status, dict(forwarded(upstream.headers)))
            corruption = self.corruption if self.corruption is not None and self.corruption.matches(exchange) \
                else None
            if "text/event-stream" in upstream.headers.get("Content-Type", ""):  # relayed as it comes, always
                return await self._relay_stream(request, upstream, exchange, corruption)
            exchange.body = await upstream.read()
            if corruption is not None and corruption.corrupt(exchange):
                self.corrupted += 1
            return web.Response(status=exchange.status, headers=exchange.headers, body=exchange.body)
        finally:
            upstream.release()

    async def _relay_stream(self, request: web.Request, upstream: aiohttp.ClientResponse, exchange: Exchange,
                            corruption: Corruption | None) -> web.StreamResponse:
        """Event by event; `corruption` (when it applies) may change or drop each."""
        answer = web.StreamResponse(status=exchange.status, headers=exchange.headers)
        await answer.prepare(request)
        buffer, changed = b"", False
        async for chunk in upstream.content.iter_any():
            buffer += chunk
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                kept = corruption.corrupt_event(event) if corruption is not None else event
                changed |= kept != event
                if kept is not None:
                    await answer.write(kept + b"\n\n")
        if buffer:
            await answer.write(buffer)
        self.corrupted += changed
        await answer.write_eof()
        return answer
