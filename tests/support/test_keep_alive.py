"""The floods' and benchmarks' keep-alive client against a tiny server that answers as the test says."""
from __future__ import annotations

import asyncio

import pytest

from support.client.keep_alive import Connection

ANSWERS = {
    b"/sized": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n",
    b"/closing": b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
}


async def _serve(connections: list):
    async def handle(reader, writer):
        connections.append(writer)
        while not reader.at_eof():
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            path = head.split(b" ")[1]
            sized = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
            await reader.readexactly(int(sized[0].split(b":")[1]) if sized else 0)
            writer.write(ANSWERS[path])
            await writer.drain()
            if path == b"/closing":
                break
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_answers_are_read_by_length_or_chunks_and_a_closed_connection_is_opened_again():
    async def exchange():
        connections: list = []
        server = await _serve(connections)
        port = server.sockets[0].getsockname()[1]
        connection = Connection(f"http://127.0.0.1:{port}")
        try:
            sized = await connection.request("GET", "/sized")
            chunked = await connection.post("/chunked", b"{}", {"X-Request-ID": "t.1"})
            closing = await connection.request("GET", "/closing")
            again = await connection.request("GET", "/sized")
        finally:
            connection.close()
            server.close()
        return sized, chunked, closing, again, len(connections)

    sized, chunked, closing, again, opened = asyncio.run(exchange())
    assert (sized.status, sized.body) == (200, b"hello")
    assert chunked == (200, b"hello")
    assert (closing.status, closing.headers["retry-after"]) == (429, "7")
    assert (again.status, again.body, opened) == (200, b"hello", 2)


def test_an_answer_cut_off_raises_instead_of_passing_for_a_short_one():
    async def cut():
        async def handle(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel")
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        connection = Connection(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        try:
            await connection.request("GET", "/")
        finally:
            connection.close()
            server.close()

    with pytest.raises(asyncio.IncompleteReadError):
        asyncio.run(cut())
