"""API keys: issued to an org, shown once, stored hashed, revocable."""
from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import Field
from sqlalchemy import select, update

from gateway import audit
from gateway.bodies import RequestBody
from gateway.models import ApiKey, utcnow
from gateway.principals import Principal, user
from gateway.runtime import RuntimeDep
from gateway.security import new_api_key, new_id, sha256_hex
from gateway.services.ledger import as_utc
from gateway.services.orgs import not_in_org, org_for_member

router = APIRouter()


class NewKey(RequestBody):
    name: str = Field(min_length=1, max_length=200)


def key_json(key: ApiKey) -> dict:
    return {"id": key.id, "name": key.name, "prefix": key.prefix, "created_by": key.created_by,
            "created_at": as_utc(key.created_at).isoformat() if key.created_at else None,
            "revoked_at": as_utc(key.revoked_at).isoformat() if key.revoked_at else None}


@router.post("/orgs/{slug}/keys", status_code=201)
def create_key(slug: str, body: NewKey, rt: RuntimeDep, principal: Principal = Depends(user)):
    org, _ = org_for_member(rt, principal, slug, "keys.create")
    secret, prefix = new_api_key()
    with rt.db.transaction() as session:
        key = ApiKey(id=new_id("key"), org_id=org.id, name=body.name, prefix=prefix, key_hash=sha256_hex(secret),
                     created_by=principal.actor.id, created_at=utcnow())
        session.add(key)
        audit.record(session, principal.actor, "keys.create", target=f"key:{key.id}", org=slug,
                     details={"name": body.name, "prefix": prefix})
    return JSONResponse({**key_json(key), "key": secret}, status_code=201)


@router.get("/orgs/{slug}/keys")
def list_keys(slug: str, rt: RuntimeDep, principal: Principal = Depends(user)):
    org, _ = org_for_member(rt, principal, slug, "keys.list")
    with rt.db.sessions() as session:
        keys = session.scalars(select(ApiKey).where(ApiKey.org_id == org.id).order_by(ApiKey.created_at)).all()
    return {"keys": [key_json(k) for k in keys]}


@router.delete("/orgs/{slug}/keys/{key_id}")
def revoke_key(slug: str, key_id: str, rt: RuntimeDep, principal: Principal = Depends(user)):
    org, _ = org_for_member(rt, principal, slug, "keys.revoke")
    with rt.db.transaction() as session:
        key = session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.org_id == org.id))
        if key is not None:
            if key.revoked_at is None:
                session.execute(update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                                .values(revoked_at=utcnow()))
                audit.record(session, principal.actor, "keys.revoke", target=f"key:{key_id}", org=slug,
                             details={"prefix": key.prefix})
            else:  # nothing changes, but the request is on record like any other
                audit.record(session, principal.actor, "keys.revoke", target=f"key:{key_id}", org=slug,
                             reason="the key was already revoked; nothing changed",
                             details={"prefix": key.prefix, "already_revoked": True})
            session.refresh(key)
            return key_json(key)
    # Same answer whether the id belongs to another org or to no key at all.
    raise not_in_org(rt, principal, code="key_not_found", message=f"Key '{key_id}' was not found in org '{slug}'.",
                     action="keys.revoke", target=f"key:{key_id}", org=slug)
