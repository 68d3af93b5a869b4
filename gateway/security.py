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
from functools import cached_property

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

# scrypt at OWASP's parameters: N = 2^cost (the cost comes from PASSWORD_HASH_COST, at least 17 outside test mode,
# see gateway/settings.py), r = 8, p = 1. Each hash records its cost, so changing the setting locks nobody out.
SCRYPT_R, SCRYPT_P = 8, 1
STORED_COSTS = range(4, 21)
# One hash at cost 17 takes 128 MiB: at most this many run at once, so a burst of logins queues instead of
# exhausting memory.
_HASHING = threading.BoundedSemaphore(max(2, os.cpu_count() or 2))


def _scrypt(password: str, salt: bytes, cost: int) -> bytes:
    n = 2 ** cost
    with _HASHING:
        return hashlib.scrypt(password.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P,
                              maxmem=2 * 128 * SCRYPT_R * (n + SCRYPT_P + 2))


def hash_password(password: str, cost: int) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, cost)
    return f"scrypt{cost}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


_DUMMY_HASHES: dict[int, str] = {}


def burn_password_check(password: str, cost: int) -> None:
    """Spend the time a real password check takes, so an unknown email answers no faster than a wrong password."""
    if cost not in _DUMMY_HASHES:
        _DUMMY_HASHES[cost] = hash_password(secrets.token_urlsafe(16), cost)
    verify_password(password, _DUMMY_HASHES[cost])


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, salt_b64, digest_b64 = stored.split("$")
        cost = int(scheme.removeprefix("scrypt") or 14)
    except ValueError:
        return False
    if cost not in STORED_COSTS:
        return False
    digest = _scrypt(password, base64.b64decode(salt_b64), cost)
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

    # Parsed once per loaded key: PyJWT given a PEM parses it on every token it signs or verifies.
    @cached_property
    def signer(self) -> ec.EllipticCurvePrivateKey:
        return serialization.load_pem_private_key(self.private_pem.encode(), password=None)

    @cached_property
    def verifier(self) -> ec.EllipticCurvePublicKey:
        return serialization.load_pem_public_key(self.public_pem.encode())


SIGNING_KEY_STATES = ("next", "active", "retiring", "retired")
VERIFYING_STATES = ("active", "retiring")
PUBLISHED_STATES = ("next", "active", "retiring")


class KeyRing:
    """The signing keys, cached from the database for `max_age` seconds.

    A rotation made through this process calls reload() at once, so it takes effect here immediately; other
    processes see it within `max_age`. A token naming a kid we do not know triggers a reload too (another
    process may have published it), but at most once per `miss_reload_interval`, so a flood of forged kids
    cannot turn into a flood of database reads.

    `every_use` (several processes share the database): each use first compares the ring's keys and states with
    the database's (one small read, reloading only when they differ), so a rotation or retirement made through any
    process holds in every process from its next request on. The reads are shared: a use waits for a comparison
    that began after it arrived, so however many requests arrive at once, one read at a time runs per process.
    """

    def __init__(self, database, sealer, *, max_age: float = 5.0, miss_reload_interval: float = 1.0,
                 every_use: bool = False):
        self._db = database
        self._sealer = sealer  # gateway.secrets_at_rest.Sealer: private keys are stored sealed
        self._lock = threading.Lock()
        self._keys: dict[str, LoadedKey] = {}
        self._loaded_at = 0.0
        self._max_age = max_age
        self._miss_reload_interval = miss_reload_interval
        self._every_use = every_use
        self._comparing = threading.Lock()
        self._comparisons_begun = self._compared_upto = 0  # comparison numbers: begun so far, last one finished

    def sealed(self, kid: str, private_pem: str) -> str:
        """The private key as it is stored: sealed under the key-encryption key, bound to its kid."""
        return self._sealer.seal(private_pem, bound_to=kid)

    def reload(self) -> None:
        with self._db.sessions() as session:
            rows = session.scalars(select(SigningKey)).all()
            keys = {r.kid: LoadedKey(r.kid, r.state, self._sealer.open(r.private_key_sealed, bound_to=r.kid),
                                     r.public_pem) for r in rows}
        with self._lock:
            self._keys = keys
            self._loaded_at = time.monotonic()

    def _snapshot(self) -> dict[str, LoadedKey]:
        if self._every_use:
            self._compare_with_database()
        elif time.monotonic() - self._loaded_at > self._max_age:
            self.reload()
        return self._keys

    def _compare_with_database(self) -> None:
        wanted = self._comparisons_begun + 1  # a comparison that begins after this call arrived
        with self._comparing:
            if self._compared_upto >= wanted:
                return
            self._comparisons_begun += 1
            number = self._comparisons_begun
            with self._db.sessions() as session:
                states = dict(session.execute(select(SigningKey.kid, SigningKey.state)).all())
            if states != {kid: key.state for kid, key in self._keys.items()}:
                self.reload()
            self._compared_upto = number

    def active(self) -> LoadedKey:
        for key in self._snapshot().values():
            if key.state == "active":
                return key
        raise RuntimeError("no active signing key")

    def verifying(self, kid: str) -> LoadedKey | None:
        key = self._snapshot().get(kid)
        if key is None and not self._every_use and time.monotonic() - self._loaded_at > self._miss_reload_interval:
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
    token = jwt.encode(claims, key.signer, algorithm="ES256", headers={"kid": key.kid, "typ": typ})
    return token, claims


def _header(token: str, algorithm: str) -> dict:
    """The token's header (not yet verified); a token signed with another algorithm is refused."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenError("the token is not a well-formed JWT")
    if header.get("alg") != algorithm:
        raise TokenError(f"the token's algorithm {shown(header.get('alg'))} is not accepted ({algorithm} only)")
    return header


def shown(value, limit: int = 40) -> str:
    """An attacker-chosen value as a refusal quotes it: its repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


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
        raise TokenError(f"the token's type {shown(header.get('typ'))} is not accepted here (expected {typ!r})")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenError("the token names no signing key (kid)")
    key = keyring.verifying(kid)
    if key is None:
        raise TokenError(f"the token was signed with an unknown or retired key (kid {shown(kid, 100)})")
    try:
        claims = jwt.decode(token, key.verifier, algorithms=["ES256"], audience=USER_AUDIENCE, issuer=issuer,
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

def verify_shared_secret_token(token: str, *, secret: str, audience: str, issuers: tuple[str, ...] = (),
                               max_lifetime_seconds: int = 3600) -> dict:
    """An HS256 token's claims once it verifies: `aud`, `exp`, `iat` and `iss` required (`iss` one of `issuers`
    when any are given), and a lifetime (`exp` - `iat`) of at most `max_lifetime_seconds`, so a leaked token
    cannot be minted to last for years."""
    _header(token, "HS256")
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], audience=audience,
                            options={"require": ["exp", "aud", "iat", "iss"]}, leeway=5)
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"the token lacks the required claim {exc.claim!r}")
    except jwt.PyJWTError as exc:
        raise TokenError(_why_refused(exc, f"the token's audience is not {audience!r}"))
    issuer = claims["iss"]
    if not isinstance(issuer, str) or not issuer or (issuers and issuer not in issuers):
        raise TokenError(f"the token's issuer {shown(issuer)} is not trusted")
    lifetime = claims["exp"] - claims["iat"]
    if not isinstance(lifetime, (int, float)) or lifetime > max_lifetime_seconds:
        raise TokenError(f"the token's lifetime (exp - iat) is over the {max_lifetime_seconds} s allowed")
    return claims
