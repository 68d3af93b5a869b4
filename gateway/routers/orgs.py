"""Orgs: creation by a platform admin, their budget and their usage."""
from __future__ import annotations

import re
from datetime import timedelta

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import Field, field_validator
from sqlalchemy import select, update

from gateway import audit
from gateway.bodies import RequestBody
from gateway.models import Account, Invitation, Org, utcnow
from gateway.principals import Principal, admin, deny, user
from gateway.runtime import Runtime, RuntimeDep
from gateway.security import new_id, new_opaque_token, sha256_hex
from gateway.services import ledger
from gateway.services.orgs import org_for_member, org_json, usage_json

router = APIRouter()

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def valid_email(value: str) -> str:
    value = value.strip().lower()
    if not EMAIL.match(value):
        raise ValueError("must be an email address")
    return value


class NewOrg(RequestBody):
    slug: str
    name: str = Field(min_length=1, max_length=200)
    owner_email: str
    budget_micros: int | None = Field(default=None, ge=0, le=ledger.MAX_MICROS)

    @field_validator("slug")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not SLUG.match(value):
            raise ValueError("must be 2-63 lowercase letters, digits or dashes, starting with a letter or digit")
        return value

    @field_validator("owner_email")
    @classmethod
    def _email(cls, value: str) -> str:
        return valid_email(value)


class Budget(RequestBody):
    limit_micros: int | None = Field(ge=0, le=ledger.MAX_MICROS)


def new_invitation(rt: Runtime, session, org: Org, email: str, role: str) -> tuple[Invitation, str]:
    token = "inv_" + new_opaque_token()
    invitation = Invitation(id=new_id("inv"), token_hash=sha256_hex(token), org_id=org.id, email=email, role=role,
                            expires_at=utcnow() + timedelta(seconds=rt.settings.invitation_ttl_seconds))
    session.add(invitation)
    return invitation, token


class _SlugTaken(Exception):
    pass


@router.post("/admin/orgs", status_code=201)
def create_org(body: NewOrg, rt: RuntimeDep, principal: Principal = Depends(admin)):
    try:
        with rt.db.transaction() as session:
            if session.scalar(select(Org.id).where(Org.slug == body.slug)) is not None:
                raise _SlugTaken()
            account = ledger.create_account(session)
            org = Org(id=new_id("org"), slug=body.slug, name=body.name, account_id=account.id,
                      budget_limit_micros=body.budget_micros)
            session.add(org)
            session.flush([org])
            invitation, token = new_invitation(rt, session, org, body.owner_email, "owner")
            audit.record(session, principal.actor, "org.create", target=f"org:{org.slug}", org=org.slug,
                         details={"owner_email": body.owner_email, "budget_micros": body.budget_micros})
            result = org_json(org)
    except _SlugTaken:  # audited after the transaction above ended: deny() writes in one of its own
        raise deny(rt, 409, "org_exists", f"Org '{body.slug}' already exists.", actor=principal.actor,
                   action="org.create", target=f"org:{body.slug}") from None
    result["owner_invitation"] = {"id": invitation.id, "email": body.owner_email, "role": "owner", "token": token}
    return JSONResponse(result, status_code=201)


@router.get("/orgs/{slug}")
def get_org(slug: str, rt: RuntimeDep, principal: Principal = Depends(user)):
    org, role = org_for_member(rt, principal, slug, "org.read")
    return {**org_json(org), "your_role": role}


@router.put("/orgs/{slug}/budget")
def set_budget(slug: str, body: Budget, rt: RuntimeDep, principal: Principal = Depends(user)):
    org, _ = org_for_member(rt, principal, slug, "budget.update")
    with rt.db.transaction() as session:
        session.execute(update(Org).where(Org.id == org.id).values(budget_limit_micros=body.limit_micros))
        audit.record(session, principal.actor, "budget.update", target=f"org:{slug}", org=slug,
                     details={"from_micros": org.budget_limit_micros, "to_micros": body.limit_micros})
        org = session.get(Org, org.id)
        account = session.get(Account, org.account_id)
        return usage_json(org, account)


@router.get("/orgs/{slug}/usage")
def get_usage(slug: str, rt: RuntimeDep, principal: Principal = Depends(user)):
    org, _ = org_for_member(rt, principal, slug, "usage.read")
    with rt.db.transaction() as session:
        ledger.expire_due(session, account_id=org.account_id)
        return usage_json(org, session.get(Account, org.account_id))
