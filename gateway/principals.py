"""Who is calling: dependencies that turn a bearer credential into a principal, or refuse with an audited 401."""
from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from sqlalchemy import select

from gateway import audit
from gateway.audit import Actor
from gateway.errors import ApiError
from gateway.models import ApiKey, Org, User
from gateway.runtime import Runtime, RuntimeDep
from gateway.throttle import Throttled, client_address
from gateway.security import (ACCESS_TYP, ADMIN_AUDIENCE, SERVICE_AUDIENCE, TokenError, sha256_hex,
                              verify_shared_secret_token, verify_user_token)


@dataclass(frozen=True)
class Principal:
    actor: Actor
    claims: dict | None = None
    org_id: str | None = None  # API keys belong to one org
    org_slug: str | None = None
    key_id: str | None = None


@dataclass(frozen=True)
class Refusal:
    """A request refused: audited, in a transaction of its own, when it is turned into the error to raise."""
    status: int
    code: str
    message: str
    actor: Actor
    action: str
    target: str | None = None
    org: str | None = None
    headers: dict | None = None
    details: dict | None = None

    def audited(self, rt: Runtime) -> ApiError:
        return deny(rt, self.status, self.code, self.message, actor=self.actor, action=self.action,
                    target=self.target, org=self.org, headers=self.headers, details=self.details)


def deny(rt: Runtime, status: int, code: str, message: str, *, actor: Actor, action: str,
         target: str | None = None, org: str | None = None, headers: dict | None = None,
         details: dict | None = None) -> ApiError:
    """Audit a refusal in its own transaction (the caller's work is rolled back) and return the error to raise.
    A refusal of a caller without credentials past the sampling budget is only counted (gateway/audit.py)."""
    if actor.type == "anonymous" and rt.guards is not None and \
            not rt.guards.refusals.admit(action, client_address()):
        return ApiError(status, code, message, headers=headers)
    with rt.db.transaction() as session:
        audit.record(session, actor, action, target=target, outcome="denied", reason=message, org=org,
                     details=details)
    return ApiError(status, code, message, headers=headers)


def too_many_attempts(rt: Runtime, throttled: Throttled, tries: str, *, actor: Actor, action: str, target: str,
                      org: str | None = None) -> ApiError:
    """429 for a throttled credential try (`tries`: "logins", say); only the first of its burst is audited."""
    headers = {"Retry-After": str(throttled.retry_after)}
    message = throttled.reason(tries)
    if not throttled.audit:
        return ApiError(429, "too_many_attempts", message, headers=headers)
    return deny(rt, 429, "too_many_attempts", message, actor=actor, action=action, target=target, org=org,
                headers=headers, details={"throttled": throttled.scope, "retry_after_seconds": throttled.retry_after,
                                          "client_address": client_address()})


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else ""


def unauthorized(request: Request, action: str, reason: str) -> Refusal:
    return Refusal(401, "unauthorized", f"Authentication failed: {reason}.", audit.ANONYMOUS, action,
                   target=f"{request.method} {request.url.path}",
                   headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def _unauthorized(rt: Runtime, request: Request, action: str, reason: str) -> ApiError:
    return unauthorized(request, action, reason).audited(rt)


def user(request: Request, rt: RuntimeDep) -> Principal:
    token = _bearer(request)
    if token is None:
        raise _unauthorized(rt, request, "auth.user_token", "no bearer access token was sent")
    if token.startswith("tg_"):
        raise _unauthorized(rt, request, "auth.user_token",
                            "an API key is not accepted here (API keys work on /v1/* only); send a user access token")
    try:
        claims = verify_user_token(rt.keyring, token, issuer=rt.settings.issuer, typ=ACCESS_TYP)
    except TokenError as exc:
        raise _unauthorized(rt, request, "auth.user_token", str(exc))
    with rt.db.reading() as conn:  # whether the user still exists: one indexed read, no ORM session or object
        gone = conn.execute(select(User.id).where(User.id == claims["sub"])).first() is None
    if gone:
        raise _unauthorized(rt, request, "auth.user_token", "the token's user no longer exists")
    return Principal(Actor("user", claims["sub"]), claims=claims)


def api_key_token(request: Request) -> str | None:
    """The request's API key as sent, or None when it sent none."""
    token = _bearer(request)
    return token if token and token.startswith("tg_") else None


NO_API_KEY = "an API key (Bearer tg_...) is required"


def api_key_refusal(request: Request, found) -> Refusal | None:
    """Why a key looked up by its hash may not be used (`found`: a row with id, slug, prefix and revoked_at, or None
    when no key has that hash), or None when it may."""
    if found is None:
        return unauthorized(request, "auth.api_key", "the API key is not known")
    if found.revoked_at is not None:
        return Refusal(401, "unauthorized", f"Authentication failed: API key {found.prefix}... was revoked.",
                       Actor("api_key", found.id), "auth.api_key", org=found.slug,
                       target=f"{request.method} {request.url.path}")
    return None


def api_key(request: Request, rt: RuntimeDep) -> Principal:
    token = api_key_token(request)
    if token is None:
        raise _unauthorized(rt, request, "auth.api_key", NO_API_KEY)
    with rt.db.sessions() as session:
        found = session.execute(select(ApiKey.id, ApiKey.org_id, Org.slug, ApiKey.prefix, ApiKey.revoked_at)
                                .join(Org, Org.id == ApiKey.org_id)
                                .where(ApiKey.key_hash == sha256_hex(token))).first()
    refusal = api_key_refusal(request, found)
    if refusal is not None:
        raise refusal.audited(rt)
    return Principal(Actor("api_key", found.id), org_id=found.org_id, org_slug=found.slug, key_id=found.id)


def _shared_secret_principal(request: Request, rt: Runtime, kind: str, secret: str, audience: str,
                             wanted: str) -> Principal:
    """A `kind` caller (service or admin) with an HS256 token signed with `secret` for `audience`."""
    action = f"auth.{kind}_token"
    token = _bearer(request)
    if not token:
        raise _unauthorized(rt, request, action, f"{wanted} is required")
    try:
        claims = verify_shared_secret_token(token, secret=secret, audience=audience,
                                            issuers=rt.settings.service_token_issuers,
                                            max_lifetime_seconds=rt.settings.service_token_max_lifetime_seconds)
    except TokenError as exc:
        raise _unauthorized(rt, request, action, str(exc))
    return Principal(Actor(kind, str(claims.get("sub") or kind)), claims=claims)


def service(request: Request, rt: RuntimeDep) -> Principal:
    return _shared_secret_principal(request, rt, "service", rt.settings.internal_jwt_secret, SERVICE_AUDIENCE,
                                    "a service token (HS256, aud billing-s2s)")


def admin(request: Request, rt: RuntimeDep) -> Principal:
    return _shared_secret_principal(request, rt, "admin", rt.settings.admin_jwt_secret, ADMIN_AUDIENCE,
                                    "an admin token (HS256, aud billing-admin)")
