"""Rotating the ES256 keys that sign user tokens (platform admin only).

A key moves next -> active -> retiring -> retired, and only forward, except that a retiring key may be made
active again (rolling back a rotation). `next` is published in the JWKS before it signs anything, so relying
parties can fetch it in time; `active` signs; `retiring` still verifies the tokens it signed; `retired` is gone
from the JWKS and its tokens are refused. Every change reloads this process's key ring at once.
"""
from __future__ import annotations

from typing import Callable

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy import select

from gateway import audit
from gateway.audit import Actor
from gateway.models import SigningKey, utcnow
from gateway.principals import Principal, admin, deny
from gateway.runtime import Runtime, RuntimeDep
from gateway.security import generate_signing_key, public_jwk
from gateway.services.ledger import as_utc

router = APIRouter(prefix="/admin/signing-keys")


def key_json(key: SigningKey) -> dict:
    """A signing key as operators see it: never its private half."""
    return {"kid": key.kid, "state": key.state,
            "created_at": as_utc(key.created_at).isoformat() if key.created_at else None,
            "retired_at": as_utc(key.retired_at).isoformat() if key.retired_at else None,
            "public_jwk": public_jwk(key.public_pem, key.kid)}


def _all_locked(session) -> dict[str, SigningKey]:
    """Every signing key, locked for this transaction so two rotations cannot interleave."""
    return {k.kid: k for k in session.scalars(select(SigningKey).with_for_update()).all()}


@router.get("")
def list_keys(rt: RuntimeDep, principal: Principal = Depends(admin)):
    with rt.db.sessions() as session:
        keys = session.scalars(select(SigningKey).order_by(SigningKey.created_at, SigningKey.kid)).all()
        return {"keys": [key_json(k) for k in keys]}


@router.post("", status_code=201)
def publish(rt: RuntimeDep, principal: Principal = Depends(admin)):
    kid, private_pem, public_pem = generate_signing_key()
    with rt.db.transaction() as session:
        key = SigningKey(kid=kid, private_key_sealed=rt.keyring.sealed(kid, private_pem), public_pem=public_pem,
                         state="next", created_at=utcnow())
        session.add(key)
        audit.record(session, principal.actor, "signing_keys.publish", target=f"signing_key:{kid}")
        result = key_json(key)
    rt.keyring.reload()
    return JSONResponse(result, status_code=201)


def _change_key(rt: Runtime, principal: Principal, kid: str, action: str, change: Callable) -> dict:
    """`change(session, keys, key, actor, action)` on the locked keys answers (problem, result): a problem is
    refused (audited once this transaction has ended), a result is returned once this process's key ring has
    reloaded."""
    with rt.db.transaction() as session:
        keys = _all_locked(session)
        key = keys.get(kid)
        if key is None:
            problem, result = (404, "signing_key_not_found", f"Signing key '{kid}' does not exist."), None
        else:
            problem, result = change(session, keys, key, principal.actor, action)
    if problem is not None:
        raise deny(rt, *problem, actor=principal.actor, action=action, target=f"signing_key:{kid}")
    rt.keyring.reload()
    return result


def _activate(session, keys: dict[str, SigningKey], key: SigningKey, actor: Actor, action: str):
    if key.state == "retired":
        return (409, "signing_key_retired", f"Refused: signing key '{key.kid}' is retired and cannot sign again; "
                f"publish a new key instead."), None
    previous = [k for k in keys.values() if k.state == "active" and k.kid != key.kid]
    for old in previous:
        old.state = "retiring"
    changed = key.state != "active"
    key.state = "active"
    audit.record(session, actor, action, target=f"signing_key:{key.kid}",  # once per request
                 reason=None if changed else "the key already signed; nothing changed",
                 details={"previous": [k.kid for k in previous]})
    return None, {**key_json(key), "previous": [{"kid": k.kid, "state": k.state} for k in previous]}


def _retire(session, keys: dict[str, SigningKey], key: SigningKey, actor: Actor, action: str):
    if key.state == "active":
        return (409, "signing_key_active", f"Refused: signing key '{key.kid}' signs new tokens; activate another "
                f"key before retiring this one."), None
    if key.state == "retired":  # nothing changes, but the request is on record like any other
        audit.record(session, actor, action, target=f"signing_key:{key.kid}",
                     reason="the key was already retired; nothing changed")
    else:
        key.state = "retired"
        key.retired_at = utcnow()
        audit.record(session, actor, action, target=f"signing_key:{key.kid}")
    return None, key_json(key)


@router.post("/{kid}/activate")
def activate(kid: str, rt: RuntimeDep, principal: Principal = Depends(admin)):
    return _change_key(rt, principal, kid, "signing_keys.activate", _activate)


@router.post("/{kid}/retire")
def retire(kid: str, rt: RuntimeDep, principal: Principal = Depends(admin)):
    return _change_key(rt, principal, kid, "signing_keys.retire", _retire)
