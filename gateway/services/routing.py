"""Calling a model's backends in route order: fall back on 5xx, timeout or connection error, never on 4xx.
A streamed request falls back the same way until the first event of a backend's stream has been read, never after:
from then on the client may have it (gateway/services/streaming.py).

A backend whose circuit is open (gateway/services/circuit_breakers.py) is skipped without a call, as if it had
failed at once (attempt outcome `circuit_open`).

The upstream client is aiohttp (an asyncio client, so a slow backend never blocks the server): on the chat path it
costs a third of the CPU that httpx did, which is most of what the gateway adds to a request."""
from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import dataclass

import aiohttp

from gateway import context, metrics
from gateway.logs import log as log_fields
from gateway.services.circuit_breakers import Breakers
from gateway.services.streaming import EventSource, StreamBroken, is_event_stream

log = logging.getLogger("gateway.routing")

MAX_BACKEND_ANSWER_BYTES = 16 * 1024 * 1024  # a backend's answer above this is treated as a failure


def cost_micros(prompt_tokens: int, completion_tokens: int, prompt_price_per_1k: int,
                completion_price_per_1k: int) -> int:
    return math.ceil((prompt_tokens * prompt_price_per_1k + completion_tokens * completion_price_per_1k) / 1000)


def backend_name(backend) -> str:
    if isinstance(backend, dict):
        return str(backend.get("name") or backend.get("url") or "unnamed backend")
    return "unnamed backend"


def backend_timeout(backend, default: float) -> float:
    """The backend's own `timeout_seconds` when it is a positive number, else the gateway's default."""
    value = backend.get("timeout_seconds") if isinstance(backend, dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 3600:
        return float(value)
    return default


def worst_case_seconds(backends: list, default_timeout: float, connect_timeout: float) -> float:
    """How long trying every backend can take at most: what a reservation's TTL must outlast."""
    return sum(backend_timeout(b, default_timeout) + connect_timeout for b in backends or [])


@dataclass
class Attempt:
    backend: str
    outcome: str  # ok, client_error, server_error, timeout, connection_error, misconfigured, circuit_open
    status: int | None = None
    detail: str | None = None


@dataclass
class RouteResult:
    backend: str | None
    status: int | None
    body: dict | None  # the parsed answer (a JSON object), or None when it was not one
    raw: bytes | None  # the answer exactly as the backend sent it
    content_type: str | None
    attempts: list[Attempt]
    stream: EventSource | None = None  # a streamed answer, its first event read, the rest still with the backend

    @property
    def answered(self) -> bool:
        return self.backend is not None


class Upstream:
    """One pooled keep-alive client for every backend; made inside the running event loop."""

    def __init__(self, *, max_connections: int = 200):
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_connections, limit_per_host=0, keepalive_timeout=30),
            auto_decompress=True, trust_env=False, raise_for_status=False)

    async def close(self) -> None:
        await self.session.close()


async def _read_capped(response: aiohttp.ClientResponse) -> bytes | None:
    declared = response.content_length
    if declared is not None and declared > MAX_BACKEND_ANSWER_BYTES:
        return None
    chunks, size = [], 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > MAX_BACKEND_ANSWER_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _attempt(upstream: Upstream, backend, payload: bytes, headers: dict, timeout: aiohttp.ClientTimeout,
                   stream: bool):
    """One backend: (Attempt, raw answer, parsed answer, content type, event source of a streamed answer)."""
    name = backend_name(backend)
    url = backend.get("url") if isinstance(backend, dict) else None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return Attempt(name, "misconfigured", detail="the backend has no http(s) url"), None, None, None, None
    status = response = None
    try:
        response = await upstream.session.post(url, data=payload, headers=headers, timeout=timeout,
                                               allow_redirects=False)
        status, content_type = response.status, response.headers.get("Content-Type")
        if stream and status < 300 and is_event_stream(content_type):
            source = EventSource(name, response)
            await source.open()
            response = None  # the relay reads the rest and closes it
            return Attempt(name, "ok", status), None, None, content_type, source
        raw = await _read_capped(response)
    except asyncio.TimeoutError as exc:  # aiohttp's timeouts are asyncio.TimeoutError subclasses
        return Attempt(name, "timeout", status, type(exc).__name__), None, None, None, None
    except (aiohttp.ClientError, OSError, ValueError) as exc:  # refused, reset, dropped, bad URL, bad answer
        return Attempt(name, "connection_error", status, type(exc).__name__), None, None, None, None
    except StreamBroken as exc:
        return Attempt(name, "server_error", status, f"streaming: {exc}"), None, None, None, None
    finally:
        if response is not None:
            response.close() if stream else response.release()
    failed = _failure(status, raw, stream)
    if failed is not None:
        return Attempt(name, "server_error", status, failed or None), None, None, None, None
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        body = None
    if status < 400 and not isinstance(body, dict):
        return Attempt(name, "server_error", status, "the answer was not a JSON object"), None, None, None, None
    outcome = "ok" if status < 400 else "client_error"
    return Attempt(name, outcome, status), raw, body if isinstance(body, dict) else None, content_type, None


def _failure(status: int, raw: bytes | None, stream: bool) -> str | None:
    """Why an answer read whole counts as a server error (fallback), or None."""
    if raw is None:
        return f"answer over {MAX_BACKEND_ANSWER_BYTES} bytes"
    if status >= 500:
        return ""
    if 300 <= status < 400:
        return "the backend redirected"
    if stream and status < 300:
        return "a streamed request was answered without an event stream"
    return None


async def call_in_order(upstream: Upstream, backends: list, payload: bytes, *, default_timeout: float,
                        connect_timeout: float, stream: bool = False, breakers: Breakers | None = None,
                        model: str = "") -> RouteResult:
    """Send the JSON `payload` to each backend in turn until one answers (2xx, or a 4xx that is returned as is).
    `stream`: a 2xx must be an event stream, and is returned open, its first event read (`RouteResult.stream`).
    A backend's timeout bounds its whole answer, streamed or not. `breakers`: skip the backends of `model` whose
    circuit is open, and tell them how each try went."""
    correlation = context.current()
    attempts: list[Attempt] = []
    for backend in backends or []:
        name = backend_name(backend)
        admitted = breakers.admit(model, name) if breakers is not None else "call"
        if admitted is None:
            attempt = Attempt(name, "circuit_open", detail="skipped: its circuit is open after repeated failures")
            attempts.append(attempt)
            metrics.UPSTREAM.labels(name, attempt.outcome).inc()
            continue
        headers = {"Content-Type": "application/json"}
        if correlation is not None:
            headers["X-Request-ID"] = correlation.request_id
            headers["traceparent"] = correlation.child_traceparent()
        seconds = backend_timeout(backend, default_timeout)
        timeout = aiohttp.ClientTimeout(total=seconds, connect=min(connect_timeout, seconds))
        try:
            attempt, raw, body, content_type, source = await _attempt(upstream, backend, payload, headers, timeout,
                                                                      stream)
        except BaseException:  # cancelled (the client went away): no verdict on the backend
            if breakers is not None:
                breakers.abandon(model, name, admitted)
            raise
        if breakers is not None:
            breakers.outcome(model, name, backend, attempt.outcome, admitted)
        attempts.append(attempt)
        metrics.UPSTREAM.labels(attempt.backend, attempt.outcome).inc()
        if attempt.outcome in ("ok", "client_error"):
            return RouteResult(attempt.backend, attempt.status, body, raw, content_type, attempts, source)
        log_fields(log, logging.WARNING, "backend failed, trying the next one", backend=attempt.backend,
                   outcome=attempt.outcome, status=attempt.status, detail=attempt.detail)
    return RouteResult(None, None, None, None, None, attempts)
