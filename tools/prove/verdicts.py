"""One behave run against a broken gateway (or a corrupting proxy), and what it says: caught or not, by which step,
and whether that step's failure message carries the request id a reader needs to find the exchange."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tools.parallel.workers import scenario_status

KILLED, SURVIVED, BROKEN, TIMED_OUT = "killed", "survived", "broken", "timed out"
NOT_RUN = "not run"  # every scenario was skipped: this stack lacks what they need (-D options in docs/proving.md)
# A kill that a run without the fault repeats proves nothing: the scenario fails anyway.
UNPROVEN = "unproven"
FAILED_STATUSES = {"failed", "error", "hook_error", "undefined"}  # tools.parallel.workers.STEP_FAILURES
MESSAGE_LINES = 6  # of a failure message, kept in the results


@dataclass
class Verdict:
    name: str  # the fault's (or corruption's)
    outcome: str  # KILLED, SURVIVED, BROKEN, TIMED_OUT, UNPROVEN
    seconds: float
    targets: list[str] = field(default_factory=list)
    scenario: str | None = None  # FILE:LINE of the scenario that failed
    scenario_name: str | None = None
    step: str | None = None  # the failing step as written, with its location
    message: str | None = None  # the start of its failure message
    carries_request_id: bool | None = None
    detail: str | None = None  # why a run is broken or timed out: the end of its output
    log: str | None = None

    @property
    def caught_in(self) -> str | None:
        """The capability folder of the scenario that caught it."""
        parts = Path(self.scenario.split(":")[0]).parts if self.scenario else ()
        return parts[1] if len(parts) > 2 else None

    def as_json(self) -> dict:
        return {**asdict(self), "caught_in": self.caught_in}


def request_id_pattern(run_id: str) -> re.Pattern:
    """The request ids a run sends: <run id>.<scenario hash>.<sequence> (support/harness/namespace.py)."""
    return re.compile(re.escape(run_id) + r"\.[0-9a-f]{6}\.[0-9a-z]+", re.IGNORECASE)


def behave_command(targets: list[str], json_out: Path, run_id: str, defines: list[str], stop: bool = True
                   ) -> list[str]:
    command = [sys.executable, "-m", "behave", "-f", "json", "-o", str(json_out), "--no-junit",
               "-D", "cleanup=false", "-D", f"run_id={run_id}"]
    for define in defines:
        command += ["-D", define]
    return command + (["--stop"] if stop else []) + targets


def run_behave(root: Path, command: list[str], log: Path, timeout: float, env: dict | None = None
               ) -> tuple[int | None, float]:
    """(exit code, seconds); None as the code when it ran past `timeout` (its whole process group is killed)."""
    started = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=root, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code = None
    return code, time.monotonic() - started


def _message(result: dict) -> str:
    text = result.get("error_message") or ""
    return "\n".join(text) if isinstance(text, list) else str(text)


def failures(report: list[dict]) -> list[dict]:
    """The failed scenarios of a behave JSON report, in order: location, name, failing step, its message."""
    found = []
    for feature in report:
        for element in feature.get("elements") or []:
            if element.get("type") not in ("scenario", "scenario_outline") and "steps" not in element:
                continue
            failed_step = next((s for s in element.get("steps") or []
                                if (s.get("result") or {}).get("status") in FAILED_STATUSES), None)
            if failed_step is None and scenario_status(element) not in FAILED_STATUSES:
                continue
            found.append({"scenario": element.get("location"), "name": element.get("name"),
                          "step": (f"{failed_step['keyword']} {failed_step['name']} ({failed_step.get('location')})"
                                   if failed_step else "a hook around the scenario"),
                          "message": _message(failed_step.get("result") or {}) if failed_step else
                          _message(element)})
    return found


def scenarios_ran(report: list[dict]) -> int:
    return sum(1 for feature in report for element in feature.get("elements") or []
               if element.get("type") != "background" and scenario_status(element) in ("passed", *FAILED_STATUSES))


def read_report(path: Path) -> list[dict] | None:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return report if isinstance(report, list) else None


def tail(log: Path, lines: int = 8) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def judge(name: str, targets: list[str], code: int | None, seconds: float, report: list[dict] | None,
          run_id: str, log: Path) -> Verdict:
    verdict = Verdict(name, SURVIVED, round(seconds, 1), targets, log=str(log))
    if code is None:
        verdict.outcome, verdict.detail = TIMED_OUT, tail(log)
        return verdict
    failed = failures(report or [])
    if failed:
        first = failed[0]
        message = first["message"]
        verdict.outcome = KILLED
        verdict.scenario, verdict.scenario_name, verdict.step = first["scenario"], first["name"], first["step"]
        verdict.message = "\n".join(message.strip().splitlines()[:MESSAGE_LINES])
        verdict.carries_request_id = bool(request_id_pattern(run_id).search(message))
    elif code != 0 and scenarios_ran(report or []) == 0:  # the stack did not start, or behave could not run
        verdict.outcome, verdict.detail = BROKEN, tail(log)
    elif scenarios_ran(report or []) == 0:
        why = [line for line in tail(log, 12).splitlines() if "skipped:" in line]
        verdict.outcome, verdict.detail = NOT_RUN, why[-1] if why else "every scenario was skipped"
    elif code != 0:  # every scenario passed, and the run failed after them (the search of the logs for secrets)
        verdict.outcome, verdict.step, verdict.detail = KILLED, "after the run", tail(log)
        verdict.message = verdict.detail
        verdict.carries_request_id = False
    return verdict


def mark_unproven(verdicts: list[Verdict], control_report: list[dict] | None, without: str) -> list[str]:
    """Kills whose scenario failed in the control run too (`without`: what that run lacked) become UNPROVEN; their
    names."""
    failing = {f["scenario"]: f for f in failures(control_report or [])}
    for verdict in verdicts:
        if verdict.outcome == KILLED and verdict.scenario in failing:
            seen = failing[verdict.scenario]
            verdict.outcome = UNPROVEN
            verdict.detail = f"the scenario fails {without} too, at {seen['step']}: {seen['message'].strip()[:300]}"
    return [v.name for v in verdicts if v.outcome == UNPROVEN]
