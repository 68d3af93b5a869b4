"""Reading the audit log: per org (owners and admins) and platform-wide (admin token)."""
from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from gateway import audit
from gateway.errors import ApiError
from gateway.models import AuditEvent
from gateway.principals import Principal, admin, user
from gateway.runtime import Runtime, RuntimeDep
from gateway.services.orgs import org_for_member

router = APIRouter()

OUTCOMES = ("allowed", "denied", "failed")


def _query(rt: Runtime, *, org: str | None, action: str | None, outcome: str | None, request_id: str | None,
           since: datetime | None, until: datetime | None, limit: int, cursor: int | None) -> dict:
    if outcome is not None and outcome not in OUTCOMES:
        raise ApiError(422, "invalid_request", f"outcome must be one of {', '.join(OUTCOMES)}.", param="outcome")
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit + 1)
    for column, value in ((AuditEvent.org, org), (AuditEvent.action, action), (AuditEvent.outcome, outcome),
                          (AuditEvent.request_id, request_id)):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if until is not None:
        query = query.where(AuditEvent.at < until)
    if cursor is not None:
        query = query.where(AuditEvent.id < cursor)
    with rt.db.sessions() as session:
        events = session.scalars(query).all()
    page, more = events[:limit], len(events) > limit
    return {"events": [audit.as_json(e) for e in page], "next_cursor": page[-1].id if more else None}


@router.get("/orgs/{slug}/audit")
def org_audit(slug: str, rt: RuntimeDep, principal: Principal = Depends(user), action: str | None = None,
              outcome: str | None = None, request_id: str | None = None, since: datetime | None = None,
              until: datetime | None = None, limit: int = Query(default=100, ge=1, le=1000), cursor: int | None = None):
    org_for_member(rt, principal, slug, "audit.read")
    return _query(rt, org=slug, action=action, outcome=outcome, request_id=request_id, since=since, until=until,
                  limit=limit, cursor=cursor)


@router.get("/admin/audit")
def admin_audit(rt: RuntimeDep, principal: Principal = Depends(admin), org: str | None = None,
                action: str | None = None, outcome: str | None = None, request_id: str | None = None,
                since: datetime | None = None, until: datetime | None = None,
                limit: int = Query(default=100, ge=1, le=1000), cursor: int | None = None):
    return _query(rt, org=org, action=action, outcome=outcome, request_id=request_id, since=since, until=until,
                  limit=limit, cursor=cursor)
