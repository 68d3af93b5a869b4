"""The gateway benchmark's streamed completions: what the gateway adds to the time to the first token and to each
chunk, against the model stub called directly in the same run, and streamed requests per second with budgets on.

A streamed answer is read off a keep-alive HTTP/1.1 connection by hand (chunked transfer encoding, server-sent
events), each event stamped as it arrives, so the load generator stays as light as the non-streaming one."""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field

from sqlalchemy import func, select

from support.harness.waits import wait_until
from support.client.keep_alive import Connection, spread
from tools.benchmarks.chat_client import Setup
from tools.benchmarks.common import percentile

SETTLE_TIMEOUT_SECONDS = 10


@dataclass
class StreamTiming:
    status: int
    first_token_ms: float | None = None  # from sending the request to the first event with text
    chunk_gaps_ms: list[float] = field(default_factory=list)  # between events with text, after the first
    done: bool = False  # the stream ended with [DONE]


async def post_streamed(connection: Connection, path: str, body: bytes, headers: dict) -> StreamTiming:
    """POST, then read the answer's chunked body event by event until its last chunk."""
    started = time.perf_counter()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    connection.writer.write(f"POST {path} HTTP/1.1\r\nHost: {connection.host}:{connection.port}\r\n"
                            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{head}\r\n"
                            .encode() + body)
    raw = await connection.reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    timing = StreamTiming(int(lines[0].split(" ", 2)[1]))
    fields = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    if "content-length" in fields:  # a refusal, in one piece
        await connection.reader.readexactly(int(fields["content-length"]))
        return timing
    buffer, last_text_at = b"", None
    while True:
        size = int((await connection.reader.readuntil(b"\r\n")).split(b";")[0], 16)
        data = await connection.reader.readexactly(size + 2)
        if size == 0:
            return timing
        arrived = time.perf_counter()
        *events, buffer = (buffer + data[:-2]).split(b"\n\n")
        for event in events:
            payload = event.removeprefix(b"data: ")
            if payload == b"[DONE]":
                timing.done = True
            elif b'"content":"' in payload and _has_text(payload):
                if last_text_at is None:
                    timing.first_token_ms = (arrived - started) * 1000
                else:
                    timing.chunk_gaps_ms.append((arrived - last_text_at) * 1000)
                last_text_at = arrived


def _has_text(payload: bytes) -> bool:
    return any((choice.get("delta") or {}).get("content") for choice in json.loads(payload).get("choices") or [])


def streamed_body(setup: Setup) -> bytes:
    body = json.loads(setup.body())
    return json.dumps({**body, "stream": True}).encode()


async def first_token(setup: Setup, samples: int, warmup: int) -> dict:
    """Sequential streamed requests, alternating the gateway and the stub directly on one keep-alive connection
    each: the time to the first token and between chunks, and what the gateway adds to each."""
    gateway = await Connection(setup.base).open()
    stub = await Connection(setup.stub_url).open()
    body = streamed_body(setup)
    auth = {"Authorization": f"Bearer {setup.key}"}
    via, direct = [], []
    try:
        for i in range(warmup + samples):
            through = await post_streamed(gateway, "/v1/chat/completions", body, auth)
            straight = await post_streamed(stub, setup.stub_path, body, {})
            if not (through.done and straight.done):
                raise SystemExit(f"bench: streamed latency phase got gateway {through.status}, stub {straight.status}")
            if i >= warmup:
                via.append(through)
                direct.append(straight)
    finally:
        gateway.close()
        stub.close()
    ttft_via, ttft_direct = [t.first_token_ms for t in via], [t.first_token_ms for t in direct]
    gaps_via = [g for t in via for g in t.chunk_gaps_ms]
    gaps_direct = [g for t in direct for g in t.chunk_gaps_ms]
    return {"answered": warmup + samples,
            "ttft_direct_p50": statistics.median(ttft_direct), "ttft_via_p50": statistics.median(ttft_via),
            "ttft_added_p50": statistics.median(ttft_via) - statistics.median(ttft_direct),
            "ttft_added_p99": percentile(ttft_via, 0.99) - percentile(ttft_direct, 0.99),
            "chunk_direct_p50": statistics.median(gaps_direct), "chunk_via_p50": statistics.median(gaps_via),
            "chunk_added_p50": statistics.median(gaps_via) - statistics.median(gaps_direct),
            "chunk_added_p99": percentile(gaps_via, 0.99) - percentile(gaps_direct, 0.99)}


async def streamed_load(setup: Setup, total: int, concurrency: int) -> dict:
    """`total` streamed completions over `concurrency` keep-alive connections, each read to its end."""
    body = streamed_body(setup)
    auth = {"Authorization": f"Bearer {setup.key}"}
    statuses: dict[str, int] = {}

    async def send(connection: Connection) -> None:
        timing = await post_streamed(connection, "/v1/chat/completions", body, auth)
        outcome = "200 [DONE]" if timing.status == 200 and timing.done else str(timing.status)
        statuses[outcome] = statuses.get(outcome, 0) + 1

    elapsed = await spread(setup.base, total, concurrency, send)
    return {"statuses": statuses, "rate": total / elapsed, "answered": statuses.get("200 [DONE]", 0)}


def wait_settled(setup: Setup) -> None:
    """A stream is settled just after its client has read [DONE]: wait (polling) until no hold is pending."""
    reservations = setup.db.table("reservations")
    query = select(func.count()).select_from(reservations).where(reservations.c.account_id == setup.account_id,
                                                                 reservations.c.status == "pending")

    def pending() -> int:
        with setup.db.engine.connect() as conn:
            return conn.scalar(query)
    wait_until("every streamed request's hold to be settled", pending, lambda count: count == 0,
               timeout=SETTLE_TIMEOUT_SECONDS, describe=lambda count: f"{count} holds pending")
