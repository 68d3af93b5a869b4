"""Signing keys sealed at rest: a database backup or replica alone cannot mint tokens.

Private signing keys are stored encrypted (AES-256-GCM) under a key-encryption key (KEK) that never enters the
database: KEY_ENCRYPTION_KEYS, KEY_ENCRYPTION_KEYS_FILE or KEYS_DIR/key-encryption.keys (see gateway/settings.py),
as a KMS or a secrets mount would provide it. The first KEK seals; the others only unseal, so a KEK rotates in three
steps (docs/contract.md, "Security"):

1. add the new KEK as the second line everywhere (every process can now unseal what it will seal), restart;
2. move it to the first line, restart: at start-up every key sealed under an older KEK is sealed again under it
   (or run `python -m gateway.secrets_at_rest reseal` with the same settings);
3. remove the old KEK.

A sealed value reads `sealed:v1:<kek id>:<base64url(nonce | ciphertext)>`; the KEK id is the first 8 hex digits of
the SHA-256 of the KEK, and the signing key's kid is bound to the ciphertext as associated data, so a sealed value
copied onto another row does not open.

    python -m gateway.secrets_at_rest new-key    # print a fresh KEK (base64 of 32 random bytes)
    python -m gateway.secrets_at_rest reseal     # seal every signing key under the first KEK (same env as the gateway)
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select

from gateway.models import SigningKey

PREFIX = "sealed:v1:"
NONCE_BYTES = 12


class SealError(Exception):
    """A sealed value that cannot be opened with the KEKs at hand, or no KEK at all."""


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def decode_key(text: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip() + "=" * (-len(text.strip()) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise SealError("a key-encryption key must be the base64 of 32 bytes (python -m gateway.secrets_at_rest "
                        "new-key prints one)")
    return raw


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


class Sealer:
    """Seals with the first KEK, opens with any of them."""

    def __init__(self, keys: tuple[str, ...] | list[str]):
        decoded = [decode_key(k) for k in keys]
        self._keys = {key_id(k): AESGCM(k) for k in decoded}
        self.current = key_id(decoded[0]) if decoded else None

    def seal(self, plaintext: str, *, bound_to: str) -> str:
        if self.current is None:
            raise SealError("no key-encryption key is configured (KEY_ENCRYPTION_KEYS)")
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._keys[self.current].encrypt(nonce, plaintext.encode(), bound_to.encode())
        return f"{PREFIX}{self.current}:{_b64(nonce + sealed)}"

    def open(self, value: str, *, bound_to: str) -> str:
        if not is_sealed(value):
            raise SealError(f"the value for {bound_to} is not sealed")
        kek, _, payload = value[len(PREFIX):].partition(":")
        aead = self._keys.get(kek)
        if aead is None:
            raise SealError(f"{bound_to} is sealed under key-encryption key {kek}, which this gateway does not "
                            f"hold (it holds {', '.join(self._keys) or 'none'}); add that key to KEY_ENCRYPTION_KEYS")
        data = _unb64(payload)
        try:
            return aead.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], bound_to.encode()).decode()
        except InvalidTag:
            raise SealError(f"the sealed value for {bound_to} does not open under key-encryption key {kek} "
                            f"(altered, or copied from another row)") from None

    def needs_sealing(self, value: str) -> bool:
        """True for a plain value, or one sealed under a KEK other than the current one."""
        return not value.startswith(f"{PREFIX}{self.current}:")


def reseal_signing_keys(db, sealer: Sealer) -> int:
    """Seal every signing key that is stored in plain text (rows from before sealing) or under an older KEK;
    returns how many were sealed again. Runs at start-up, before the key ring is loaded."""
    changed = 0
    with db.transaction() as session:
        for key in session.scalars(select(SigningKey).with_for_update()).all():
            if not sealer.needs_sealing(key.private_key_sealed):
                continue
            plain = key.private_key_sealed if not is_sealed(key.private_key_sealed) else \
                sealer.open(key.private_key_sealed, bound_to=key.kid)
            key.private_key_sealed = sealer.seal(plain, bound_to=key.kid)
            changed += 1
    return changed


def main(argv: list[str]) -> int:
    if argv == ["new-key"]:
        print(new_key())
        return 0
    if argv == ["reseal"]:
        from gateway.db import Database
        from gateway.settings import Settings

        settings = Settings.from_env()
        db = Database(settings.database_url)
        try:
            count = reseal_signing_keys(db, Sealer(settings.key_encryption_keys))
        finally:
            db.dispose()
        print(f"sealed {count} signing key(s) under key-encryption key {Sealer(settings.key_encryption_keys).current}")
        return 0
    print(__doc__.strip().splitlines()[-2].strip() + "\n" + __doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
