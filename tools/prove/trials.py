"""Running the catalogue: each fault applied to a temporary copy of the repository, the features expected to catch it
run with behave --stop on the copy's embedded stack, then one control run without any fault of the scenarios that
failed, so a scenario that fails anyway is not counted as a kill."""
from __future__ import annotations

import queue
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tools.prove.faults import Fault
from tools.prove.verdicts import (KILLED, SURVIVED, Verdict, behave_command, judge, mark_unproven, read_report,
                                  run_behave)
from tools.prove.workspace import Workspace


@dataclass
class TrialOptions:
    defines: list[str]  # -D NAME=VALUE for every run (say a PostgreSQL server)
    timeout: float  # seconds one run may take
    logs: Path  # where each run's output and JSON report go
    commit: str | None  # the commit copied (None: the working tree as it is)
    wide: bool = False  # a fault that survives its features is run against the whole suite too


def run_id(number: int) -> str:
    """Short (it is in every slug the run makes) and unique to the run."""
    return f"pf{number:02d}{secrets.token_hex(2)}"


def try_fault(workspace: Workspace, number: int, fault: Fault, options: TrialOptions) -> Verdict:
    rid, log = run_id(number), options.logs / f"{fault.name}.log"
    report = options.logs / f"{fault.name}.json"
    targets = list(fault.caught_by)
    with workspace.applied(fault, number):
        code, seconds = run_behave(workspace.root, behave_command(targets, report, rid, options.defines), log,
                                   options.timeout)
        verdict = judge(fault.name, targets, code, seconds, read_report(report), rid, log)
        if verdict.outcome == SURVIVED and options.wide:  # anything else in the suite that catches it
            wide = judge(fault.name, ["(the whole suite)"], *run_behave(
                workspace.root, behave_command([], report, rid, options.defines), log, options.timeout),
                read_report(report), rid, log)
            if wide.outcome == KILLED:
                wide.seconds = round(wide.seconds + verdict.seconds, 1)
                verdict = wide
    return verdict


def try_all(numbered: list[tuple[int, Fault]], jobs: int, options: TrialOptions,
            on_verdict: Callable[[int, Fault, Verdict], None]) -> list[Verdict]:
    """Every fault, `jobs` at a time (each worker on a copy of its own); verdicts in catalogue order."""
    pending: queue.Queue = queue.Queue()
    for item in numbered:
        pending.put(item)
    verdicts: dict[str, Verdict] = {}
    problems: list[BaseException] = []

    def worker() -> None:
        try:
            workspace = Workspace.create(options.commit)
        except BaseException as problem:  # noqa: B036 - reported by the caller
            problems.append(problem)
            return
        try:
            while True:
                try:
                    number, fault = pending.get_nowait()
                except queue.Empty:
                    return
                verdicts[fault.name] = try_fault(workspace, number, fault, options)
                on_verdict(number, fault, verdicts[fault.name])
        except BaseException as problem:  # noqa: B036 - reported by the caller
            problems.append(problem)
        finally:
            workspace.remove()

    threads = [threading.Thread(target=worker, name=f"prove-{k + 1}") for k in range(max(1, jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if problems:
        raise problems[0]
    return [verdicts[fault.name] for _, fault in numbered if fault.name in verdicts]


def control(verdicts: list[Verdict], options: TrialOptions) -> Verdict | None:
    """The scenarios that caught a fault, run once more with no fault in the gateway: a kill whose scenario fails
    there too is UNPROVEN. Returns the control run's own verdict (None when there was nothing to control)."""
    locations = sorted({v.scenario for v in verdicts if v.outcome == KILLED and v.scenario})
    if not locations:
        return None
    workspace = Workspace.create(options.commit)
    try:
        rid, log, report = run_id(0), options.logs / "control.log", options.logs / "control.json"
        code, seconds = run_behave(workspace.root, behave_command(locations, report, rid, options.defines, stop=False),
                                   log, options.timeout)
        run = judge("control (no fault)", locations, code, seconds, read_report(report), rid, log)
        mark_unproven(verdicts, read_report(report), "without the fault")
    finally:
        workspace.remove()
    return run
