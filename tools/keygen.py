"""Write the gateway's signing key pair and its two HS256 secrets into a keys folder.

    scripts/keygen --out DIR [--force] [--seed TEXT]      (or: python -m tools.keygen ...)

Files written into DIR (created if missing):
    signing-key.pem        ES256 (P-256) private key, PKCS8 PEM, mode 0600
    signing-key.pub.pem    its public key, SubjectPublicKeyInfo PEM, mode 0644
    signing-key.kid        key id: RFC 7638 JWK thumbprint (SHA-256, base64url, no padding),
                           one line ending in a newline
    internal-jwt.secret    BILLING_INTERNAL_JWT_SECRET: exactly 64 hex chars, no newline, mode 0600
    admin-jwt.secret       BILLING_ADMIN_JWT_SECRET: exactly 64 hex chars, no newline, mode 0600
    key-encryption.keys    the key that seals signing keys in the gateway's database (base64 of 32 bytes, one
                           line; see gateway/secrets_at_rest.py for rotating it), mode 0600

Exit codes: 0 written, 2 refused (a file exists and --force was not given, or bad usage).
Needs only the `cryptography` package.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import secrets
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

PRIVATE_KEY_FILE = "signing-key.pem"
PUBLIC_KEY_FILE = "signing-key.pub.pem"
KID_FILE = "signing-key.kid"
INTERNAL_SECRET_FILE = "internal-jwt.secret"
ADMIN_SECRET_FILE = "admin-jwt.secret"
KEY_ENCRYPTION_FILE = "key-encryption.keys"
ALL_FILES = (PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, KID_FILE, INTERNAL_SECRET_FILE, ADMIN_SECRET_FILE, KEY_ENCRYPTION_FILE)

# Names the secrets are derived from under --seed (they differ, so the secrets differ).
SECRET_NAMES = {
    INTERNAL_SECRET_FILE: "BILLING_INTERNAL_JWT_SECRET",
    ADMIN_SECRET_FILE: "BILLING_ADMIN_JWT_SECRET",
}
P256_ORDER = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)


class RefusedError(Exception):
    """A target file exists and force was not given."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The public key as a JWK with only its required members (kty, crv, x, y)."""
    numbers = public_key.public_numbers()
    size = (public_key.curve.key_size + 7) // 8
    return {
        "crv": "P-256",
        "kty": "EC",
        "x": b64url(numbers.x.to_bytes(size, "big")),
        "y": b64url(numbers.y.to_bytes(size, "big")),
    }


def jwk_thumbprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 thumbprint: SHA-256 of the required members, sorted, no whitespace."""
    canonical = json.dumps(public_jwk(public_key), sort_keys=True, separators=(",", ":"))
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def _derive(seed: str, name: str) -> bytes:
    return hmac.new(seed.encode("utf-8"), name.encode("utf-8"), hashlib.sha256).digest()


def make_signing_key(seed: str | None = None) -> ec.EllipticCurvePrivateKey:
    if seed is None:
        return ec.generate_private_key(ec.SECP256R1())
    scalar = int.from_bytes(_derive(seed, "ES256_SIGNING_KEY"), "big") % (P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def make_secrets(seed: str | None = None) -> dict[str, str]:
    """The two HS256 secrets, 64 hex chars each, never equal."""
    while True:
        if seed is None:
            values = {f: secrets.token_hex(32) for f in SECRET_NAMES}
        else:
            values = {f: _derive(seed, name).hex() for f, name in SECRET_NAMES.items()}
        if len(set(values.values())) == len(values):
            return values
        if seed is not None:  # pragma: no cover - HMAC-SHA256 of two names never collides
            raise RuntimeError("derived secrets collide")


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically (temp file + rename) with exactly the given mode."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def generate_keys(
    out_dir: str | os.PathLike[str], force: bool = False, seed: str | None = None
) -> list[tuple[Path, str]]:
    """Write every key file into out_dir; returns (path, description) per file written.

    Raises RefusedError naming the first existing file when force is false; in that case
    nothing is written.
    """
    out = Path(out_dir)
    if not force:
        for name in ALL_FILES:
            if (out / name).exists():
                raise RefusedError(str(out / name))
    out.mkdir(parents=True, exist_ok=True)

    key = make_signing_key(seed)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    kid = jwk_thumbprint(key.public_key())
    hs_secrets = make_secrets(seed)
    key_encryption_key = _derive(seed, "KEY_ENCRYPTION_KEY") if seed is not None else secrets.token_bytes(32)

    plan = [
        (PRIVATE_KEY_FILE, private_pem, 0o600, "ES256 private key, PKCS8 PEM"),
        (PUBLIC_KEY_FILE, public_pem, 0o644, "ES256 public key, SubjectPublicKeyInfo PEM"),
        (KID_FILE, (kid + "\n").encode("ascii"), 0o644, f"key id {kid}"),
        (INTERNAL_SECRET_FILE, hs_secrets[INTERNAL_SECRET_FILE].encode("ascii"), 0o600,
         "BILLING_INTERNAL_JWT_SECRET"),
        (ADMIN_SECRET_FILE, hs_secrets[ADMIN_SECRET_FILE].encode("ascii"), 0o600,
         "BILLING_ADMIN_JWT_SECRET"),
        (KEY_ENCRYPTION_FILE, base64.b64encode(key_encryption_key) + b"\n", 0o600,
         "KEY_ENCRYPTION_KEYS: seals signing keys at rest"),
    ]
    written = []
    for name, data, mode, what in plan:
        path = out / name
        _write(path, data, mode)
        written.append((path, f"{what}, mode {mode:04o}"))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="keygen",
        description=(
            "Write the gateway's ES256 signing key pair, its key id (RFC 7638 thumbprint), the "
            "HS256 secrets BILLING_INTERNAL_JWT_SECRET and BILLING_ADMIN_JWT_SECRET and the key that seals "
            "signing keys at rest into a folder."
        ),
        epilog=f"Files: {', '.join(ALL_FILES)}. Exit 2 when a file exists and --force is not given.",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write into (created if missing)")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    parser.add_argument(
        "--seed",
        metavar="TEXT",
        help="derive the key and secrets deterministically from TEXT (HMAC-SHA256); for tests only",
    )
    args = parser.parse_args(argv)
    try:
        written = generate_keys(args.out, force=args.force, seed=args.seed)
    except RefusedError as exc:
        print(f"keygen: refusing to overwrite existing file {exc}; pass --force to replace it", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"keygen: cannot write keys: {exc}", file=sys.stderr)
        return 1
    for path, what in written:
        print(f"wrote {path} ({what})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
