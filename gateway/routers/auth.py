"""Login, refresh-token rotation and the caller's own profile."""
from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends
from pydantic import Field
from sqlalchemy import insert, select, update

from gateway import audit
from gateway.audit import Actor
from gateway.bodies import RequestBody
from gateway.models import Membership, Org, RefreshToken, User, utcnow
from gateway.principals import Principal, deny, too_many_attempts, user
from gateway.runtime import Runtime, RuntimeDep
from gateway.security import (ACCESS_TYP, REFRESH_TYP, TokenError, burn_password_check, issue_user_token, new_id,
                              verify_password, verify_user_token)
from gateway.services.ledger import as_utc

router = APIRouter(prefix="/auth")
NEW_REFRESH_TOKEN = insert(RefreshToken.__table__)


class Login(RequestBody):
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1000)


class Refresh(RequestBody):
    refresh_token: str = Field(min_length=1, max_length=4000)


def issue_tokens(rt: Runtime, session, user_id: str, family_id: str) -> dict:
    """A new pair (access and refresh token) for a login, a refresh or an invitation's acceptance."""
    access, _ = issue_user_token(rt.keyring, issuer=rt.settings.issuer, user_id=user_id, typ=ACCESS_TYP,
                                 ttl_seconds=rt.settings.access_token_ttl_seconds)
    refresh, claims = issue_user_token(rt.keyring, issuer=rt.settings.issuer, user_id=user_id, typ=REFRESH_TYP,
                                       ttl_seconds=rt.settings.refresh_token_ttl_seconds,
                                       extra={"family": family_id})
    # A plain INSERT, as audit events are written: nothing of the token is read back in this session, and the ORM's
    # unit of work cost a login a quarter of a millisecond of CPU.
    session.connection().execute(NEW_REFRESH_TOKEN, {
        "id": claims["jti"], "user_id": user_id, "family_id": family_id,
        "expires_at": utcnow() + timedelta(seconds=rt.settings.refresh_token_ttl_seconds)})
    return {"access_token": access, "token_type": "Bearer", "expires_in": rt.settings.access_token_ttl_seconds,
            "refresh_token": refresh}


@router.post("/login")
def login(body: Login, rt: RuntimeDep):
    email = body.email.strip().lower()
    tried = f"login:{email}"
    throttled = rt.guards.check(tried)
    if throttled is not None:  # refused before any row is read or any password hashed
        raise too_many_attempts(rt, throttled, "logins", actor=Actor("anonymous", email), action="auth.login",
                                target=f"email:{email}")
    with rt.db.sessions() as session:
        found = session.execute(select(User.id, User.password_hash).where(User.email == email)).first()
    # The password is checked outside any transaction: a hash holds no lock and no pooled connection.
    if found is None:
        burn_password_check(body.password, rt.settings.password_hash_cost)  # as slow as a wrong password
    elif verify_password(body.password, found.password_hash):
        rt.guards.succeeded(tried)
        with rt.db.transaction() as session:
            tokens = issue_tokens(rt, session, found.id, new_id("fam"))
            audit.record(session, Actor("user", found.id), "auth.login", target=f"user:{found.id}")
        return tokens
    rt.guards.failed(tried)
    raise deny(rt, 401, "invalid_credentials", "Login failed: the email or password is wrong.",
               actor=Actor("anonymous", email), action="auth.login",
               target=f"user:{found.id}" if found is not None else f"email:{email}")


@router.post("/refresh")
def refresh(body: Refresh, rt: RuntimeDep):
    try:
        claims = verify_user_token(rt.keyring, body.refresh_token, issuer=rt.settings.issuer, typ=REFRESH_TYP)
    except TokenError as exc:
        raise deny(rt, 401, "unauthorized", f"Refresh failed: {exc}.", actor=audit.ANONYMOUS, action="auth.refresh",
                   target="POST /auth/refresh")
    with rt.db.transaction() as session:
        now = utcnow()
        used = session.execute(update(RefreshToken).where(
            RefreshToken.id == claims["jti"], RefreshToken.used_at.is_(None), RefreshToken.revoked_at.is_(None),
            RefreshToken.expires_at > now).values(used_at=now))
        if used.rowcount == 1:
            tokens = issue_tokens(rt, session, claims["sub"], claims.get("family") or new_id("fam"))
            audit.record(session, Actor("user", claims["sub"]), "auth.refresh", target=f"user:{claims['sub']}")
            return tokens
        # A refresh token presented twice means it leaked: revoke its whole family.
        session.execute(update(RefreshToken).where(RefreshToken.family_id == claims.get("family"),
                                                   RefreshToken.revoked_at.is_(None)).values(revoked_at=now))
    raise deny(rt, 401, "refresh_token_reused",
               "Refresh failed: this refresh token was already used or revoked; log in again.",
               actor=Actor("user", claims["sub"]), action="auth.refresh", target=f"user:{claims['sub']}")


@router.get("/me")
def me(rt: RuntimeDep, principal: Principal = Depends(user)):
    with rt.db.sessions() as session:
        found = session.get(User, principal.actor.id)
        orgs = session.execute(select(Org.slug, Membership.role).join(Membership, Membership.org_id == Org.id)
                               .where(Membership.user_id == found.id).order_by(Org.slug)).all()
    return {"id": found.id, "email": found.email, "name": found.name,
            "orgs": [{"slug": slug, "role": role} for slug, role in orgs],
            "created_at": as_utc(found.created_at).isoformat()}
