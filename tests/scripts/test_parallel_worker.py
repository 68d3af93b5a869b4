"""The worker's entry point (tools/parallel/worker.py): behave with the given arguments, its exit code, and an end
that skips the interpreter's teardown but not the exit handlers or the output."""
from __future__ import annotations

import json
import subprocess
import sys

from tools.parallel.model import ROOT


def worker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.parallel.worker", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_the_worker_runs_behave_with_its_arguments_and_leaves_its_report_whole(tmp_path):
    report = tmp_path / "report.json"
    done = worker("--dry-run", "-f", "json", "-o", str(report), "-f", "null", "features/health")
    assert done.returncode == 0, done.stdout + done.stderr
    features = json.loads(report.read_text())
    assert [f["location"].split(":")[0] for f in features] and all(
        f["location"].startswith("features/health/") for f in features)


def test_the_worker_exits_with_behaves_code():
    done = worker("--format", "no-such-format", "--dry-run", "features/health")
    assert done.returncode != 0 and "no-such-format" in done.stdout + done.stderr


def test_ending_now_runs_the_exit_handlers_and_flushes_the_output():
    done = subprocess.run([sys.executable, "-c", "import atexit, sys\n"
                           "atexit.register(lambda: print('exit handler ran'))\n"
                           "sys.stdout.write('buffered line')\n"
                           "from tools.parallel.worker import end_now\n"
                           "end_now(3)\n"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert "buffered line" in done.stdout and "exit handler ran" in done.stdout
