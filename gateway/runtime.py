"""What the running gateway holds: settings, database, signing keys, upstream HTTP client, rate limiter."""
from __future__ import annotations

import asyncio
import contextvars
import math
import os
import signal
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated

from fastapi import Depends, Request

from gateway.db import Database
from gateway.security import KeyRing
from gateway.settings import Settings


class RateLimiter:
    """Sliding-window request counter per API key (this process only; gateway/shared_limits.py counts across
    processes in PostgreSQL, by the same rules)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._hits: dict[str, deque] = {}

    def check(self, key: str, limit: int, window_seconds: float) -> int | None:
        """Count one request; None when allowed, else the milliseconds (rounded up, at least 1) until the oldest hit
        leaves the window."""
        now = time.monotonic()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - window_seconds:
                hits.popleft()
            if len(hits) >= limit:
                return max(1, math.ceil((hits[0] + window_seconds - now) * 1000))
            hits.append(now)
            return None

    async def over_limit(self, key: str, limit: int, window_seconds: float) -> int | None:
        """check(), as the chat path calls every limiter."""
        return self.check(key, limit, window_seconds)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    keyring: KeyRing
    upstream: object | None = None  # gateway.services.routing.Upstream, made in the app's lifespan
    chat_store: object | None = None  # gateway.services.chat_billing.ChatStore, made in the app's lifespan
    # RateLimiter, or gateway.shared_limits.SharedRateLimiter (chosen in the app's lifespan): `await
    # rate_limiter.over_limit(key, limit, window)` counts a request, None when allowed, else milliseconds to wait.
    rate_limiter: object = field(default_factory=RateLimiter)
    leadership: object | None = None  # gateway.leadership.Leadership: whether this process runs the background work
    process_name: str | None = None  # host:pid, sent as X-Gateway-Process in test mode
    first_sync_done: bool = False
    reconciler: object | None = None
    guards: object | None = None  # gateway.throttle.Guards: credential throttles, sampling of anonymous refusals
    settlements: object | None = None  # gateway.services.settlements.Settlements, started in the app's lifespan
    breakers: object | None = None  # gateway.services.circuit_breakers.Breakers: model backends' circuits
    # The chat path's database work. A plain executor costs less per call than AnyIO's thread pool, and a chat
    # request makes two calls.
    db_threads: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=16, thread_name_prefix="chat-db"))

    def die_at_once(self) -> None:
        """SIGKILL the whole gateway (a test fault): with worker processes their supervisor first, so that nothing
        starts a worker again and every worker dies with it (gateway/__main__.py: PR_SET_PDEATHSIG)."""
        if self.settings.workers > 1:
            os.kill(os.getppid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    async def in_db_thread(self, fn, *args):
        """`fn(*args)` on a database thread, seeing the caller's context (the request's correlation ids)."""
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self.db_threads, context.run, partial(fn, *args))


async def runtime(request: Request) -> Runtime:  # async: a plain def would cost a thread hop per request
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(runtime)]
"""A route's parameter of this type receives the running gateway's shared state."""
