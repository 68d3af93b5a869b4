"""Checking the gateway's tokens the way a relying party would: against its published JWKS."""
from __future__ import annotations

import json

import jwt

PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k", "oth")


def verify_with_jwks(token: str, jwks: dict, *, audience: str = "gateway") -> dict:
    """The token's claims if it verifies with a published key; otherwise an AssertionError saying why."""
    header = jwt.get_unverified_header(token)
    keys = {k.get("kid"): k for k in jwks.get("keys", [])}
    if header.get("kid") not in keys:
        raise AssertionError(f"The token's key id {header.get('kid')!r} is not among the published keys "
                             f"{sorted(k for k in keys if k)} (signing drift: the gateway signs with a key it does "
                             f"not publish)")
    public_key = jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(keys[header["kid"]]))
    try:
        return jwt.decode(token, public_key, algorithms=["ES256"], audience=audience,
                          options={"verify_iss": False})
    except jwt.PyJWTError as exc:
        raise AssertionError(f"The token does not verify against published key {header['kid']!r}: {exc}") from None
