"""User tokens and signing-key rotation, against a real SQLite database (no HTTP)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest

from gateway.audit import Actor
from gateway.db import Database
from gateway.errors import ApiError
from gateway.migrate import upgrade
from gateway.models import AuditEvent, SigningKey
from gateway.principals import Principal
from gateway.routers import signing_keys
from gateway.runtime import Runtime
from gateway.secrets_at_rest import Sealer, new_key
from gateway.security import (ACCESS_TYP, REFRESH_TYP, KeyRing, TokenError, generate_signing_key, issue_user_token,
                              verify_user_token)
from gateway.settings import Settings

ISSUER = "ai-gateway"
ADMIN = Principal(Actor("admin", "pytest"))
SEALER = Sealer([new_key()])


@pytest.fixture()
def rt(tmp_path):
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    upgrade(url)
    db = Database(url)
    kid, private_pem, public_pem = generate_signing_key()
    with db.transaction() as session:
        session.add(SigningKey(kid=kid, private_key_sealed=SEALER.seal(private_pem, bound_to=kid),
                               public_pem=public_pem, state="active"))
    settings = Settings(database_url=url, keys_dir=None, internal_jwt_secret="i" * 64, admin_jwt_secret="a" * 64,
                        config_repo=None)
    runtime = Runtime(settings=settings, db=db, keyring=KeyRing(db, SEALER))
    runtime.keyring.reload()
    yield runtime
    db.engine.dispose()


def access(rt: Runtime, **extra) -> str:
    return issue_user_token(rt.keyring, issuer=ISSUER, user_id="usr_1", typ=ACCESS_TYP, ttl_seconds=900,
                            extra=extra)[0]


def verify(rt: Runtime, token: str, typ: str = ACCESS_TYP) -> dict:
    return verify_user_token(rt.keyring, token, issuer=ISSUER, typ=typ)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def resigned(rt: Runtime, token: str, header: dict | None = None, **changes) -> str:
    """The token's claims, changed, signed again with the active key."""
    key = rt.keyring.active()
    claims = {**jwt.decode(token, options={"verify_signature": False}), **changes}
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key.private_pem, algorithm="ES256",
                      headers={"kid": key.kid, "typ": ACCESS_TYP, **(header or {})})


# ---- tokens ------------------------------------------------------------------------------------------------------

def test_an_issued_access_token_verifies(rt):
    claims = verify(rt, access(rt))
    assert claims["sub"] == "usr_1" and claims["aud"] == "gateway" and claims["token_use"] == ACCESS_TYP


@pytest.mark.parametrize("change, reason", [
    (dict(aud="another-service"), "audience"),
    (dict(aud=["gateway", "another-service"]), "audience"),
    (dict(iss="someone-else"), "issuer"),
    (dict(exp=int(time.time()) - 60), "expired"),
    (dict(nbf=int(time.time()) + 600), "not valid yet"),
    (dict(exp=None), "'exp'"),
    (dict(nbf=None), "'nbf'"),
    (dict(token_use=REFRESH_TYP), r"not an at\+jwt token"),
])
def test_a_claim_out_of_place_is_refused(rt, change, reason):
    with pytest.raises(TokenError, match=reason):
        verify(rt, resigned(rt, access(rt), **change))


def test_alg_none_and_hs256_with_the_public_key_are_refused(rt):
    token = access(rt)
    header, payload, _ = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    key = rt.keyring.active()
    none_header = b64(json.dumps({"alg": "none", "typ": ACCESS_TYP, "kid": key.kid}).encode())
    with pytest.raises(TokenError, match="algorithm"):
        verify(rt, f"{none_header}.{payload}.")
    hs_header = b64(json.dumps({"alg": "HS256", "typ": ACCESS_TYP, "kid": key.kid}).encode())
    signing_input = f"{hs_header}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(key.public_pem.encode(), signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(TokenError, match="algorithm"):
        verify(rt, f"{signing_input}.{b64(mac)}")


def test_a_tampered_payload_and_a_missing_kid_are_refused(rt):
    token = access(rt)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    longer = b64(json.dumps({**claims, "exp": claims["exp"] + 86400}).encode())
    with pytest.raises(TokenError, match="signature"):
        verify(rt, f"{header}.{longer}.{signature}")
    no_kid = b64(json.dumps({"alg": "ES256", "typ": ACCESS_TYP}).encode())
    with pytest.raises(TokenError, match="kid"):
        verify(rt, f"{no_kid}.{payload}.{signature}")


def test_a_refresh_token_is_not_an_access_token_and_vice_versa(rt):
    refresh = issue_user_token(rt.keyring, issuer=ISSUER, user_id="usr_1", typ=REFRESH_TYP, ttl_seconds=60)[0]
    with pytest.raises(TokenError, match="type"):
        verify(rt, refresh)
    with pytest.raises(TokenError, match="type"):
        verify(rt, access(rt), typ=REFRESH_TYP)


# ---- the key ring --------------------------------------------------------------------------------------------

def test_unknown_kids_reload_the_ring_at_most_once_per_interval(rt, monkeypatch):
    ring = KeyRing(rt.db, SEALER, miss_reload_interval=60)
    ring.reload()
    reloads = []
    original = ring.reload
    monkeypatch.setattr(ring, "reload", lambda: (reloads.append(1), original())[1])
    for i in range(50):
        assert ring.verifying(f"forged-{i}") is None
    assert reloads == []  # loaded moments ago: no database read per forged kid


def test_an_unknown_kid_reloads_when_the_ring_is_older_than_the_interval(rt):
    ring = KeyRing(rt.db, SEALER, miss_reload_interval=0)
    ring.reload()
    kid, private_pem, public_pem = generate_signing_key()
    with rt.db.transaction() as session:  # published by another process
        session.add(SigningKey(kid=kid, private_key_sealed=SEALER.seal(private_pem, bound_to=kid),
                               public_pem=public_pem, state="retiring"))
    assert ring.verifying(kid) is not None


# ---- rotation through the admin endpoints ------------------------------------------------------------------------

def states(rt: Runtime) -> dict[str, str]:
    return {k["kid"]: k["state"] for k in signing_keys.list_keys(principal=ADMIN, rt=rt)["keys"]}


def publish(rt: Runtime) -> str:
    return json.loads(signing_keys.publish(principal=ADMIN, rt=rt).body)["kid"]


def test_a_published_key_is_in_the_jwks_but_neither_signs_nor_verifies(rt):
    first = rt.keyring.active().kid
    new = publish(rt)
    assert new in {k.kid for k in rt.keyring.published()}
    assert rt.keyring.active().kid == first
    assert rt.keyring.verifying(new) is None
    assert "private" not in json.dumps(signing_keys.list_keys(principal=ADMIN, rt=rt))


def test_rotation_keeps_old_tokens_until_retirement_which_takes_effect_at_once(rt):
    first = rt.keyring.active().kid
    old_token = access(rt)
    new = publish(rt)
    result = signing_keys.activate(new, principal=ADMIN, rt=rt)
    assert result["previous"] == [{"kid": first, "state": "retiring"}]
    assert jwt.get_unverified_header(access(rt))["kid"] == new
    assert verify(rt, old_token)["sub"] == "usr_1"
    signing_keys.retire(first, principal=ADMIN, rt=rt)
    with pytest.raises(TokenError, match="unknown or retired key"):
        verify(rt, old_token)  # no waiting for the cache: this process reloaded on the change
    assert first not in {k.kid for k in rt.keyring.published()}
    assert states(rt) == {first: "retired", new: "active"}


def test_the_signing_key_cannot_be_retired_and_a_retired_key_cannot_sign_again(rt):
    first = rt.keyring.active().kid
    with pytest.raises(ApiError) as refused:
        signing_keys.retire(first, principal=ADMIN, rt=rt)
    assert refused.value.status == 409 and refused.value.code == "signing_key_active"
    new = publish(rt)
    signing_keys.activate(new, principal=ADMIN, rt=rt)
    signing_keys.retire(first, principal=ADMIN, rt=rt)
    with pytest.raises(ApiError) as refused:
        signing_keys.activate(first, principal=ADMIN, rt=rt)
    assert refused.value.status == 409 and refused.value.code == "signing_key_retired"
    with pytest.raises(ApiError) as unknown:
        signing_keys.activate("no-such-kid", principal=ADMIN, rt=rt)
    assert unknown.value.status == 404


def test_a_retiring_key_can_be_made_active_again(rt):
    first = rt.keyring.active().kid
    new = publish(rt)
    signing_keys.activate(new, principal=ADMIN, rt=rt)
    signing_keys.activate(first, principal=ADMIN, rt=rt)
    assert states(rt) == {first: "active", new: "retiring"}


def test_every_rotation_step_and_refusal_is_audited(rt):
    first = rt.keyring.active().kid
    new = publish(rt)
    signing_keys.activate(new, principal=ADMIN, rt=rt)
    signing_keys.retire(first, principal=ADMIN, rt=rt)
    with pytest.raises(ApiError):
        signing_keys.retire(new, principal=ADMIN, rt=rt)
    with rt.db.sessions() as session:
        events = [(e.action, e.outcome, e.target) for e in session.query(AuditEvent).order_by(AuditEvent.id)]
    assert events == [("signing_keys.publish", "allowed", f"signing_key:{new}"),
                      ("signing_keys.activate", "allowed", f"signing_key:{new}"),
                      ("signing_keys.retire", "allowed", f"signing_key:{first}"),
                      ("signing_keys.retire", "denied", f"signing_key:{new}")]
