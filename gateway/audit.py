"""The audit log: one event for every mutation and every denial. Secrets never go in.

Refusals of callers without credentials (actor `anonymous`) are what a flood is made of, so they are sampled: each
client address has AUDIT_UNAUTHENTICATED_PER_ADDRESS events per AUDIT_SAMPLING_WINDOW_SECONDS, and all addresses
together AUDIT_UNAUTHENTICATED_PER_WINDOW; past that a refusal costs a counter, and one summary event per action
and address says how many were not recorded one by one. Such events are kept AUDIT_UNAUTHENTICATED_RETENTION_DAYS.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from prometheus_client import Counter
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from gateway import context
from gateway.metrics import REGISTRY
from gateway.models import AuditEvent, utcnow

EVENTS = AuditEvent.__table__
_NEW_EVENT = insert(EVENTS)
# Longest text an event keeps of a field a caller can choose (a path, an email, a header quoted in a reason).
TEXT_LIMITS = {"actor_id": 200, "target": 300, "reason": 500}
UNRECORDED = Counter("gateway_unaudited_refusals_total", "Refusals of callers without credentials counted but not "
                     "audited one by one (over the sampling budget)", ["action"], registry=REGISTRY)


@dataclass(frozen=True)
class Actor:
    type: str  # user, api_key, service, admin, system, anonymous
    id: str | None = None


ANONYMOUS = Actor("anonymous")
SYSTEM = Actor("system", "gateway")


def _cut(field: str, value: str | None) -> str | None:
    limit = TEXT_LIMITS[field]
    return value if value is None or len(value) <= limit else value[:limit - 1] + "…"


def record(session: Session, actor: Actor, action: str, *, target: str | None = None, outcome: str = "allowed",
           reason: str | None = None, org: str | None = None, details: dict | None = None) -> None:
    """Write one event, at once, with a plain INSERT (it commits or rolls back with the caller's transaction)."""
    session.connection().execute(_NEW_EVENT, {
        "at": utcnow(), "actor_type": actor.type, "actor_id": _cut("actor_id", actor.id), "action": action,
        "target": _cut("target", target), "outcome": outcome, "reason": _cut("reason", reason), "org": org,
        "details": details, "request_id": context.current_request_id(), "trace_id": context.current_trace_id()})


def as_json(event: AuditEvent) -> dict:
    return {"id": event.id, "at": event.at.isoformat() if event.at else None,
            "actor": {"type": event.actor_type, "id": event.actor_id}, "action": event.action,
            "target": event.target, "outcome": event.outcome, "reason": event.reason,
            "request_id": event.request_id, "trace_id": event.trace_id, "org": event.org,
            "details": event.details}


class RefusalSampler:
    """Which unauthenticated refusals are audited one by one, in fixed windows of `window` seconds."""

    OTHER_ADDRESSES = "other addresses"

    def __init__(self, window: float, per_address: int, per_window: int, *, clock=time.monotonic,
                 max_addresses: int = 10_000):
        self.window = window
        self.per_address = per_address
        self.per_window = per_window
        self._clock = clock
        self._max_addresses = max_addresses
        self._lock = threading.Lock()
        self._current = None
        self._by_address: dict[str, int] = {}
        self._total = 0
        self._unrecorded: dict[tuple[str, str], int] = {}

    def admit(self, action: str, address: str) -> bool:
        """True: audit this refusal; False: it was counted instead."""
        with self._lock:
            index = int(self._clock() // self.window)
            if index != self._current:
                self._current, self._by_address, self._total = index, {}, 0
            seen = self._by_address.get(address, 0)
            if seen < self.per_address and self._total < self.per_window:
                if seen or len(self._by_address) < self._max_addresses:
                    self._by_address[address] = seen + 1
                self._total += 1
                return True
        return self.count(action, address)

    def count(self, action: str, address: str) -> bool:
        """Count a refusal that is not audited one by one (summarised by drain's caller); False."""
        with self._lock:
            key = (action, address)
            if key not in self._unrecorded and len(self._unrecorded) >= self._max_addresses:
                key = (action, self.OTHER_ADDRESSES)
            self._unrecorded[key] = self._unrecorded.get(key, 0) + 1
        UNRECORDED.labels(action).inc()
        return False

    def until_window_ends(self) -> float:
        """Seconds until the current window ends (its refusals counted are then summarised at once)."""
        return self.window - self._clock() % self.window

    def drain(self) -> dict[tuple[str, str], int]:
        """The refusals counted since the last drain, by (action, address)."""
        with self._lock:
            drained, self._unrecorded = self._unrecorded, {}
        return drained


def record_unrecorded(session: Session, counted: dict[tuple[str, str], int], sampler: RefusalSampler) -> None:
    """One summary event per action and address for the refusals that were only counted."""
    for (action, address), count in sorted(counted.items()):
        record(session, ANONYMOUS, action, outcome="denied",
               reason=f"{count} more refusal(s) like this from {address} were counted, not audited one by one "
                      f"(over {sampler.per_address} per address or {sampler.per_window} in all per "
                      f"{sampler.window:g} s)",
               details={"unrecorded_refusals": count, "client_address": address, "window_seconds": sampler.window})


def purge_unauthenticated(session: Session, retention_days: float, *, batch: int = 5000) -> int:
    """Delete (at most `batch`) events of refused callers without credentials older than the retention."""
    cutoff = utcnow() - timedelta(days=retention_days)
    doomed = select(EVENTS.c.id).where(EVENTS.c.actor_type == "anonymous", EVENTS.c.at < cutoff).limit(batch)
    ids = list(session.scalars(doomed))
    if ids:
        session.execute(delete(EVENTS).where(EVENTS.c.id.in_(ids)))
    return len(ids)
