"""Guessing credentials costs the guesser, not the gateway.

Failed logins and failed invitation acceptances are counted per account (the email tried, or the invitation) and
per client address in sliding windows. Once either has THROTTLE_FAILURES_PER_* failures inside
THROTTLE_WINDOW_SECONDS, further tries are refused with 429 and `Retry-After` before any password is hashed or any
row is read, until the oldest failure leaves the window. Only the first refusal of such a burst is audited; the
rest are counted (`gateway_throttled_total`). Counts live in this process, like the API keys' rate limits.

The client address is the connection's peer, or, when the peer is one of TRUSTED_PROXIES, the address that proxy
reports in `X-Forwarded-For` (the right-most one that is not itself a trusted proxy).
"""
from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict, deque
from contextvars import ContextVar
from dataclasses import dataclass

from prometheus_client import Counter

from gateway.audit import RefusalSampler
from gateway.metrics import REGISTRY

THROTTLED = Counter("gateway_throttled_total", "Credential tries refused by the throttle (429), by what was "
                    "throttled (account or address)", ["scope"], registry=REGISTRY)

_client_address: ContextVar[str | None] = ContextVar("client_address", default=None)


def client_address() -> str:
    """The address of the client being served (set by the middleware), or "unknown" outside a request."""
    return _client_address.get() or "unknown"


class ClientAddresses:
    def __init__(self, trusted_proxies: tuple[str, ...]):
        self._trusted = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def resolve(self, peer: str | None, forwarded_for: str | None) -> str:
        address = peer or "unknown"
        if not forwarded_for or not self._is_trusted(address):
            return address
        for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return address  # a garbled header is not believed
            address = hop
            if not self._is_trusted(hop):
                break
        return address

    @staticmethod
    def set_current(address: str):
        return _client_address.set(address)

    @staticmethod
    def reset_current(token) -> None:
        _client_address.reset(token)


class FailureWindow:
    """Failures per key in a sliding window. At most `max_keys` keys are remembered (the least recently failed are
    forgotten first), so a flood of random emails cannot grow it without bound."""

    def __init__(self, limit: int, window_seconds: float, *, clock=time.monotonic, max_keys: int = 100_000):
        self.limit = limit
        self.window = window_seconds
        self._clock = clock
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, deque] = OrderedDict()
        self._burst_until: dict[str, float] = {}

    def _recent(self, key: str, now: float) -> deque | None:
        hits = self._failures.get(key)
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        return hits

    def blocked_for(self, key: str) -> int | None:
        """Whole seconds (at least 1) until `key` may try again, or None when it may now."""
        now = self._clock()
        with self._lock:
            hits = self._recent(key, now)
            if hits is None or len(hits) < self.limit:
                return None
            return max(1, math.ceil(hits[0] + self.window - now))

    def first_refusal_of_burst(self, key: str, retry_after: int) -> bool:
        """True for the first refusal while `key` is blocked (that one is audited), False for the rest."""
        now = self._clock()
        with self._lock:
            if now < self._burst_until.get(key, 0.0):
                return False
            self._burst_until[key] = now + retry_after
            if len(self._burst_until) > self._max_keys:
                self._burst_until = {k: t for k, t in self._burst_until.items() if t > now}
            return True

    def failed(self, key: str) -> None:
        now = self._clock()
        with self._lock:
            hits = self._recent(key, now)
            if hits is None:
                hits = self._failures[key] = deque()
            hits.append(now)
            self._failures.move_to_end(key)
            while len(self._failures) > self._max_keys:
                self._failures.popitem(last=False)

    def clear(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)
            self._burst_until.pop(key, None)


@dataclass(frozen=True)
class Throttled:
    retry_after: int
    scope: str  # "account" or "address"
    audit: bool  # the first refusal of its burst

    def reason(self, what: str) -> str:
        whose = "this account" if self.scope == "account" else "this client address"
        return (f"Too many failed {what} for {whose}; try again in {self.retry_after} s.")


class Guards:
    """The running gateway's throttles and its sampler of unauthenticated refusals."""

    def __init__(self, settings, *, clock=time.monotonic):
        self.addresses = ClientAddresses(settings.trusted_proxies)
        window = settings.throttle_window_seconds
        self.accounts = FailureWindow(settings.throttle_failures_per_account, window, clock=clock)
        self.by_address = FailureWindow(settings.throttle_failures_per_address, window, clock=clock)
        self.refusals = RefusalSampler(settings.audit_sampling_window_seconds,
                                       settings.audit_unauthenticated_per_address,
                                       settings.audit_unauthenticated_per_window, clock=clock)

    def check(self, account: str) -> Throttled | None:
        """Whether a try on `account` from the current client address must be refused before it costs anything."""
        for scope, window, key in (("address", self.by_address, client_address()), ("account", self.accounts, account)):
            retry_after = window.blocked_for(key)
            if retry_after is not None:
                THROTTLED.labels(scope).inc()
                return Throttled(retry_after, scope, window.first_refusal_of_burst(key, retry_after))
        return None

    def failed(self, account: str) -> None:
        self.accounts.failed(account)
        self.by_address.failed(client_address())

    def succeeded(self, account: str) -> None:
        self.accounts.clear(account)
