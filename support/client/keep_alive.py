"""A minimal HTTP/1.1 client on asyncio over keep-alive connections, for traffic the client must send taking as
little of the machine as it can (the security floods, the benchmarks): no redirects, no cookies, no evidence.
An answer is read by its Content-Length or its chunks; a connection the server closed is opened again before the
next request, never in the middle of one (a request cut off raises, and the caller says what it saw)."""
from __future__ import annotations

import asyncio
import ssl
import time
from typing import NamedTuple
from urllib.parse import urlsplit


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]  # by lower-case name
    body: bytes


class Connection:
    def __init__(self, base_url: str, *, timeout: float = 30.0):
        parts = urlsplit(base_url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.timeout = timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> "Connection":
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, ssl=ssl.create_default_context() if self.tls else None)
        return self

    async def request(self, method: str, path: str, headers: dict | None = None, body: bytes | None = None) -> Answer:
        """One request's answer; raises OSError, asyncio.IncompleteReadError or TimeoutError."""
        if self.reader is None or self.reader.at_eof():
            self.close()
            await self.open()
        head = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{head}\r\n".encode()
                          + (body or b""))
        async with asyncio.timeout(self.timeout):
            status, fields = _head(await self.reader.readuntil(b"\r\n\r\n"))
            chunked = "chunked" in fields.get("transfer-encoding", "").lower()
            answer = await (self._chunks() if chunked else
                            self.reader.readexactly(int(fields.get("content-length", 0))))
        if fields.get("connection", "").lower() == "close":
            self.close()
        return Answer(status, fields, answer)

    async def post(self, path: str, body: bytes, headers: dict) -> tuple[int, bytes]:
        """(status, body) of a POST of a JSON body."""
        answer = await self.request("POST", path, headers, body)
        return answer.status, answer.body

    async def _chunks(self) -> bytes:
        parts = []
        while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append(await self.reader.readexactly(size + 2))
        await self.reader.readuntil(b"\r\n")  # no trailers are expected: the blank line ending the answer
        return b"".join(part[:-2] for part in parts)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _head(raw: bytes) -> tuple[int, dict[str, str]]:
    """(status, header fields by lower-case name) of an answer's head."""
    lines = raw.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            fields[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ", 2)[1]), fields


async def spread(base_url: str, total: int, concurrency: int, send) -> float:
    """`total` calls of `await send(connection)` over `concurrency` keep-alive connections; the seconds it took."""
    remaining = [total]

    async def worker():
        connection = await Connection(base_url).open()
        try:
            while remaining[0] > 0:
                remaining[0] -= 1
                await send(connection)
        finally:
            connection.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - began
