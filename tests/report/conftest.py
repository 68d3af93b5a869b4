"""Headless Chromium for the report tests (Debian's chromium; flags from the toolchain notes), and the report
served by scripts/serve-report."""
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
SERVE_REPORT = Path(__file__).resolve().parents[2] / "scripts" / "serve-report"


@pytest.fixture(scope="module")
def served_report(report):
    """scripts/serve-report on the module's HTML report (`report["out"]`); the URL it serves it at."""
    proc = subprocess.Popen([sys.executable, str(SERVE_REPORT), str(report["out"])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, line + proc.stderr.read()
        yield line.split(" at ", 1)[1].split()[0]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def headless_chromium(tmp_path):
    """Run Chromium headless on a fresh profile with extra arguments; skip the test when it is not installed."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium): browser check skipped")

    def run(*args, window: str = "1400,1000") -> subprocess.CompletedProcess:
        profile = tmp_path / f"chromium-profile-{time.monotonic_ns()}"
        profile.mkdir()
        return subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                               "--no-first-run", "--disable-background-networking", "--disable-component-update",
                               "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=15000",
                               f"--window-size={window}", *args], capture_output=True, text=True, timeout=180)

    return run
