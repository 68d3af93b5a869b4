"""Signing keys are sealed at rest under a key-encryption key from outside the database, and that key rotates."""
from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import text

from gateway.app import install_signing_key
from gateway.db import Database
from gateway.migrate import upgrade
from gateway.secrets_at_rest import SealError, Sealer, key_id, new_key, reseal_signing_keys, decode_key
from gateway.security import KeyRing, generate_signing_key
from gateway.settings import Settings
from tools.keygen import generate_keys


@pytest.fixture()
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    upgrade(url)
    database = Database(url)
    yield database
    database.dispose()


@pytest.fixture()
def keys_dir(tmp_path):
    generate_keys(tmp_path / "keys")
    return tmp_path / "keys"


def stored(db: Database) -> dict[str, str]:
    with db.reading() as conn:
        return dict(conn.execute(text("SELECT kid, private_key_sealed FROM signing_keys")).all())


def settings(keys_dir, *keks: str) -> Settings:
    return Settings(database_url="sqlite://", keys_dir=keys_dir, internal_jwt_secret="i" * 64,
                    admin_jwt_secret="a" * 64, config_repo=None, key_encryption_keys=keks)


def test_a_sealed_value_opens_only_for_its_row_and_its_key():
    kek = new_key()
    sealer = Sealer([kek])
    sealed = sealer.seal("-----BEGIN PRIVATE KEY-----secret", bound_to="kid-1")
    assert "secret" not in sealed and sealed.startswith(f"sealed:v1:{key_id(decode_key(kek))}:")
    assert sealer.open(sealed, bound_to="kid-1").endswith("secret")
    with pytest.raises(SealError, match="copied from another row"):
        sealer.open(sealed, bound_to="kid-2")
    with pytest.raises(SealError, match="which this gateway does not hold"):
        Sealer([new_key()]).open(sealed, bound_to="kid-1")
    with pytest.raises(SealError, match="base64 of 32 bytes"):
        Sealer(["too-short"])


def test_the_keys_folders_pair_is_stored_sealed_and_a_backup_alone_cannot_sign(db, keys_dir):
    kek = (keys_dir / "key-encryption.keys").read_text().strip()
    ring = KeyRing(db, Sealer([kek]))
    install_signing_key(db, settings(keys_dir, kek), ring)
    ring.reload()
    pem = (keys_dir / "signing-key.pem").read_text()
    [value] = stored(db).values()
    assert "PRIVATE KEY" not in value and pem.splitlines()[1] not in value
    assert ring.active().private_pem == pem
    with pytest.raises(SealError):  # the database without the KEK
        KeyRing(db, Sealer([new_key()])).reload()


def test_plain_keys_from_before_sealing_are_sealed_at_start_up(db):
    kid, private_pem, public_pem = generate_signing_key()
    with db.transaction() as session:  # as migration 0003 leaves an old row: the column renamed, still plain
        session.execute(text("INSERT INTO signing_keys (kid, private_key_sealed, public_pem, state, created_at) "
                             "VALUES (:k, :p, :u, 'active', CURRENT_TIMESTAMP)"), {"k": kid, "p": private_pem,
                                                                                   "u": public_pem})
    sealer = Sealer([new_key()])
    assert reseal_signing_keys(db, sealer) == 1
    assert "PRIVATE KEY" not in stored(db)[kid]
    assert reseal_signing_keys(db, sealer) == 0  # nothing left to do
    ring = KeyRing(db, sealer)
    ring.reload()
    assert ring.active().private_pem == private_pem


def test_the_key_encryption_key_rotates_in_three_steps_without_losing_a_key(db, keys_dir):
    old, new = new_key(), new_key()
    install_signing_key(db, settings(keys_dir, old), KeyRing(db, Sealer([old])))
    pem = (keys_dir / "signing-key.pem").read_text()
    # 1. the new KEK is added second: nothing is resealed, both opens work
    assert reseal_signing_keys(db, Sealer([old, new])) == 0
    # 2. the new KEK goes first: start-up seals every key under it
    assert reseal_signing_keys(db, Sealer([new, old])) == 1
    assert all(v.startswith(f"sealed:v1:{key_id(decode_key(new))}:") for v in stored(db).values())
    # 3. the old KEK is removed: the keys still open
    ring = KeyRing(db, Sealer([new]))
    ring.reload()
    assert ring.active().private_pem == pem
    with pytest.raises(SealError):
        KeyRing(db, Sealer([old])).reload()


def test_the_command_line_prints_a_fresh_key():
    done = subprocess.run([sys.executable, "-m", "gateway.secrets_at_rest", "new-key"], capture_output=True,
                          text=True, check=True)
    assert len(decode_key(done.stdout.strip())) == 32
