"""Service (S2S) and platform-admin tokens in business words: valid ones, and every way one can be wrong.

"a valid service token", "an expired admin token", "a malformed service token", "no token",
"a service token signed with the wrong secret", "an admin token for another audience", "a service token without
an issuer", "an admin token from an unknown issuer", "a service token that lasts a year".
Tokens are minted with PyJWT from the keys folder's HS256 secrets (support.tokens.signing_keys.hs256).
"""
from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass

from support.tokens.signing_keys import ADMIN_AUDIENCE, SERVICE_AUDIENCE, KeyMaterial, hs256
from support.harness.redaction import register_secret

SUBJECT = "acceptance-suite"
FLAWS = ("valid", "expired", "malformed", "wrong secret", "wrong audience", "no issuer", "unknown issuer",
         "lasts a year")
TAILS = {"signed with the wrong secret": "wrong secret", "for another audience": "wrong audience",
         "without an issuer": "no issuer", "from an unknown issuer": "unknown issuer", "that lasts a year": "lasts a year"}
_PHRASE = re.compile(r"^(?:a|an) (?:(?P<adj>valid|expired|malformed) )?(?P<kind>service|admin) token"
                     r"(?P<tail> signed with the wrong secret| for another audience| without an issuer"
                     r"| from an unknown issuer| that lasts a year)?$")


@dataclass(frozen=True)
class Credential:
    """What a caller presents: a bearer token (None: no Authorization header) and how it was made."""
    description: str
    token: str | None


def make(keys: KeyMaterial, kind: str, flaw: str = "valid") -> Credential:
    """A token of `kind` ('service' or 'admin') with at most one flaw (see FLAWS)."""
    if kind not in ("service", "admin"):
        raise ValueError(f"unknown token kind {kind!r}: use service or admin")
    secret = keys.internal_secret if kind == "service" else keys.admin_secret
    audience = SERVICE_AUDIENCE if kind == "service" else ADMIN_AUDIENCE
    if flaw == "valid":
        token = hs256(secret, audience, SUBJECT, 300)
    elif flaw == "expired":  # well past any clock-skew leeway
        token = hs256(secret, audience, SUBJECT, -600, iat=int(time.time()) - 900)
    elif flaw == "malformed":  # three segments, but the claims are not base64url JSON
        header, _, signature = hs256(secret, audience, SUBJECT, 300).split(".")
        token = f"{header}.%%not-json%%.{signature}"
    elif flaw == "wrong secret":
        forged = secrets.token_urlsafe(32)
        register_secret(forged, "hs256-secret")
        token = hs256(forged, audience, SUBJECT, 300)
    elif flaw == "wrong audience":  # the right secret, but issued for something else
        token = hs256(secret, f"{audience}-reports", SUBJECT, 300)
    elif flaw == "no issuer":
        token = hs256(secret, audience, SUBJECT, 300, iss=None)
    elif flaw == "unknown issuer":
        token = hs256(secret, audience, SUBJECT, 300, iss="someone-else")
    elif flaw == "lasts a year":  # rightly signed, but a leak of it would be good for a year
        token = hs256(secret, audience, SUBJECT, 365 * 24 * 3600)
    else:
        raise ValueError(f"unknown token flaw {flaw!r}: use one of {', '.join(FLAWS)}")
    return Credential(f"{flaw} {kind} token", token)


def from_words(keys: KeyMaterial, words: str) -> Credential:
    """'an expired service token' -> that credential; 'no token' -> no Authorization header at all."""
    words = words.strip()
    if words == "no token":
        return Credential("no token", None)
    match = _PHRASE.match(words)
    if not match:
        raise ValueError(f"{words!r} does not name a credential; say e.g. 'a valid service token', 'an expired "
                         f"admin token', 'a malformed service token', 'a service token signed with the wrong "
                         f"secret', 'an admin token for another audience' or 'no token'")
    tail = (match.group("tail") or "").strip()
    flaw = TAILS.get(tail)
    adjective = match.group("adj")
    if flaw and adjective:
        raise ValueError(f"{words!r} names two flaws; name one")
    return make(keys, match.group("kind"), flaw or adjective or "valid")
