"""support/tokens/service_tokens.py: each credential phrase makes a token that is wrong in exactly the way it says."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from support.tokens import service_tokens
from support.tokens.signing_keys import ADMIN_AUDIENCE, SERVICE_AUDIENCE, KeyMaterial

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> KeyMaterial:
    folder = tmp_path_factory.mktemp("keys") / "keys"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "keygen"), "--out", str(folder)], check=True)
    return KeyMaterial(str(folder))


def decode(token: str, secret: str, audience: str, **options) -> dict:
    return jwt.decode(token, secret, algorithms=["HS256"], audience=audience, leeway=5, **options)


@pytest.mark.parametrize("kind", ["service", "admin"])
def test_valid_tokens_verify_with_their_own_secret_and_audience_only(keys, kind):
    secret, audience = ((keys.internal_secret, SERVICE_AUDIENCE) if kind == "service"
                        else (keys.admin_secret, ADMIN_AUDIENCE))
    other_secret, other_audience = ((keys.admin_secret, ADMIN_AUDIENCE) if kind == "service"
                                    else (keys.internal_secret, SERVICE_AUDIENCE))
    token = service_tokens.from_words(keys, f"a valid {kind} token").token
    assert decode(token, secret, audience)["sub"] == service_tokens.SUBJECT
    with pytest.raises(jwt.InvalidSignatureError):
        decode(token, other_secret, other_audience)


def test_expired_is_past_any_leeway(keys):
    token = service_tokens.from_words(keys, "an expired service token").token
    with pytest.raises(jwt.ExpiredSignatureError):
        decode(token, keys.internal_secret, SERVICE_AUDIENCE)
    claims = decode(token, keys.internal_secret, SERVICE_AUDIENCE, options={"verify_exp": False})
    assert claims["iat"] < claims["exp"]


def test_malformed_is_not_a_jwt(keys):
    token = service_tokens.from_words(keys, "a malformed admin token").token
    with pytest.raises(jwt.DecodeError):
        decode(token, keys.admin_secret, ADMIN_AUDIENCE)


def test_wrong_secret_fails_only_on_the_signature(keys):
    token = service_tokens.from_words(keys, "a service token signed with the wrong secret").token
    with pytest.raises(jwt.InvalidSignatureError):
        decode(token, keys.internal_secret, SERVICE_AUDIENCE)
    assert jwt.decode(token, options={"verify_signature": False})["aud"] == SERVICE_AUDIENCE


def test_wrong_audience_fails_only_on_the_audience(keys):
    token = service_tokens.from_words(keys, "an admin token for another audience").token
    with pytest.raises(jwt.InvalidAudienceError):
        decode(token, keys.admin_secret, ADMIN_AUDIENCE)


def test_no_token_and_unknown_phrases(keys):
    assert service_tokens.from_words(keys, "no token").token is None
    for words in ("a shiny service token", "an expired service token signed with the wrong secret"):
        with pytest.raises(ValueError):
            service_tokens.from_words(keys, words)
