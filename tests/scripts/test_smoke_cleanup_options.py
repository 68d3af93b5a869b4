"""scripts/smoke, scripts/cleanup and scripts/options from the command line: what they say when something is wrong,
at once and in one line."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "scripts" / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=60)


def test_smoke_against_a_gateway_that_is_down_fails_at_once_with_one_line(tmp_path):
    started = time.monotonic()
    done = run("smoke", "http://127.0.0.1:9", "-D", f"keys_dir={tmp_path}")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "smoke: the gateway at http://127.0.0.1:9 is down (connection refused): start it, or fix " \
                          "-D base_url\n"
    assert time.monotonic() - started < 10


def test_smoke_without_a_keys_folder_says_which_option_to_add():
    done = run("smoke", "http://127.0.0.1:9")
    assert done.returncode == 2 and "add -D keys_dir=DIR" in done.stderr and len(done.stderr.splitlines()) == 1


def test_cleanup_needs_a_run_or_an_age_it_can_read(tmp_path):
    assert run("cleanup", "http://127.0.0.1:9", "--keys-dir", str(tmp_path)).returncode == 2
    refused = run("cleanup", "http://127.0.0.1:9", "--keys-dir", str(tmp_path), "--older-than", "soon")
    assert refused.returncode == 2 and "use e.g. 90m, 2h or 1d" in refused.stderr


def test_options_lists_every_option():
    done = run("options")
    assert done.returncode == 0 and "  stack  (default: local)" in done.stdout and "  cleanup  (default: true)" in \
        done.stdout


def test_cleanup_with_a_keys_folder_that_is_not_one_says_so(tmp_path):
    done = run("cleanup", "http://127.0.0.1:9", "--keys-dir", str(tmp_path), "--run-id", "r1")
    assert done.returncode == 2 and "scripts/keygen" in done.stderr and len(done.stderr.splitlines()) == 1
