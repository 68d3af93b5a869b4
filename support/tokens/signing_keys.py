"""The keys folder written by scripts/keygen, and the tokens the suite mints from it."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import jwt

from support.harness.config import SuiteSetupError
from support.harness.redaction import register_secret

ROOT = Path(__file__).resolve().parents[2]
KEY_FILES = ("signing-key.pem", "signing-key.pub.pem", "signing-key.kid", "internal-jwt.secret", "admin-jwt.secret")
SERVICE_AUDIENCE = "billing-s2s"
ADMIN_AUDIENCE = "billing-admin"


def require_keys_dir(path: str) -> Path:
    folder = Path(path)
    for name in KEY_FILES:
        if not (folder / name).is_file():
            raise SuiteSetupError(f"the keys folder {folder} has no {name}: run scripts/keygen --out {folder} "
                                  f"(or point -D keys_dir at the stack's keys)")
    return folder


def generate_keys(folder: Path) -> Path:
    """A fresh keys folder for a stack the suite starts, written by scripts/keygen as a user would."""
    done = subprocess.run([sys.executable, "-m", "tools.keygen", "--out", str(folder)], cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SuiteSetupError(f"scripts/keygen failed: {done.stderr.strip()}")
    return folder


class KeyMaterial:
    """The secrets a test harness legitimately holds: the HS256 secrets and the ES256 public key."""

    def __init__(self, keys_dir: str):
        folder = require_keys_dir(keys_dir)
        self.internal_secret = (folder / "internal-jwt.secret").read_text().strip()
        self.admin_secret = (folder / "admin-jwt.secret").read_text().strip()
        self.public_pem = (folder / "signing-key.pub.pem").read_text()
        self.private_pem = (folder / "signing-key.pem").read_text()
        self.kid = (folder / "signing-key.kid").read_text().strip()
        register_secret(self.internal_secret, "hs256-secret")
        register_secret(self.admin_secret, "hs256-secret")
        body = [line for line in self.private_pem.splitlines() if line and not line.startswith("-----")]
        for secret in ["".join(body), *body]:  # the key whole, and each line of it, wherever quoted
            register_secret(secret, "private-key")

    def service_token(self, *, subject: str = "acceptance-suite", ttl: int = 300, **overrides) -> str:
        return hs256(self.internal_secret, SERVICE_AUDIENCE, subject, ttl, **overrides)

    def admin_token(self, *, subject: str = "acceptance-suite", ttl: int = 300, **overrides) -> str:
        return hs256(self.admin_secret, ADMIN_AUDIENCE, subject, ttl, **overrides)


def hs256(secret: str, audience: str, subject: str, ttl: int, **overrides) -> str:
    now = int(time.time())
    claims = {"iss": "acceptance-suite", "aud": audience, "sub": subject, "iat": now, "exp": now + ttl,
              "jti": uuid.uuid4().hex}
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, secret, algorithm="HS256")
