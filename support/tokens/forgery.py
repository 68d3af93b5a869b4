"""A corpus of forged and misused user tokens, built the way an attacker (or a broken issuer) would build them.

Every forgery starts from a genuine access token the gateway issued, keeps its claims, and changes exactly one
thing. Those that need a valid signature are re-signed with the ES256 key from the keys folder the suite was
given (the key the gateway was installed with); `resign()` with no change is the control that proves the gateway
trusts that key, so a forgery can only be refused for the one defect it carries.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from support.tokens.signing_keys import KeyMaterial


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: dict) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unverified(token: str) -> tuple[dict, dict]:
    """The header and claims of a token, read without checking anything."""
    return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})


def stranger_key() -> tuple[str, str]:
    """A fresh P-256 key the gateway has never seen: (private PEM, public JWK-less PEM)."""
    private = ec.generate_private_key(ec.SECP256R1())
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private_pem, public_pem


@dataclass(frozen=True)
class Genuine:
    """What the forger starts from: tokens the gateway issued to one person, and the suite's key material."""
    access_token: str
    refresh_token: str
    keys: KeyMaterial

    @property
    def header(self) -> dict:
        return unverified(self.access_token)[0]

    @property
    def claims(self) -> dict:
        return unverified(self.access_token)[1]


def sign(claims: dict, private_pem: str, kid: str, **header) -> str:
    headers = {"kid": kid, "typ": "at+jwt", **header}
    return jwt.encode(claims, private_pem, algorithm="ES256", headers=headers)


def resign(genuine: Genuine, *, header: dict | None = None, drop: tuple[str, ...] = (), **changes) -> str:
    """The genuine claims (fresh jti), changed as asked, signed with the key the gateway was installed with."""
    claims = {**genuine.claims, "jti": uuid.uuid4().hex, **changes}
    for name in drop:
        claims.pop(name, None)
    return sign(claims, genuine.keys.private_pem, genuine.keys.kid, **(header or {}))


def _alg_none(g: Genuine) -> str:
    header = {"alg": "none", "typ": "at+jwt", "kid": g.keys.kid}
    return f"{segment(header)}.{segment(g.claims)}."


def _hs256_with_public_key(g: Genuine) -> str:
    """The classic key-confusion attack: HMAC keyed with the public key, hoping the verifier uses it as a secret."""
    header = {"alg": "HS256", "typ": "at+jwt", "kid": g.keys.kid}
    signing_input = f"{segment(header)}.{segment(g.claims)}"
    mac = hmac.new(g.keys.public_pem.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def _expired(g: Genuine) -> str:
    now = int(time.time())
    return resign(g, iat=now - 3600, nbf=now - 3600, exp=now - 600)


def _not_yet_valid(g: Genuine) -> str:
    now = int(time.time())
    return resign(g, iat=now, nbf=now + 600, exp=now + 1200)


def _tampered(g: Genuine) -> str:
    """The gateway's own token with its lifetime stretched by a day and the signature left as it was."""
    header_part, _, signature = g.access_token.split(".")
    return f"{header_part}.{segment({**g.claims, 'exp': g.claims['exp'] + 86400})}.{signature}"


def _signature_stripped(g: Genuine) -> str:
    header_part, payload_part, _ = g.access_token.split(".")
    return f"{header_part}.{payload_part}."


def _unknown_kid(g: Genuine) -> str:
    private_pem, _ = stranger_key()
    return sign({**g.claims, "jti": uuid.uuid4().hex}, private_pem, "kid-" + secrets.token_hex(8))


def _stranger_under_trusted_kid(g: Genuine) -> str:
    private_pem, _ = stranger_key()
    return sign({**g.claims, "jti": uuid.uuid4().hex}, private_pem, g.keys.kid)


def _embedded_jwk(g: Genuine) -> str:
    """Signed with the attacker's key, which the header carries along, hoping the verifier trusts it."""
    private_pem, _ = stranger_key()
    public = jwt.algorithms.ECAlgorithm(jwt.algorithms.ECAlgorithm.SHA256).prepare_key(private_pem).public_key()
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
    kid = "attacker-" + secrets.token_hex(4)
    return sign({**g.claims, "jti": uuid.uuid4().hex}, private_pem, kid, jwk={**jwk, "kid": kid})


FORGERIES: dict[str, Callable[[Genuine], str]] = {
    "alg none": _alg_none,
    "HS256 signed with the public key": _hs256_with_public_key,
    "expired": _expired,
    "not yet valid": _not_yet_valid,
    "wrong audience": lambda g: resign(g, aud="another-service"),
    "wrong issuer": lambda g: resign(g, iss="someone-else"),
    "tampered payload": _tampered,
    "unknown kid": _unknown_kid,
    "refresh token used as access token": lambda g: g.refresh_token,
    "a stranger's signature under the trusted kid": _stranger_under_trusted_kid,
    "signature stripped": _signature_stripped,
    "attacker key embedded in the header": _embedded_jwk,
    "no expiry": lambda g: resign(g, drop=("exp",)),
    "wrong token type": lambda g: resign(g, header={"typ": "JWT"}),
    "service token": lambda g: g.keys.service_token(),
    "not a JWT at all": lambda g: "not-a-jwt",
    "no token at all": lambda g: None,
}


def forge(kind: str, genuine: Genuine) -> str | None:
    if kind not in FORGERIES:
        raise AssertionError(f"No forgery called {kind!r}; the corpus has: {', '.join(FORGERIES)}")
    return FORGERIES[kind](genuine)
