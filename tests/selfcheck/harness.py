"""Runs the deliberately failing feature set once per pytest session and reads back what it wrote.

The run: `python -m behave tests/selfcheck/features` from a scratch folder (so the project's behave.ini, with
its own output folders, is not merged in), with the project's steps and hooks (tests/selfcheck/steps and
environment.py load them), the Allure formatter, the pretty formatter and JUnit XML, against the embedded stack
on keys this harness made (so it knows the HS256 secrets independently of the suite). Its outputs stay under
artifacts/selfcheck/ for inspection: they must hold no secret, which is what the self-check proves. The list of
secrets the run handled is written to a temporary folder and deleted when the session ends.
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv" / "bin" / "python"
FEATURES = ROOT / "tests" / "selfcheck" / "features"
OUT = ROOT / "artifacts" / "selfcheck"

# What the feature set is built to produce (tests/selfcheck/features/selfcheck/selfcheck.evidence.feature).
EXPECTED_FAILED_STEPS = 7
EXPECTED_PASSED_SCENARIOS = 1


@dataclass
class Run:
    returncode: int
    console: str
    seconds: float
    results: Path
    junit: Path
    secrets: dict[str, str]  # value -> kind
    results_by_name: dict[str, dict] = field(default_factory=dict)

    def failed_steps(self) -> list[tuple[dict, dict]]:
        """(test result, step) for every step that failed or broke."""
        found = []
        for result in self.results_by_name.values():
            for step in result.get("steps", []):
                if step.get("status") in ("failed", "broken"):
                    found.append((result, step))
        return found

    def attachment(self, attachment: dict) -> str:
        return (self.results / attachment["source"]).read_text(encoding="utf-8", errors="replace")

    def output_files(self) -> list[Path]:
        return sorted(p for p in list(self.results.iterdir()) + list(self.junit.rglob("*")) if p.is_file())


_RUN: Run | None = None


def run_selfcheck() -> Run:
    global _RUN
    if _RUN is None:
        _RUN = _run()
    return _RUN


def _run() -> Run:
    scratch = Path(tempfile.mkdtemp(prefix="selfcheck-"))
    atexit.register(shutil.rmtree, scratch, True)  # the keys and the list of raw secrets go with it
    keys = scratch / "keys"
    python = str(PYTHON if PYTHON.exists() else Path(sys.executable))
    subprocess.run([python, str(ROOT / "scripts" / "keygen"), "--out", str(keys)], check=True,
                   capture_output=True, text=True)
    secrets_file = scratch / "secrets.jsonl"
    if OUT.exists():
        shutil.rmtree(OUT)
    results, junit, console = OUT / "allure-results", OUT / "junit", OUT / "console.txt"
    junit.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SUITE_STACK", None)
    started = time.monotonic()
    proc = subprocess.run(
        [python, "-m", "behave", str(FEATURES),
         "-f", "support.client.reporting:AllureFormatter", "-o", str(results),
         "-f", "pretty", "-o", str(console),
         "--junit", "--junit-directory", str(junit), "--no-color",
         "-D", f"keys_dir={keys}", "-D", f"selfcheck.secrets_file={secrets_file}"],
        cwd=scratch, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - started
    console_text = proc.stdout + proc.stderr + (console.read_text(encoding="utf-8") if console.exists() else "")
    (OUT / "behave-output.txt").write_text(proc.stdout + proc.stderr, encoding="utf-8")

    held: dict[str, str] = {}
    if secrets_file.exists():
        for line in secrets_file.read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            held.setdefault(item["value"], item["kind"])
    for name in ("internal-jwt.secret", "admin-jwt.secret"):  # known to this harness, not only to the run
        held.setdefault((keys / name).read_text().strip(), "HS256 secret")
    private = (keys / "signing-key.pem").read_text().splitlines()
    held.setdefault("".join(line for line in private if not line.startswith("-----")), "private key")
    for line in private:
        if not line.startswith("-----") and len(line) >= 40:
            held.setdefault(line, "private key")

    run = Run(proc.returncode, console_text, seconds, results, junit, held)
    for path in results.glob("*-result.json"):
        result = json.loads(path.read_text(encoding="utf-8"))
        run.results_by_name[result["name"]] = result
    return run
