"""The forged-token corpus, checked offline: the control verifies with the trusted key, and every forgery fails a
verifier that checks what the contract demands (so the corpus cannot pass for the wrong reason)."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import jwt
import pytest

from support.tokens.forgery import FORGERIES, Genuine, forge, resign, unverified
from support.tokens.signing_keys import KeyMaterial

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> KeyMaterial:
    folder = tmp_path_factory.mktemp("keys")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "keygen"), "--out", str(folder), "--force"], check=True,
                   capture_output=True)
    return KeyMaterial(str(folder))


@pytest.fixture(scope="module")
def genuine(keys) -> Genuine:
    now = int(time.time())
    claims = {"iss": "ai-gateway", "aud": "gateway", "sub": "usr_1", "iat": now, "nbf": now, "exp": now + 900,
              "jti": uuid.uuid4().hex, "token_use": "at+jwt"}
    access = jwt.encode(claims, keys.private_pem, algorithm="ES256", headers={"kid": keys.kid, "typ": "at+jwt"})
    refresh = jwt.encode({**claims, "token_use": "refresh+jwt"}, keys.private_pem, algorithm="ES256",
                         headers={"kid": keys.kid, "typ": "refresh+jwt"})
    return Genuine(access, refresh, keys)


def strict_verify(token: str, keys: KeyMaterial) -> dict:
    """What the contract asks of a verifier, in a dozen lines."""
    if not token:
        raise ValueError("no token")
    header = jwt.get_unverified_header(token)
    if header.get("alg") != "ES256" or header.get("typ") != "at+jwt" or header.get("kid") != keys.kid:
        raise ValueError(f"header {header}")
    claims = jwt.decode(token, keys.public_pem, algorithms=["ES256"], audience="gateway", issuer="ai-gateway",
                        options={"require": ["exp", "iat", "nbf", "sub", "aud", "iss", "jti"], "strict_aud": True})
    if claims.get("token_use") != "at+jwt":
        raise ValueError("not an access token")
    return claims


def test_the_control_verifies(genuine, keys):
    assert strict_verify(resign(genuine), keys)["sub"] == "usr_1"


@pytest.mark.parametrize("kind", sorted(FORGERIES))
def test_every_forgery_fails_a_strict_verifier(kind, genuine, keys):
    token = forge(kind, genuine)
    with pytest.raises((ValueError, jwt.PyJWTError)):
        strict_verify(token, keys)


def test_forgeries_change_one_thing_and_keep_the_subject(genuine):
    for kind in ("expired", "not yet valid", "wrong audience", "wrong issuer", "no expiry", "wrong token type"):
        _, claims = unverified(forge(kind, genuine))
        assert claims["sub"] == "usr_1", kind
