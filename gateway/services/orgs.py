"""Finding an org for a caller, enforcing its role, and describing it."""
from __future__ import annotations

from sqlalchemy import select

from gateway.errors import ApiError
from gateway.models import Account, Membership, Org
from gateway.permissions import MINIMUM_ROLE, allows
from gateway.principals import Principal, deny
from gateway.runtime import Runtime


def org_for_member(rt: Runtime, principal: Principal, slug: str, action: str) -> tuple[Org, str]:
    """The org and the caller's role in it; 404 to outsiders (ids cannot be probed), 403 to too-low roles."""
    with rt.db.sessions() as session:
        if principal.actor.type == "user":  # the org and the caller's membership in one statement
            org, role = session.execute(select(Org, Membership.role).outerjoin(
                Membership, (Membership.org_id == Org.id) & (Membership.user_id == principal.actor.id))
                .where(Org.slug == slug)).first() or (None, None)
        else:
            org, role = session.scalar(select(Org).where(Org.slug == slug)), None
    if org is None or role is None:
        # The caller gets the same answer whether the org exists or not; the org's own audit log (if it exists)
        # still shows who probed it, which only its owners and admins can read.
        raise deny(rt, 404, "org_not_found", f"Org '{slug}' was not found.", actor=principal.actor,
                   action=action, target=f"org:{slug}", org=org.slug if org is not None else None,
                   details={"reason": "not a member" if org is not None else "no such org"})
    if not allows(role, action):
        raise deny(rt, 403, "forbidden",
                   f"Forbidden: {action} in org '{slug}' needs the role {MINIMUM_ROLE[action]} or above; "
                   f"you are {role}.", actor=principal.actor, action=action, target=f"org:{slug}", org=slug)
    return org, role


def not_in_org(rt: Runtime, principal: Principal, *, code: str, message: str, action: str, target: str,
               org: str) -> ApiError:
    """A 404 for a thing named through an org it does not belong to. Audited as denied; the answer is the same
    whether the thing exists in another org or nowhere, so ids cannot be probed across orgs."""
    return deny(rt, 404, code, message, actor=principal.actor, action=action, target=target, org=org)


def lock_org(session, org_id: str) -> None:
    """Serialize changes to one org's memberships (PostgreSQL row lock; SQLite transactions already serialize)."""
    session.execute(select(Org.id).where(Org.id == org_id).with_for_update())


def load_org(session, slug: str) -> Org:
    org = session.scalar(select(Org).where(Org.slug == slug))
    if org is None:
        raise ApiError(404, "org_not_found", f"Org '{slug}' was not found.")
    return org


def org_json(org: Org) -> dict:
    return {"id": org.id, "slug": org.slug, "name": org.name, "account_id": org.account_id,
            "budget_micros": org.budget_limit_micros, "allowed_models": org.allowed_models,
            "rate_limit": ({"requests": org.rate_limit_requests, "window_seconds": org.rate_limit_window_seconds}
                           if org.rate_limit_requests else None),
            "managed_by": org.managed_by}


def usage_json(org: Org, account: Account) -> dict:
    limit = org.budget_limit_micros
    budget_left = None if limit is None else max(0, limit - account.spent_micros - account.held_micros)
    available = account.available_micros if budget_left is None else min(account.available_micros, budget_left)
    return {"org": org.slug, "limit_micros": limit, "spent_micros": account.spent_micros,
            "held_micros": account.held_micros, "available_micros": available,
            "credit_available_micros": account.available_micros, "budget_remaining_micros": budget_left}
