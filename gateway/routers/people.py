"""People in an org: invitations, acceptance, listing, role changes and removal."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from pydantic import AfterValidator, Field, field_validator
from sqlalchemy import func, select, update

from gateway import audit
from gateway.audit import Actor
from gateway.bodies import RequestBody
from gateway.errors import ApiError
from gateway.models import Invitation, Membership, Org, User, utcnow
from gateway.permissions import ROLES, outranks_or_equals
from gateway.principals import Principal, deny, user
from gateway.routers.orgs import new_invitation, valid_email
from gateway.runtime import Runtime, RuntimeDep
from gateway.security import hash_password, new_id, sha256_hex, verify_password
from gateway.services.ledger import as_utc
from gateway.services.orgs import lock_org, not_in_org, org_for_member

router = APIRouter()


def valid_role(value: str) -> str:
    if value not in ROLES:
        raise ValueError(f"must be one of {', '.join(ROLES)}")
    return value


Role = Annotated[str, AfterValidator(valid_role)]


class NewInvitation(RequestBody):
    email: str
    role: Role

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return valid_email(value)



class Acceptance(RequestBody):
    name: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=8, max_length=1000)


class RoleChange(RequestBody):
    role: Role



@router.post("/orgs/{slug}/invitations", status_code=201)
def invite(slug: str, body: NewInvitation, rt: RuntimeDep, principal: Principal = Depends(user)):
    org, role = org_for_member(rt, principal, slug, "members.invite")
    if not outranks_or_equals(role, body.role):
        raise deny(rt, 403, "forbidden", f"Forbidden: a {role} cannot invite someone as {body.role} in org "
                   f"'{slug}'.", actor=principal.actor, action="members.invite", target=f"org:{slug}", org=slug)
    with rt.db.transaction() as session:
        invitation, token = new_invitation(rt, session, org, body.email, body.role)
        audit.record(session, principal.actor, "members.invite", target=f"invitation:{invitation.id}", org=slug,
                     details={"email": body.email, "role": body.role})
    return JSONResponse({"id": invitation.id, "email": body.email, "role": body.role, "token": token,
                         "expires_at": as_utc(invitation.expires_at).isoformat()}, status_code=201)


@router.post("/invitations/{token}/accept")
def accept(token: str, body: Acceptance, rt: RuntimeDep):
    with rt.db.transaction() as session:
        invitation = session.scalar(select(Invitation).where(Invitation.token_hash == sha256_hex(token)))
        problem = None
        if invitation is None:
            problem = (404, "invitation_not_found", "This invitation does not exist.")
        elif invitation.accepted_at is not None:
            problem = (409, "invitation_used", "This invitation was already accepted.")
        elif as_utc(invitation.expires_at) <= utcnow():
            problem = (410, "invitation_expired", "This invitation has expired; ask for a new one.")
        if problem is None:
            org = session.get(Org, invitation.org_id)
            existing = session.scalar(select(User).where(User.email == invitation.email))
            if existing is not None and not verify_password(body.password, existing.password_hash):
                problem = (403, "forbidden", f"An account for {invitation.email} exists; accept with its password.")
        if problem is None:
            account_user = existing or User(id=new_id("usr"), email=invitation.email, name=body.name,
                                            password_hash=hash_password(body.password))
            session.add(account_user)
            session.flush([account_user])
            if session.get(Membership, (org.id, account_user.id)) is None:
                session.add(Membership(org_id=org.id, user_id=account_user.id, role=invitation.role))
            invitation.accepted_at = utcnow()
            audit.record(session, Actor("user", account_user.id), "invitation.accept",
                         target=f"invitation:{invitation.id}", org=org.slug, details={"role": invitation.role})
            return {"user_id": account_user.id, "email": account_user.email, "org": org.slug,
                    "role": invitation.role}
    status, code, message = problem
    target = f"invitation:{invitation.id}" if invitation is not None else "POST /invitations/{token}/accept"
    raise deny(rt, status, code, message, actor=audit.ANONYMOUS, action="invitation.accept", target=target,
               org=org.slug if invitation is not None and problem[0] == 403 else None)


@router.get("/orgs/{slug}/members")
def list_members(slug: str, rt: RuntimeDep, principal: Principal = Depends(user)):
    org, _ = org_for_member(rt, principal, slug, "members.list")
    with rt.db.sessions() as session:
        rows = session.execute(select(User, Membership.role).join(Membership, Membership.user_id == User.id)
                               .where(Membership.org_id == org.id).order_by(User.email)).all()
    return {"members": [{"user_id": u.id, "email": u.email, "name": u.name, "role": role} for u, role in rows]}


def _owners(session, org_id: str) -> int:
    return session.scalar(select(func.count()).select_from(Membership)
                          .where(Membership.org_id == org_id, Membership.role == "owner"))


def _not_a_member(slug: str, user_id: str) -> tuple[int, str, str]:
    return 404, "member_not_found", f"User '{user_id}' is not a member of org '{slug}'."


def _last_owner(slug: str, user_id: str) -> tuple[int, str, str]:
    return (409, "last_owner", f"Refused: user '{user_id}' is the last owner of org '{slug}'; make someone else "
            f"owner first.")


def _refuse(rt: Runtime, principal: Principal, problem: tuple[int, str, str], action: str, slug: str,
            user_id: str) -> ApiError:
    status, code, message = problem
    if status == 404:
        return not_in_org(rt, principal, code=code, message=message, action=action, target=f"user:{user_id}",
                          org=slug)
    return deny(rt, status, code, message, actor=principal.actor, action=action, target=f"user:{user_id}", org=slug)


@router.patch("/orgs/{slug}/members/{user_id}")
def change_role(slug: str, user_id: str, body: RoleChange, rt: RuntimeDep, principal: Principal = Depends(user)):
    org, _ = org_for_member(rt, principal, slug, "members.change_role")
    problem = None
    with rt.db.transaction() as session:
        lock_org(session, org.id)  # two owners stepping down at once must not leave the org without one
        membership = session.get(Membership, (org.id, user_id))
        if membership is None:
            problem = _not_a_member(slug, user_id)
        elif membership.role == "owner" and body.role != "owner" and _owners(session, org.id) <= 1:
            problem = _last_owner(slug, user_id)
        else:
            before = membership.role
            session.execute(update(Membership).where(Membership.org_id == org.id, Membership.user_id == user_id)
                            .values(role=body.role))
            audit.record(session, principal.actor, "members.change_role", target=f"user:{user_id}", org=slug,
                         details={"from": before, "to": body.role})
            return {"user_id": user_id, "role": body.role}
    raise _refuse(rt, principal, problem, "members.change_role", slug, user_id)


@router.delete("/orgs/{slug}/members/{user_id}", status_code=204)
def remove_member(slug: str, user_id: str, rt: RuntimeDep, principal: Principal = Depends(user)):
    org, role = org_for_member(rt, principal, slug, "members.remove")
    problem = None
    with rt.db.transaction() as session:
        lock_org(session, org.id)
        membership = session.get(Membership, (org.id, user_id))
        if membership is None:
            problem = _not_a_member(slug, user_id)
        elif membership.role == "owner" and role != "owner":
            problem = (403, "forbidden", f"Forbidden: a {role} cannot remove an owner of org '{slug}'.")
        elif membership.role == "owner" and _owners(session, org.id) <= 1:
            problem = _last_owner(slug, user_id)
        else:
            target_role = membership.role
            session.delete(membership)
            audit.record(session, principal.actor, "members.remove", target=f"user:{user_id}", org=slug,
                         details={"role": target_role})
            return Response(status_code=204)
    raise _refuse(rt, principal, problem, "members.remove", slug, user_id)
