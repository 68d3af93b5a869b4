"""The audit log: one event for every mutation and every denial. Secrets never go in."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert
from sqlalchemy.orm import Session

from gateway import context
from gateway.models import AuditEvent, utcnow

EVENTS = AuditEvent.__table__
_NEW_EVENT = insert(EVENTS)


@dataclass(frozen=True)
class Actor:
    type: str  # user, api_key, service, admin, system, anonymous
    id: str | None = None


ANONYMOUS = Actor("anonymous")
SYSTEM = Actor("system", "gateway")


def record(session: Session, actor: Actor, action: str, *, target: str | None = None, outcome: str = "allowed",
           reason: str | None = None, org: str | None = None, details: dict | None = None) -> None:
    """Write one event, at once, with a plain INSERT (it commits or rolls back with the caller's transaction)."""
    session.connection().execute(_NEW_EVENT, {
        "at": utcnow(), "actor_type": actor.type, "actor_id": actor.id, "action": action, "target": target,
        "outcome": outcome, "reason": reason, "org": org, "details": details,
        "request_id": context.current_request_id(), "trace_id": context.current_trace_id()})


def as_json(event: AuditEvent) -> dict:
    return {"id": event.id, "at": event.at.isoformat() if event.at else None,
            "actor": {"type": event.actor_type, "id": event.actor_id}, "action": event.action,
            "target": event.target, "outcome": event.outcome, "reason": event.reason,
            "request_id": event.request_id, "trace_id": event.trace_id, "org": event.org,
            "details": event.details}
