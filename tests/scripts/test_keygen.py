"""Tests of tools/keygen.py, run as the suite runs it (<venv python> -m tools.keygen --out DIR), and of its shim
scripts/keygen."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tools.keygen import RefusedError, generate_keys

ROOT = Path(__file__).resolve().parents[2]
KEYGEN = ROOT / "scripts" / "keygen"
FILES = ["signing-key.pem", "signing-key.pub.pem", "signing-key.kid", "internal-jwt.secret", "admin-jwt.secret",
         "key-encryption.keys"]
SECRET_MODE_FILES = ["signing-key.pem", "internal-jwt.secret", "admin-jwt.secret", "key-encryption.keys"]


def keygen(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tools.keygen", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in FILES}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint(public_key: ec.EllipticCurvePublicKey) -> str:
    numbers = public_key.public_numbers()
    jwk = {
        "crv": "P-256",
        "kty": "EC",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
    }
    # RFC 7638 section 3: required members, lexicographic order, no whitespace.
    canonical = '{"crv":"%s","kty":"%s","x":"%s","y":"%s"}' % (jwk["crv"], jwk["kty"], jwk["x"], jwk["y"])
    assert canonical == json.dumps(jwk, sort_keys=True, separators=(",", ":"))
    return b64url(hashlib.sha256(canonical.encode()).digest())


@pytest.mark.parametrize("python", [[], [sys.executable]], ids=["run", "run by python"])
def test_the_shim_is_an_executable_python3_script_that_runs_keygen(tmp_path, python):
    assert KEYGEN.read_text().startswith("#!/usr/bin/env python3\n")
    assert os.access(KEYGEN, os.X_OK)
    done = subprocess.run([*python, str(KEYGEN), "--out", "keys"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == sorted(FILES)


def test_generate_keys_refuses_before_writing_anything(tmp_path):
    (tmp_path / "signing-key.kid").write_text("keep me")
    with pytest.raises(RefusedError, match="signing-key.kid"):
        generate_keys(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["signing-key.kid"]


def test_help():
    result = keygen("--help")
    assert result.returncode == 0
    assert "--out" in result.stdout and "--force" in result.stdout and "--seed" in result.stdout


def test_out_is_required():
    result = keygen()
    assert result.returncode == 2
    assert "--out" in result.stderr


def test_writes_all_files(tmp_path):
    out = tmp_path / "nested" / "keys"
    result = keygen("--out", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)

    lines = result.stdout.splitlines()
    assert len(lines) == len(FILES)
    for name in FILES:
        assert sum(name in line for line in lines) >= 1

    private = serialization.load_pem_private_key((out / "signing-key.pem").read_bytes(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(private.curve, ec.SECP256R1)
    assert (out / "signing-key.pem").read_text().startswith("-----BEGIN PRIVATE KEY-----")  # PKCS8

    public_pem = (out / "signing-key.pub.pem").read_bytes()
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----")  # SubjectPublicKeyInfo
    public = serialization.load_pem_public_key(public_pem)
    assert public.public_numbers() == private.public_key().public_numbers()
    signature = private.sign(b"payload", ec.ECDSA(hashes.SHA256()))
    public.verify(signature, b"payload", ec.ECDSA(hashes.SHA256()))

    kid_text = (out / "signing-key.kid").read_text()
    assert kid_text.count("\n") <= 1 and kid_text.strip() == kid_text.rstrip("\n")
    kid = kid_text.strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", kid)
    assert kid == thumbprint(public)

    internal = (out / "internal-jwt.secret").read_text()
    admin = (out / "admin-jwt.secret").read_text()
    for secret in (internal, admin):
        assert re.fullmatch(r"[0-9a-f]{64}", secret)
        assert secret not in result.stdout and secret not in result.stderr
    assert internal != admin


def test_file_modes(tmp_path):
    old_umask = os.umask(0)
    try:
        assert keygen("--out", str(tmp_path)).returncode == 0
    finally:
        os.umask(old_umask)
    for name in SECRET_MODE_FILES:
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    for name in ("signing-key.pub.pem", "signing-key.kid"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) & 0o077 in (0, 0o044), name


def test_refuses_to_overwrite_without_force(tmp_path):
    assert keygen("--out", str(tmp_path)).returncode == 0
    before = snapshot(tmp_path)
    result = keygen("--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stdout == ""
    error_lines = result.stderr.strip().splitlines()
    assert len(error_lines) == 1
    assert "--force" in error_lines[0]
    assert "signing-key.pem" in error_lines[0]
    assert snapshot(tmp_path) == before


def test_refuses_when_any_one_file_exists_and_writes_nothing(tmp_path):
    (tmp_path / "admin-jwt.secret").write_text("keep me")
    result = keygen("--out", str(tmp_path))
    assert result.returncode == 2
    assert "admin-jwt.secret" in result.stderr and "--force" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["admin-jwt.secret"]
    assert (tmp_path / "admin-jwt.secret").read_text() == "keep me"


def test_force_overwrites(tmp_path):
    assert keygen("--out", str(tmp_path)).returncode == 0
    before = snapshot(tmp_path)
    (tmp_path / "internal-jwt.secret").chmod(0o644)
    result = keygen("--out", str(tmp_path), "--force")
    assert result.returncode == 0, result.stderr
    after = snapshot(tmp_path)
    assert after["signing-key.pem"] != before["signing-key.pem"]
    assert after["internal-jwt.secret"] != before["internal-jwt.secret"]
    assert stat.S_IMODE((tmp_path / "internal-jwt.secret").stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name not in FILES]  # no temp files left


def test_seed_is_deterministic(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert keygen("--out", str(a), "--seed", "suite").returncode == 0
    assert keygen("--out", str(b), "--seed", "suite").returncode == 0
    assert keygen("--out", str(c), "--seed", "other").returncode == 0
    assert snapshot(a) == snapshot(b)
    for name in ("internal-jwt.secret", "admin-jwt.secret", "signing-key.kid"):
        assert snapshot(a)[name] != snapshot(c)[name], name
    assert snapshot(a)["internal-jwt.secret"] != snapshot(a)["admin-jwt.secret"]
    public = serialization.load_pem_public_key(snapshot(a)["signing-key.pub.pem"])
    assert snapshot(a)["signing-key.kid"].decode().strip() == thumbprint(public)


def test_random_runs_differ(tmp_path):
    assert keygen("--out", str(tmp_path / "x")).returncode == 0
    assert keygen("--out", str(tmp_path / "y")).returncode == 0
    x, y = snapshot(tmp_path / "x"), snapshot(tmp_path / "y")
    for name in FILES:
        assert x[name] != y[name], name


def test_unusable_folder_fails_cleanly(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    result = keygen("--out", str(tmp_path / "a-file" / "keys"))
    assert result.returncode not in (0, 2)
    assert "Traceback" not in result.stderr
    assert "a-file" in result.stderr
