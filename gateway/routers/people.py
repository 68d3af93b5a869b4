"""People in an org: invitations, acceptance, listing, role changes and removal."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from pydantic import AfterValidator, Field, field_validator
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from gateway import audit
from gateway.audit import Actor
from gateway.bodies import RequestBody
from gateway.errors import ApiError
from gateway.models import ApiKey, Invitation, Membership, Org, User, utcnow
from gateway.permissions import ROLES, outranks_or_equals
from gateway.principals import Principal, deny, too_many_attempts, user
from gateway.routers.auth import issue_tokens
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
        invitation.invited_by = principal.actor.id  # removing the inviter revokes it
        audit.record(session, principal.actor, "members.invite", target=f"invitation:{invitation.id}", org=slug,
                     details={"email": body.email, "role": body.role})
    return JSONResponse({"id": invitation.id, "email": body.email, "role": body.role, "token": token,
                         "expires_at": as_utc(invitation.expires_at).isoformat()}, status_code=201)


# ---- accepting an invitation ------------------------------------------------------------------------------------
# Whoever holds the token may accept it. For an email that already has an account, the account's password is
# needed: it is checked outside any transaction, each try is first claimed on the invitation (so parallel guesses
# cannot exceed INVITATION_MAX_FAILED_ATTEMPTS), and a wrong one says nothing about the account or its orgs. Tries
# are throttled per invitation and per client address like logins (gateway/throttle.py).

UNKNOWN_INVITATION = "POST /invitations/{token}/accept"  # the audit target: a path token is never written down


def _why_unusable(invitation: Invitation | None, rt: Runtime) -> tuple[int, str, str] | None:
    if invitation is None:
        return 404, "invitation_not_found", "This invitation does not exist."
    if invitation.accepted_at is not None:
        return 409, "invitation_used", "This invitation was already accepted."
    used_up = invitation.failed_attempts >= rt.settings.invitation_max_failed_attempts
    if invitation.revoked_at is not None or used_up:
        why = "too many wrong passwords were tried on it" if used_up else "it was revoked"
        return 410, "invitation_revoked", f"This invitation can no longer be accepted: {why}; ask for a new one."
    if as_utc(invitation.expires_at) <= utcnow():
        return 410, "invitation_expired", "This invitation has expired; ask for a new one."
    return None


def _open(invitation_id: str):
    """The invitation may still be accepted (not accepted, not revoked)."""
    return (Invitation.id == invitation_id, Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None))


def _claim_attempt(rt: Runtime, invitation: Invitation) -> bool:
    """Count a password try on the invitation before it is checked (a right one is given back), so parallel tries
    cannot exceed the limit; False when none is left."""
    with rt.db.transaction() as session:
        claimed = session.execute(update(Invitation).where(
            *_open(invitation.id), Invitation.failed_attempts < rt.settings.invitation_max_failed_attempts)
            .values(failed_attempts=Invitation.failed_attempts + 1))
        return claimed.rowcount == 1


def _attempts_left(rt: Runtime, invitation: Invitation) -> int:
    """After a wrong password: the tries left, the invitation revoked when none is."""
    limit = rt.settings.invitation_max_failed_attempts
    with rt.db.transaction() as session:
        session.execute(update(Invitation).where(*_open(invitation.id), Invitation.failed_attempts >= limit)
                        .values(revoked_at=utcnow()))
        return max(0, limit - session.get(Invitation, invitation.id).failed_attempts)


def _refuse_acceptance(rt: Runtime, tried: str, invitation: Invitation | None, slug: str | None,
                       problem: tuple[int, str, str], details: dict | None = None) -> ApiError:
    rt.guards.failed(tried)
    status, code, message = problem
    target = f"invitation:{invitation.id}" if invitation is not None else UNKNOWN_INVITATION
    return deny(rt, status, code, message, actor=audit.ANONYMOUS, action="invitation.accept", target=target,
                org=slug if status == 403 else None, details=details)


def _current(rt: Runtime, invitation_id: str) -> Invitation | None:
    with rt.db.sessions() as session:
        return session.get(Invitation, invitation_id)


@router.post("/invitations/{token}/accept")
def accept(token: str, body: Acceptance, rt: RuntimeDep):
    token_hash = sha256_hex(token)
    tried = f"invitation:{token_hash}"
    throttled = rt.guards.check(tried)
    if throttled is not None:
        raise too_many_attempts(rt, throttled, "invitation acceptances", actor=audit.ANONYMOUS,
                                action="invitation.accept", target=UNKNOWN_INVITATION)
    with rt.db.sessions() as session:
        found = session.execute(select(Invitation, Org.slug).join(Org, Org.id == Invitation.org_id)
                                .where(Invitation.token_hash == token_hash)).first()
        invitation, slug = found if found is not None else (None, None)
        existing = None if invitation is None else session.execute(
            select(User.id, User.password_hash).where(User.email == invitation.email)).first()
    problem = _why_unusable(invitation, rt)
    if problem is not None:
        raise _refuse_acceptance(rt, tried, invitation, slug, problem)
    if existing is not None:
        if not _claim_attempt(rt, invitation):
            raise _refuse_acceptance(rt, tried, invitation, slug, _why_unusable(_current(rt, invitation.id), rt))
        if not verify_password(body.password, existing.password_hash):
            left = _attempts_left(rt, invitation)
            raise _refuse_acceptance(rt, tried, invitation, slug, (
                403, "forbidden", f"This invitation cannot be accepted with the password given; {left} more "
                f"attempt(s) before it is used up."), details={"attempts_left": left})
        password_hash = None
    else:
        password_hash = hash_password(body.password, rt.settings.password_hash_cost)  # outside any transaction
    try:
        with rt.db.transaction() as session:
            taken = session.execute(update(Invitation).where(*_open(invitation.id)).values(
                accepted_at=utcnow(),
                failed_attempts=Invitation.failed_attempts - (1 if existing is not None else 0))
                .execution_options(synchronize_session=False))  # no invitation is loaded in this session
            if taken.rowcount == 1:
                user_id = existing.id if existing is not None else new_id("usr")
                if existing is None:
                    session.add(User(id=user_id, email=invitation.email, name=body.name, password_hash=password_hash))
                    session.flush()
                # (a person just made belongs to no org yet: no need to look)
                if existing is None or session.get(Membership, (invitation.org_id, user_id)) is None:
                    session.add(Membership(org_id=invitation.org_id, user_id=user_id, role=invitation.role))
                audit.record(session, Actor("user", user_id), "invitation.accept",
                             target=f"invitation:{invitation.id}", org=slug, details={"role": invitation.role})
                # Accepting signs the person in, as a login would: they just gave the account's password.
                tokens = issue_tokens(rt, session, user_id, new_id("fam"))
    except IntegrityError:  # the same email's account was made by a parallel acceptance
        taken = None
    if taken is None or taken.rowcount != 1:
        raise _refuse_acceptance(rt, tried, invitation, slug,
                                 _why_unusable(_current(rt, invitation.id), rt) or (
                                     409, "invitation_used", "This invitation was already accepted."))
    rt.guards.succeeded(tried)
    return {"user_id": user_id, "email": invitation.email, "org": slug, "role": invitation.role, **tokens}


# ---- listing and revoking invitations ---------------------------------------------------------------------------

def invitation_state(invitation: Invitation) -> str:
    if invitation.accepted_at is not None:
        return "accepted"
    if invitation.revoked_at is not None:
        return "revoked"
    return "expired" if as_utc(invitation.expires_at) <= utcnow() else "pending"


def invitation_json(invitation: Invitation) -> dict:
    """An invitation as admins see it: never its token (only a hash of it is kept)."""
    stamp = lambda value: as_utc(value).isoformat() if value else None  # noqa: E731
    return {"id": invitation.id, "email": invitation.email, "role": invitation.role,
            "invited_by": invitation.invited_by, "state": invitation_state(invitation),
            "created_at": stamp(invitation.created_at), "expires_at": stamp(invitation.expires_at),
            "accepted_at": stamp(invitation.accepted_at), "revoked_at": stamp(invitation.revoked_at),
            "failed_attempts": invitation.failed_attempts}


@router.get("/orgs/{slug}/invitations")
def list_invitations(slug: str, rt: RuntimeDep, principal: Principal = Depends(user)):
    org, _ = org_for_member(rt, principal, slug, "invitations.list")
    with rt.db.sessions() as session:
        found = session.scalars(select(Invitation).where(Invitation.org_id == org.id)
                                .order_by(Invitation.created_at, Invitation.id)).all()
    return {"invitations": [invitation_json(i) for i in found]}


@router.delete("/orgs/{slug}/invitations/{invitation_id}")
def revoke_invitation(slug: str, invitation_id: str, rt: RuntimeDep, principal: Principal = Depends(user)):
    org, role = org_for_member(rt, principal, slug, "invitations.revoke")
    action, target = "invitations.revoke", f"invitation:{invitation_id}"
    problem = None
    with rt.db.transaction() as session:
        invitation = session.scalar(select(Invitation).where(Invitation.id == invitation_id,
                                                             Invitation.org_id == org.id))
        if invitation is None:
            problem = (404, "invitation_not_found", f"Invitation '{invitation_id}' was not found in org '{slug}'.")
        elif not outranks_or_equals(role, invitation.role):
            problem = (403, "forbidden", f"Forbidden: a {role} cannot revoke an invitation as {invitation.role} in "
                       f"org '{slug}'.")
        elif invitation.accepted_at is not None:
            problem = (409, "invitation_used", f"Invitation '{invitation_id}' was already accepted; remove the "
                       f"member instead.")
        else:
            already = invitation.revoked_at is not None
            if not already:
                invitation.revoked_at = utcnow()
            audit.record(session, principal.actor, action, target=target, org=slug,
                         reason="the invitation was already revoked; nothing changed" if already else None,
                         details={"email": invitation.email, "role": invitation.role})
            return invitation_json(invitation)
    status, code, message = problem
    if status == 404:
        raise not_in_org(rt, principal, code=code, message=message, action=action, target=target, org=slug)
    raise deny(rt, status, code, message, actor=principal.actor, action=action, target=target, org=slug)


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


def _revoke_what_they_issued(session, org_id: str, user_id: str) -> dict:
    """A removed member's reach goes with them: the org's pending invitations they issued and the API keys they
    created are revoked (not transferred: whoever stays can issue new ones, audited as their own)."""
    now = utcnow()
    invitations = session.scalars(select(Invitation.id).where(
        Invitation.org_id == org_id, Invitation.invited_by == user_id, Invitation.accepted_at.is_(None),
        Invitation.revoked_at.is_(None))).all()
    keys = session.scalars(select(ApiKey.id).where(ApiKey.org_id == org_id, ApiKey.created_by == user_id,
                                                   ApiKey.revoked_at.is_(None))).all()
    if invitations:
        session.execute(update(Invitation).where(Invitation.id.in_(invitations)).values(revoked_at=now))
    if keys:
        session.execute(update(ApiKey).where(ApiKey.id.in_(keys)).values(revoked_at=now))
    return {"revoked_invitations": sorted(invitations), "revoked_keys": sorted(keys)}


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
            revoked = _revoke_what_they_issued(session, org.id, user_id)
            audit.record(session, principal.actor, "members.remove", target=f"user:{user_id}", org=slug,
                         details={"role": target_role, **revoked})
            return Response(status_code=204)
    raise _refuse(rt, principal, problem, "members.remove", slug, user_id)
