"""Service and admin tokens (HS256) need an issuer and a bounded lifetime; refusals quote attacker text briefly."""
from __future__ import annotations

import json
import time

import jwt
import pytest

from gateway.security import TokenError, verify_shared_secret_token

SECRET = "s" * 64
AUDIENCE = "billing-s2s"


def token(**changes) -> str:
    now = int(time.time())
    claims = {"iss": "acceptance-suite", "aud": AUDIENCE, "sub": "svc", "iat": now, "exp": now + 300, **changes}
    payload = json.dumps({k: v for k, v in claims.items() if v is not None}).encode()
    return jwt.api_jws.encode(payload, SECRET, algorithm="HS256")  # claims as given, even ones PyJWT would refuse


def verify(value: str, **options) -> dict:
    return verify_shared_secret_token(value, secret=SECRET, audience=AUDIENCE, **options)


def test_a_token_with_an_issuer_and_a_short_life_verifies():
    assert verify(token(), issuers=("acceptance-suite",))["sub"] == "svc"


@pytest.mark.parametrize("changes, why", [
    (dict(iss=None), "lacks the required claim 'iss'"),
    (dict(iat=None), "lacks the required claim 'iat'"),
    (dict(iss=""), "issuer '' is not trusted"),
    (dict(iss=["acceptance-suite"]), "is not trusted"),
    (dict(exp=int(time.time()) + 10 * 365 * 86400), "lifetime (exp - iat) is over the 3600 s allowed"),
])
def test_no_issuer_or_a_long_life_is_refused(changes, why):
    with pytest.raises(TokenError) as refused:
        verify(token(**changes))
    assert why in str(refused.value)


def test_only_the_configured_issuers_are_trusted():
    with pytest.raises(TokenError, match="issuer 'someone-else' is not trusted"):
        verify(token(iss="someone-else"), issuers=("acceptance-suite",))
    assert verify(token(iss="someone-else"))["iss"] == "someone-else"  # no list: any issuer, but one


def test_the_lifetime_bound_is_a_setting():
    long_lived = token(exp=int(time.time()) + 7200)
    with pytest.raises(TokenError, match="over the 3600 s"):
        verify(long_lived)
    assert verify(long_lived, max_lifetime_seconds=7200)["sub"] == "svc"


def test_a_huge_algorithm_name_is_quoted_cut_short():
    header = jwt.utils.base64url_encode(('{"alg":"' + "A" * 5000 + '","typ":"JWT"}').encode()).decode()
    forged = f"{header}.{token().split('.', 1)[1]}"
    with pytest.raises(TokenError) as refused:
        verify(forged)
    assert len(str(refused.value)) < 120 and "…" in str(refused.value)
