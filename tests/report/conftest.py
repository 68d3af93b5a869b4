"""Headless Chromium for the report tests (Debian's chromium; flags from the toolchain notes)."""
import subprocess
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")


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
