"""The runner as a whole, started by another tool (flake-check, bench-parallel): a run's exit code, wall time and
outcomes."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tools.parallel.model import PARALLEL_DIR, ROOT

OUTCOMES = PARALLEL_DIR / "outcomes.json"


@dataclass
class RunnerRun:
    code: int
    seconds: float
    outcomes: dict | None  # the run's outcomes.json; None when it wrote none (it could not start)


def run_runner(args: list[str], log: Path) -> RunnerRun:
    """scripts/run-parallel ARGS with its output in `log`."""
    OUTCOMES.unlink(missing_ok=True)  # an earlier run's outcomes must not pass for this one's
    started = time.monotonic()
    with open(log, "w") as handle:
        code = subprocess.run([sys.executable, "-m", "tools.parallel", *args], cwd=ROOT, stdout=handle,
                              stderr=subprocess.STDOUT).returncode
    seconds = time.monotonic() - started
    try:
        outcomes = json.loads(OUTCOMES.read_text())
    except (OSError, ValueError):
        outcomes = None
    return RunnerRun(code, seconds, outcomes)
