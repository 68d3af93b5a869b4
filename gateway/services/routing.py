"""Calling a model's backends in route order: fall back on 5xx, timeout or connection error, never on 4xx."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import httpx

from gateway import context, metrics
from gateway.logs import log as log_fields

log = logging.getLogger("gateway.routing")


def estimate_prompt_tokens(messages: list) -> int:
    chars = sum(len(m.get("content")) for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str))
    return math.ceil(chars / 4)


def cost_micros(prompt_tokens: int, completion_tokens: int, prompt_price_per_1k: int,
                completion_price_per_1k: int) -> int:
    return math.ceil((prompt_tokens * prompt_price_per_1k + completion_tokens * completion_price_per_1k) / 1000)


@dataclass
class Attempt:
    backend: str
    outcome: str  # ok, client_error, server_error, timeout, connection_error
    status: int | None = None
    detail: str | None = None


@dataclass
class RouteResult:
    backend: str | None
    status: int | None
    body: dict | None
    attempts: list[Attempt]

    @property
    def answered(self) -> bool:
        return self.backend is not None


async def call_in_order(client: httpx.AsyncClient, backends: list[dict], payload: dict, *,
                        default_timeout: float, connect_timeout: float) -> RouteResult:
    correlation = context.current()
    attempts: list[Attempt] = []
    for backend in backends:
        name = backend.get("name") or backend["url"]
        headers = {"X-Request-ID": correlation.request_id, "traceparent": correlation.child_traceparent()}
        timeout = httpx.Timeout(float(backend.get("timeout_seconds") or default_timeout), connect=connect_timeout)
        try:
            response = await client.post(backend["url"], json=payload, headers=headers, timeout=timeout)
        except httpx.TimeoutException as exc:
            attempts.append(Attempt(name, "timeout", detail=type(exc).__name__))
        except httpx.TransportError as exc:
            attempts.append(Attempt(name, "connection_error", detail=type(exc).__name__))
        else:
            if response.status_code >= 500:
                attempts.append(Attempt(name, "server_error", response.status_code))
            else:
                try:
                    body = response.json()
                except ValueError:
                    body = None
                if response.status_code < 400 and not isinstance(body, dict):
                    attempts.append(Attempt(name, "server_error", response.status_code, "response was not JSON"))
                else:
                    outcome = "ok" if response.status_code < 400 else "client_error"
                    attempts.append(Attempt(name, outcome, response.status_code))
                    metrics.UPSTREAM.labels(name, outcome).inc()
                    return RouteResult(name, response.status_code, body, attempts)
        metrics.UPSTREAM.labels(name, attempts[-1].outcome).inc()
        log_fields(log, logging.WARNING, "backend failed, trying the next one", backend=name,
                   outcome=attempts[-1].outcome, status=attempts[-1].status)
    return RouteResult(None, None, None, attempts)
