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
                          options={"verify_iss": False}, leeway=30)  # a deployment's clock may run a little ahead
    except jwt.PyJWTError as exc:
        raise AssertionError(f"The token does not verify against published key {header['kid']!r}: {exc}") from None


class PublishedKeys:
    """The gateway's JWKS as a relying party keeps it: fetched when first needed and again when a token names a
    key id not in the copy kept (a rotation), so every token the suite is issued can be checked at no extra cost.
    One copy serves a whole run: each scenario's first check costs no fetch of its own."""

    def __init__(self):
        self._jwks: dict | None = None

    def verify(self, token: str, what: str, fetch) -> dict:
        """The claims of an ES256 access token the gateway issued, or an AssertionError naming the drift. `fetch`
        (() -> the JWKS document) reads the published keys when the kept copy lacks the token's key."""
        header = jwt.get_unverified_header(token)
        if self._jwks is None or header.get("kid") not in {k.get("kid") for k in self._jwks.get("keys", [])}:
            self._jwks = fetch()
        if header.get("alg") != "ES256" or header.get("typ") != "at+jwt":
            raise AssertionError(f"Expected {what} to be an ES256 at+jwt token, but its header was {header}")
        try:
            return verify_with_jwks(token, self._jwks)
        except AssertionError as problem:
            raise AssertionError(f"{what} does not verify against the published signing keys: {problem}") from None
