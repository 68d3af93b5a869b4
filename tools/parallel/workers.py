"""The behave processes: the dry run that lists the selection, and the workers (start, wait, stop, outcomes)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from behave.version import VERSION as behave_version

from support.harness.redaction import mask_url
from tools.defines import define_args
from tools.parallel.model import (COLLECTION_FILE, JOURNAL_ENV, NOT_RUN, PARALLEL_DIR, PASSED, QUEUE_ENV, ROOT, SKIPPED,
                                  Queue, RunError, Scenario, Worker, kind_of)

PYTHON = sys.executable


def selection_args(args) -> list[str]:
    return [f"--tags={expr}" for expr in args.tags] + list(args.behave_extra)


def collect_scenarios(args, defines: dict[str, str]) -> list[Scenario]:
    """The scenarios the paths and tags select, from a behave dry run (tools.parallel.collect), or the previous run's
    list when nothing it depends on changed (COLLECTION_FILE): the dry run took half a second before anything else
    could start."""
    behave_args = [*selection_args(args), *define_args(defines), *args.paths]
    key = collection_key(behave_args, args.paths)
    raw = kept_collection(key)
    if raw is None:
        with tempfile.TemporaryDirectory(prefix="run-parallel-") as scratch:
            out = Path(scratch) / "plan.json"
            done = subprocess.run([PYTHON, "-m", "tools.parallel.collect", str(out), *behave_args], cwd=ROOT,
                                  capture_output=True, text=True)
            if not out.exists():
                output = (done.stdout + done.stderr).strip().splitlines()
                raise RunError("behave could not collect the scenarios (exit "
                               f"{done.returncode}):\n  " + "\n  ".join(output[-25:]))
            raw = json.loads(out.read_text())
        if key is not None:
            COLLECTION_FILE.parent.mkdir(parents=True, exist_ok=True)
            COLLECTION_FILE.write_text(json.dumps({"key": key, "scenarios": raw}) + "\n")
    return [Scenario(**item) for item in raw]


def collection_key(behave_args: list[str], paths: list[str]) -> str | None:
    """A digest of all a collection depends on: the arguments, behave's version, behave.ini, the collector and every
    feature file the paths reach, by content. None (nothing kept) when a path is not a plain file or folder here."""
    digest = hashlib.sha256(json.dumps([behave_args, behave_version]).encode())
    for fixed in (ROOT / "behave.ini", ROOT / "tools" / "parallel" / "collect.py"):
        digest.update(fixed.read_bytes() if fixed.is_file() else b"-")
    for given in paths or ["features"]:
        path = ROOT / re.sub(r"(:\d+)+$", "", given)  # FILE:LINE selects in FILE
        if given.startswith("@") or not path.exists():
            return None
        for feature in sorted(path.rglob("*.feature")) if path.is_dir() else [path]:
            digest.update(str(feature.relative_to(ROOT)).encode() + b"\0" + feature.read_bytes())
    return digest.hexdigest()


def kept_collection(key: str | None) -> list[dict] | None:
    if key is None:
        return None
    try:
        kept = json.loads(COLLECTION_FILE.read_text())
    except (OSError, ValueError):
        return None
    return kept.get("scenarios") if isinstance(kept, dict) and kept.get("key") == key else None


def worker_command(worker: Worker, args, defines: dict[str, str]) -> list[str]:
    return [PYTHON, "-m", "tools.parallel.worker", "--runner", "tools.parallel.ordered_runner:OrderedRunner",
            "-f", "json", "-o", str(worker.json_file().relative_to(ROOT)),
            "-f", "support.client.console:ConsoleFormatter",  # into the worker's log: failures in full
            "--junit-directory", str(worker.junit_dir().relative_to(ROOT)),
            *selection_args(args), *define_args(defines),
            f"@{worker.locations_file().relative_to(ROOT)}"]


def open_queue(queue: Queue) -> None:
    """The queue's folder, read by the workers' ordered runners: its locations (absolute), and none taken yet."""
    queue.taken_dir().mkdir(parents=True)
    queue.locations_file().write_text("".join(f"{ROOT / s.location}\n" for s in queue.scenarios))


def start_worker(worker: Worker, args, defines: dict[str, str]) -> None:
    # behave reads the paths of an @file relative to the file's folder. A worker that takes from the queue is
    # given all of the queue's scenarios too, after its own; its ordered runner skips those another one took.
    listed = worker.scenarios + worker.queue_order()
    worker.locations_file().write_text("".join(
        os.path.relpath(ROOT / s.location, worker.locations_file().parent) + "\n" for s in listed))
    command = worker_command(worker, args, defines)
    shown = [f"database_url={mask_url(a.split('=', 1)[1])}" if a.startswith("database_url=") else a for a in command]
    (PARALLEL_DIR / f"{worker.name}.command").write_text(" ".join(shown) + "\n")
    log = open(worker.log_file(), "wb")
    worker.started = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop(QUEUE_ENV, None)
    if worker.queue:
        env[QUEUE_ENV] = str(worker.queue.locations_file().parent)
    env[JOURNAL_ENV] = str(worker.journal_file())
    worker.process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                                      start_new_session=True)
    log.close()


def wait_workers(workers: list[Worker], until: list[Worker] | None = None) -> None:
    """Notes each of `workers` as it finishes; returns once every one of `until` (default: all) has."""
    running = [w for w in workers if w.exit_code is None]
    awaited = [w for w in (workers if until is None else until) if w.exit_code is None]
    while any(w.exit_code is None for w in awaited):
        for worker in list(running):
            code = worker.process.poll()
            if code is None:
                continue
            worker.exit_code = code
            worker.seconds = time.monotonic() - worker.started
            running.remove(worker)
            add_taken(worker)
            read_outcomes(worker)
            counts = Counter(kind_of(o["status"]) for o in worker.outcomes.values())
            print(f"run-parallel: {worker.name} finished in {worker.seconds:.1f} s: {counts[PASSED]} passed, "
                  f"{counts['failed'] + counts[NOT_RUN]} failed or not run, {counts[SKIPPED]} skipped (exit {code})",
                  flush=True)
        if any(w.exit_code is None for w in awaited):
            time.sleep(0.1)  # the polling period: a worker's end is noticed within it


def stop_workers(workers: list[Worker]) -> None:
    for worker in workers:
        if worker.process is not None and worker.process.poll() is None:
            try:
                os.killpg(worker.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
    for worker in workers:
        if worker.process is not None:
            try:
                worker.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(worker.process.pid, signal.SIGKILL)
                worker.process.wait(timeout=15)


STEP_FAILURES = ("failed", "error", "hook_error", "undefined")


def scenario_status(element: dict) -> str | None:
    """A scenario's status in behave's JSON report. behave 1.3 leaves it out for the last scenario of a Rule; it is
    then read from the steps: failed if one failed, passed if all passed, skipped if all were skipped or none is
    listed (a scenario skipped before its steps)."""
    if element.get("status"):
        return element["status"]
    statuses = [(step.get("result") or {}).get("status") for step in element.get("steps") or []]
    if not statuses:
        return "skipped"
    if any(status in STEP_FAILURES for status in statuses):
        return "failed"
    for verdict in ("passed", "skipped"):
        if statuses and all(status == verdict for status in statuses):
            return verdict
    return None


def reported_outcomes(json_file: Path) -> dict[str, dict]:
    """location -> {status, seconds, error} of each scenario in a behave JSON report (none if it is unreadable)."""
    reported: dict[str, dict] = {}
    try:
        features = json.loads(json_file.read_text())
    except (OSError, ValueError):
        features = []
    for feature in features or []:
        for element in feature.get("elements", []):
            if element.get("type") == "background":
                continue
            steps = element.get("steps", [])
            seconds = sum((step.get("result") or {}).get("duration") or 0 for step in steps)
            problem = next(((step.get("result") or {}).get("error_message") or
                            f"step {(step.get('result') or {}).get('status')}: {step.get('keyword', '')} "
                            f"{step.get('name', '')}".strip()
                            for step in steps
                            if (step.get("result") or {}).get("status") not in (None, "passed", "skipped")),
                           None)
            if isinstance(problem, list):  # behave's JSON report splits a message into lines
                problem = "\n".join(problem)
            reported[element.get("location")] = {"status": scenario_status(element), "seconds": seconds,
                                                 "error": problem}
    return reported


def add_taken(worker: Worker) -> None:
    """A worker that has ended: the scenarios it took from the queue become its own, for the outcomes."""
    if worker.queue is not None:
        taken = worker.queue.taken_by()
        worker.scenarios = worker.scenarios + [s for s in worker.queue.scenarios
                                               if taken.get(s.location) == worker.name]


def left_in_queue(workers: list[Worker]) -> None:
    """Scenarios still in the queue when every worker that takes from it has ended (they all stopped early): each
    counts as not run, on the account of a worker that failed, or else the first one."""
    takers = [w for w in workers if w.queue is not None]
    if not takers:
        return
    taken, names = takers[0].queue.taken_by(), {w.name for w in takers}
    # (a worker cut off between taking a scenario and writing its name leaves it nameless: left, too)
    left = [s for s in takers[0].queue.scenarios if taken.get(s.location) not in names]
    if not left:
        return
    holder = next((w for w in takers if w.exit_code), takers[0])
    holder.scenarios = holder.scenarios + left
    ended = ", ".join(f"{w.name} exited {w.exit_code}" for w in takers)
    for s in left:
        holder.outcomes[s.location] = {"status": NOT_RUN, "seconds": 0.0, "name": s.name, "worker": holder.name,
                                       "error": f"no worker took it from the shared queue ({ended})"}


def journaled_outcomes(journal: Path) -> dict[str, dict]:
    """location -> {status, seconds, error} of each scenario in a worker's journal (a line cut short is left out)."""
    journaled: dict[str, dict] = {}
    try:
        lines = journal.read_text().splitlines()
    except OSError:
        return journaled
    for line in lines:
        try:
            entry = json.loads(line)
            journaled[entry["location"]] = {"status": entry["status"], "seconds": float(entry["seconds"]),
                                            "error": entry.get("error")}
        except (ValueError, KeyError, TypeError):
            continue
    return journaled


def read_outcomes(worker: Worker) -> None:
    """Each planned scenario's status from the worker's behave JSON report or, for a worker that ended before
    writing it (killed, crashed), from its journal; planned but in neither = not run."""
    reported = {**journaled_outcomes(worker.journal_file()), **reported_outcomes(worker.json_file())}
    log = worker.log_file().relative_to(ROOT)
    for s in worker.scenarios:
        seen = reported.get(s.location)
        if seen is not None and seen["status"] == SKIPPED:
            # It was selected by its location, so a step or hook skipped it (e.g. a capability this stack lacks).
            seen = {**seen, "error": f"skipped at run time by a step or hook; see {log}"}
        elif seen is None or seen["status"] in ("untested", None):
            seen = {"status": NOT_RUN, "seconds": 0.0,
                    "error": f"no result from worker {worker.name} (exit {worker.exit_code}); see {log}"}
        worker.outcomes[s.location] = {**seen, "name": s.name, "worker": worker.name}
