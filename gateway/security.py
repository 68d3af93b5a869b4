"""Secrets and tokens: ES256 user JWTs from rotating signing keys, HS256 service/admin JWTs, API keys, passwords."""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from gateway.models import SigningKey

ACCESS_TYP = "at+jwt"
REFRESH_TYP = "refresh+jwt"
USER_AUDIENCE = "gateway"
SERVICE_AUDIENCE = "billing-s2s"
ADMIN_AUDIENCE = "billing-admin"


class TokenError(Exception):
    """Why a presented credential was refused; the message is safe to show and audit."""


# ---- passwords -------------------------------------------------------------------------------------------------

# scrypt's cost (log2 N). Test stacks may lower it with PASSWORD_HASH_COST; each hash records the cost it was made
# with, so changing the setting never locks anyone out.
PASSWORD_HASH_COST = int(os.environ.get("PASSWORD_HASH_COST", "14"))


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2 ** PASSWORD_HASH_COST, r=8, p=1)
    return f"scrypt{PASSWORD_HASH_COST}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


_DUMMY_HASH: list[str] = []


def burn_password_check(password: str) -> None:
    """Spend the time a real password check takes, so an unknown email answers no faster than a wrong password."""
    if not _DUMMY_HASH:
        _DUMMY_HASH.append(hash_password(secrets.token_urlsafe(16)))
    verify_password(password, _DUMMY_HASH[0])


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, salt_b64, digest_b64 = stored.split("$")
        cost = int(scheme.removeprefix("scrypt") or 14)
    except ValueError:
        return False
    digest = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt_b64), n=2 ** cost, r=8, p=1)
    return hmac.compare_digest(digest, base64.b64decode(digest_b64))


# ---- opaque secrets ------------------------------------------------------------------------------------------------

def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_api_key() -> tuple[str, str]:
    """A fresh API key and its display prefix. Only the hash is stored."""
    key = "tg_" + secrets.token_urlsafe(32)
    return key, key[:11]


def new_opaque_token() -> str:
    return secrets.token_urlsafe(32)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# ---- signing keys --------------------------------------------------------------------------------------------------

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(public_pem: str, kid: str) -> dict:
    key = serialization.load_pem_public_key(public_pem.encode())
    numbers = key.public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": _b64url(numbers.x.to_bytes(32, "big")),
            "y": _b64url(numbers.y.to_bytes(32, "big")), "kid": kid, "use": "sig", "alg": "ES256"}


def jwk_thumbprint(jwk: dict) -> str:
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def generate_signing_key() -> tuple[str, str, str]:
    """A new P-256 key as (kid, private PEM, public PEM)."""
    private = ec.generate_private_key(ec.SECP256R1())
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return jwk_thumbprint(public_jwk(public_pem, "")), private_pem, public_pem


@dataclass(frozen=True)
class LoadedKey:
    kid: str
    state: str
    private_pem: str
    public_pem: str


SIGNING_KEY_STATES = ("next", "active", "retiring", "retired")
VERIFYING_STATES = ("active", "retiring")
PUBLISHED_STATES = ("next", "active", "retiring")


class KeyRing:
    """The signing keys, cached from the database for `max_age` seconds.

    A rotation made through this process calls reload() at once, so it takes effect here immediately; other
    processes see it within `max_age`. A token naming a kid we do not know triggers a reload too (another
    process may have published it), but at most once per `miss_reload_interval`, so a flood of forged kids
    cannot turn into a flood of database reads.
    """

    def __init__(self, database, *, max_age: float = 5.0, miss_reload_interval: float = 1.0):
        self._db = database
        self._lock = threading.Lock()
        self._keys: dict[str, LoadedKey] = {}
        self._loaded_at = 0.0
        self._max_age = max_age
        self._miss_reload_interval = miss_reload_interval

    def reload(self) -> None:
        with self._db.sessions() as session:
            rows = session.scalars(select(SigningKey)).all()
            keys = {r.kid: LoadedKey(r.kid, r.state, r.private_pem, r.public_pem) for r in rows}
        with self._lock:
            self._keys = keys
            self._loaded_at = time.monotonic()

    def _snapshot(self) -> dict[str, LoadedKey]:
        if time.monotonic() - self._loaded_at > self._max_age:
            self.reload()
        return self._keys

    def active(self) -> LoadedKey:
        for key in self._snapshot().values():
            if key.state == "active":
                return key
        raise RuntimeError("no active signing key")

    def verifying(self, kid: str) -> LoadedKey | None:
        key = self._snapshot().get(kid)
        if key is None and time.monotonic() - self._loaded_at > self._miss_reload_interval:
            self.reload()
            key = self._keys.get(kid)
        return key if key is not None and key.state in VERIFYING_STATES else None

    def published(self) -> list[LoadedKey]:
        return [k for k in self._snapshot().values() if k.state in PUBLISHED_STATES]


# ---- user tokens (ES256) -------------------------------------------------------------------------------------------

def issue_user_token(keyring: KeyRing, *, issuer: str, user_id: str, typ: str, ttl_seconds: int,
                     extra: dict | None = None) -> tuple[str, dict]:
    key = keyring.active()
    now = int(time.time())
    claims = {"iss": issuer, "aud": USER_AUDIENCE, "sub": user_id, "iat": now, "nbf": now,
              "exp": now + ttl_seconds, "jti": uuid.uuid4().hex, "token_use": typ}
    claims.update(extra or {})
    token = jwt.encode(claims, key.private_pem, algorithm="ES256", headers={"kid": key.kid, "typ": typ})
    return token, claims


def _header(token: str, algorithm: str) -> dict:
    """The token's header (not yet verified); a token signed with another algorithm is refused."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenError("the token is not a well-formed JWT")
    if header.get("alg") != algorithm:
        raise TokenError(f"the token's algorithm {header.get('alg')!r} is not accepted ({algorithm} only)")
    return header


_WHY_REFUSED = ((jwt.ExpiredSignatureError, "the token has expired"),
                (jwt.ImmatureSignatureError, "the token is not valid yet"),
                (jwt.InvalidIssuerError, "the token's issuer is not this gateway"),
                (jwt.InvalidSignatureError, "the token's signature does not verify"))


def _why_refused(exc: jwt.PyJWTError, wrong_audience: str) -> str:
    """What a refused token is told, from PyJWT's verdict."""
    if isinstance(exc, jwt.InvalidAudienceError):
        return wrong_audience
    return next((why for kind, why in _WHY_REFUSED if isinstance(exc, kind)), f"the token is not valid: {exc}")


def verify_user_token(keyring: KeyRing, token: str, *, issuer: str, typ: str) -> dict:
    header = _header(token, "ES256")
    if header.get("typ") != typ:
        raise TokenError(f"the token's type {header.get('typ')!r} is not accepted here (expected {typ!r})")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenError("the token names no signing key (kid)")
    key = keyring.verifying(kid)
    if key is None:
        raise TokenError(f"the token was signed with an unknown or retired key (kid {kid[:100]!r})")
    try:
        claims = jwt.decode(token, key.public_pem, algorithms=["ES256"], audience=USER_AUDIENCE, issuer=issuer,
                            options={"require": ["exp", "iat", "nbf", "sub", "aud", "iss", "jti"],
                                     "strict_aud": True}, leeway=5)
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"the token lacks the required claim {exc.claim!r}")
    except jwt.PyJWTError as exc:
        raise TokenError(_why_refused(exc, "the token's audience is not this gateway"))
    if claims.get("token_use") != typ:
        raise TokenError(f"the token is not an {typ} token")
    return claims


# ---- service and admin tokens (HS256) --------------------------------------------------------------------------

def verify_shared_secret_token(token: str, *, secret: str, audience: str) -> dict:
    _header(token, "HS256")
    try:
        return jwt.decode(token, secret, algorithms=["HS256"], audience=audience,
                          options={"require": ["exp", "aud"]}, leeway=5)
    except jwt.PyJWTError as exc:
        raise TokenError(_why_refused(exc, f"the token's audience is not {audience!r}"))
