"""Start-up refuses settings that would leave the gateway open; passwords are hashed at OWASP's cost."""
from __future__ import annotations

import time

import pytest

from gateway.secrets_at_rest import new_key
from gateway.security import burn_password_check, hash_password, verify_password
from gateway.settings import Settings

GOOD = {"BILLING_INTERNAL_JWT_SECRET": "i" * 64, "BILLING_ADMIN_JWT_SECRET": "a" * 64}


@pytest.fixture()
def env(monkeypatch, tmp_path):
    for name in ("KEYS_DIR", "GATEWAY_MODE", "PASSWORD_HASH_COST", "KEY_ENCRYPTION_KEYS", "KEY_ENCRYPTION_KEYS_FILE",
                 "TRUSTED_PROXIES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KEY_ENCRYPTION_KEYS", new_key())
    for name, value in GOOD.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def refusal(env) -> str:
    with pytest.raises(SystemExit) as stopped:
        Settings.from_env()
    return str(stopped.value)


def test_sound_settings_start_with_owasp_cost(env):
    settings = Settings.from_env()
    assert settings.password_hash_cost == 17 and settings.mode == "production"


@pytest.mark.parametrize("internal, admin, words", [
    ("short", "a" * 64, "BILLING_INTERNAL_JWT_SECRET is 5 characters long"),
    ("i" * 64, "a" * 31, "BILLING_ADMIN_JWT_SECRET is 31 characters long"),
    ("s" * 64, "s" * 64, "are equal"),
])
def test_short_or_equal_secrets_are_refused(env, internal, admin, words):
    env.setenv("BILLING_INTERNAL_JWT_SECRET", internal)
    env.setenv("BILLING_ADMIN_JWT_SECRET", admin)
    assert words in refusal(env)


def test_a_cheap_password_hash_is_refused_in_production_and_allowed_in_test_mode(env):
    env.setenv("PASSWORD_HASH_COST", "14")
    assert "PASSWORD_HASH_COST is 14; it must be 17 to 20" in refusal(env)
    env.setenv("GATEWAY_MODE", "test")
    assert Settings.from_env().password_hash_cost == 14
    env.setenv("PASSWORD_HASH_COST", "3")
    assert "it must be 4 to 20" in refusal(env)
    env.setenv("PASSWORD_HASH_COST", "21")
    assert "it must be 4 to 20" in refusal(env)


def test_an_unknown_mode_and_a_garbled_proxy_are_refused(env):
    env.setenv("GATEWAY_MODE", "dev")
    env.setenv("TRUSTED_PROXIES", "10.0.0.0/8,not-an-address")
    message = refusal(env)
    assert "GATEWAY_MODE is 'dev'" in message and "'not-an-address'" in message


def test_without_a_key_encryption_key_the_gateway_does_not_start(env, tmp_path):
    env.delenv("KEY_ENCRYPTION_KEYS")
    env.setenv("KEYS_DIR", str(tmp_path))
    assert "no key-encryption key" in refusal(env)
    (tmp_path / "key-encryption.keys").write_text(new_key() + "\n")
    assert len(Settings.from_env().key_encryption_keys) == 1
    env.setenv("KEY_ENCRYPTION_KEYS_FILE", str(tmp_path / "missing"))
    assert "does not exist" in refusal(env)


# ---- scrypt -----------------------------------------------------------------------------------------------------

def test_owasp_cost_hashes_and_verifies_within_the_memory_limit():
    stored = hash_password("correct horse", 17)  # N = 2^17 needs 128 MiB: over scrypt's default maxmem of 32 MiB
    assert stored.startswith("scrypt17$")
    assert verify_password("correct horse", stored) and not verify_password("wrong horse", stored)


def test_every_cost_the_setting_allows_hashes():
    for cost in (10, 18):
        assert verify_password("pw", hash_password("pw", cost))


def test_a_stored_hash_keeps_verifying_at_its_own_cost_and_odd_ones_fail_closed():
    assert verify_password("pw", hash_password("pw", 10))
    assert not verify_password("pw", "scrypt30$AAAA$AAAA")  # a cost no setting allows: refused, not computed
    assert not verify_password("pw", "garbage")


def test_an_unknown_email_costs_as_much_as_a_wrong_password():
    stored = hash_password("pw", 15)
    started = time.perf_counter()
    verify_password("nope", stored)
    wrong = time.perf_counter() - started
    burn_password_check("nope", 15)  # the first call makes its dummy hash
    started = time.perf_counter()
    burn_password_check("nope", 15)
    unknown = time.perf_counter() - started
    assert unknown > wrong / 3
