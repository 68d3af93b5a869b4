"""Retiring what a tenant or a test run created (platform admin): find orgs and people, deactivate an org, remove a
person. Every change is audited.

An org is deactivated by taking every way in away: its API keys and open invitations are revoked and its
memberships removed, so no person and no key can reach it or spend from its account. Its row, its account's ledger
and its audit log stay for the record, and its slug stays taken. Members left with no org at all are removed with
it. A person is removed only once they belong to no org (an org keeps its owner)."""
from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query
from sqlalchemy import delete, exists, func, select, update

from gateway import audit
from gateway.models import ApiKey, Invitation, Membership, Org, RefreshToken, User, utcnow
from gateway.principals import Principal, admin, deny
from gateway.runtime import Runtime, RuntimeDep
from gateway.services.ledger import as_utc
from gateway.services.orgs import lock_org

router = APIRouter()
MAX_LISTED = 1000


def _stamp(value: datetime | None) -> str | None:
    return as_utc(value).isoformat() if value else None


def _has_members(org_id):
    return exists().where(Membership.org_id == org_id)


def _has_usable_keys(org_id):
    return exists().where(ApiKey.org_id == org_id, ApiKey.revoked_at.is_(None))


def _has_open_invitations(org_id):
    return exists().where(Invitation.org_id == org_id, Invitation.accepted_at.is_(None),
                          Invitation.revoked_at.is_(None), Invitation.expires_at > utcnow())


@router.get("/admin/orgs")
def list_orgs(rt: RuntimeDep, principal: Principal = Depends(admin),
              slug_contains: str | None = Query(default=None, min_length=2, max_length=100),
              created_before: datetime | None = None, active: bool | None = None,
              limit: int = Query(default=MAX_LISTED, ge=1, le=MAX_LISTED), offset: int = Query(default=0, ge=0)):
    """Orgs, oldest first; `active` says whether anyone or any key can still reach it."""
    reachable = _has_members(Org.id) | _has_usable_keys(Org.id) | _has_open_invitations(Org.id)
    query = select(Org, reachable.label("active")).order_by(Org.created_at, Org.slug).limit(limit).offset(offset)
    if slug_contains:
        query = query.where(Org.slug.contains(slug_contains.lower(), autoescape=True))
    if created_before is not None:
        query = query.where(Org.created_at < created_before)
    if active is not None:
        query = query.where(reachable if active else ~reachable)
    with rt.db.sessions() as session:
        rows = session.execute(query).all()
    return {"orgs": [{"slug": org.slug, "name": org.name, "account_id": org.account_id,
                      "created_at": _stamp(org.created_at), "active": bool(is_active)} for org, is_active in rows]}


@router.delete("/admin/orgs/{slug}")
def deactivate_org(slug: str, rt: RuntimeDep, principal: Principal = Depends(admin)):
    org_id = _found(rt, principal, select(Org.id).where(Org.slug == slug), "org_not_found",
                    f"Org '{slug}' was not found.", "org.deactivate", f"org:{slug}")
    with rt.db.transaction() as session:
        lock_org(session, org_id)
        now = utcnow()
        keys = session.execute(update(ApiKey).where(ApiKey.org_id == org_id, ApiKey.revoked_at.is_(None))
                               .values(revoked_at=now)).rowcount
        invitations = session.execute(update(Invitation).where(
            Invitation.org_id == org_id, Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None))
            .values(revoked_at=now)).rowcount
        members = session.scalars(select(Membership.user_id).where(Membership.org_id == org_id)).all()
        session.execute(delete(Membership).where(Membership.org_id == org_id))
        orphans = session.scalars(select(User.id).where(User.id.in_(members), ~exists().where(
            Membership.user_id == User.id))).all() if members else []
        _remove_users(session, orphans)
        summary = {"slug": slug, "active": False, "keys_revoked": keys, "invitations_revoked": invitations,
                   "members_removed": len(members), "people_removed": len(orphans)}
        changed = keys or invitations or members
        audit.record(session, principal.actor, "org.deactivate", target=f"org:{slug}", org=slug,
                     reason=None if changed else "the org was already inactive; nothing changed",
                     details={**summary, "removed_user_ids": orphans})
    return summary


@router.get("/admin/users")
def list_users(rt: RuntimeDep, principal: Principal = Depends(admin),
               email_contains: str | None = Query(default=None, min_length=2, max_length=320),
               created_before: datetime | None = None,
               limit: int = Query(default=MAX_LISTED, ge=1, le=MAX_LISTED), offset: int = Query(default=0, ge=0)):
    """People, oldest first, with the number of orgs each belongs to."""
    orgs = select(func.count()).where(Membership.user_id == User.id).scalar_subquery()
    query = select(User, orgs.label("orgs")).order_by(User.created_at, User.email).limit(limit).offset(offset)
    if email_contains:
        query = query.where(User.email.contains(email_contains.lower(), autoescape=True))
    if created_before is not None:
        query = query.where(User.created_at < created_before)
    with rt.db.sessions() as session:
        rows = session.execute(query).all()
    return {"users": [{"id": person.id, "email": person.email, "name": person.name,
                       "created_at": _stamp(person.created_at), "orgs": count} for person, count in rows]}


@router.delete("/admin/users/{user_id}")
def remove_user(user_id: str, rt: RuntimeDep, principal: Principal = Depends(admin)):
    email = _found(rt, principal, select(User.email).where(User.id == user_id), "user_not_found",
                   f"User '{user_id}' was not found.", "user.remove", f"user:{user_id}")
    with rt.db.transaction() as session:  # a refusal is audited after it: deny() writes in a transaction of its own
        orgs = session.scalars(select(Org.slug).join(Membership, Membership.org_id == Org.id)
                               .where(Membership.user_id == user_id).order_by(Org.slug)).all()
        if not orgs:
            _remove_users(session, [user_id])
            audit.record(session, principal.actor, "user.remove", target=f"user:{user_id}", details={"email": email})
    if orgs:
        raise deny(rt, 409, "user_has_orgs", f"User '{user_id}' still belongs to {len(orgs)} org(s) "
                   f"({', '.join(orgs[:5])}): deactivate them (DELETE /admin/orgs/{{slug}}) or remove the person "
                   f"from them first.", actor=principal.actor, action="user.remove", target=f"user:{user_id}")
    return {"id": user_id, "email": email, "removed": True}


def _remove_users(session, user_ids: list[str]) -> None:
    """Remove people who belong to no org: their refresh tokens go with them, and their access tokens are refused
    from now on (their subject no longer exists)."""
    if user_ids:
        session.execute(delete(RefreshToken).where(RefreshToken.user_id.in_(user_ids)))
        session.execute(delete(User).where(User.id.in_(user_ids)))


def _found(rt: Runtime, principal: Principal, query, code: str, message: str, action: str, target: str):
    """What the query finds, or an audited 404 (raised before any write, so deny() can write in its own
    transaction)."""
    with rt.db.sessions() as session:
        found = session.scalar(query)
    if found is None:
        raise deny(rt, 404, code, message, actor=principal.actor, action=action, target=target)
    return found
