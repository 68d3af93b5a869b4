"""What the benchmarks share: an embedded stack on a database, timing a behave run, percentiles, the machine's
load and CPU time, and a table of figures."""
from __future__ import annotations

import math
import os
import re
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from support.harness.config import SuiteSetupError
from support.harness.config import load as suite_config
from support.stacks import Endpoints, Stack, make_stack
from tools.project import project_root

POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


# ---- the stack ---------------------------------------------------------------------------------------------------

def userdata(database: str) -> dict[str, str]:
    """The suite options of an embedded stack on `database`: "sqlite", or a PostgreSQL server URL (the stack makes a
    fresh database there and drops it when it goes down)."""
    return {} if database == "sqlite" else {"database_url": database}


def label(database: str) -> str:
    return "SQLite" if database == "sqlite" else "PostgreSQL"


@contextmanager
def embedded_stack(database: str, **options: str) -> Iterator[tuple[Stack, Endpoints]]:
    """An embedded stack (model stub and gateway as child processes, the suite's defaults and these -D options,
    SUITE_* variables ignored) that is up for the block and down after it."""
    stack = make_stack(suite_config({**userdata(database), **options}, environ={}))
    try:
        try:
            endpoints = stack.up()
        except SuiteSetupError as problem:
            raise SystemExit(f"bench: the stack did not start: {problem}") from None
        yield stack, endpoints
    finally:
        stack.down()


def cold_start(database: str) -> float:
    """Seconds from nothing to a stack whose /readyz answers 200 (keygen, database, migrations, processes)."""
    stack = make_stack(suite_config(userdata(database), environ={}))
    started = time.perf_counter()
    try:
        stack.up()
        return time.perf_counter() - started
    finally:
        stack.down()


# ---- behave, timed -------------------------------------------------------------------------------------------------

@dataclass
class BehaveRun:
    seconds: float  # wall time
    cpu: float  # CPU time of behave and its processes (user + system)
    code: int
    summary: str  # behave's "N scenarios passed, ..." line, or the last line it wrote on stderr

    @property
    def ok(self) -> bool:
        return self.code == 0


def behave_run(paths: list[str], database: str) -> BehaveRun:
    """`behave PATHS` as a user runs it (its own cold stack included), on `database`."""
    command = [sys.executable, "-m", "behave", *paths, "-f", "progress", "-o", os.devnull, "--no-junit"]
    if database != "sqlite":
        command += ["-D", f"database_url={database}"]
    started, cpu_before = time.perf_counter(), children_cpu()
    done = subprocess.run(command, cwd=project_root(), capture_output=True, text=True)
    seconds, cpu = time.perf_counter() - started, children_cpu() - cpu_before
    summary = next((line for line in done.stdout.splitlines() if re.match(r"\d+ scenarios? passed", line)),
                   done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no summary")
    return BehaveRun(seconds, cpu, done.returncode, summary)


# ---- the machine ---------------------------------------------------------------------------------------------------

def children_cpu() -> float:
    """CPU time of every finished child process so far (behave, gateway, stub, keygen), user + system."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (Linux /proc), 0 when it cannot be read."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, TypeError):
        return 0.0


def postgres_cpu_seconds() -> float:
    """CPU time so far of every process named postgres on this machine (the server the gateway may use)."""
    total = 0.0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if open(f"/proc/{entry.name}/comm").read().strip() == "postgres":
                    total += cpu_seconds(int(entry.name))
            except OSError:
                continue
    return total


class DatabaseCpu:
    """CPU time of the PostgreSQL processes that work for one database: its connections, and the server's own
    background processes (WAL writer, checkpointer, ...), which work for every database. Other databases'
    connections (another run on a shared server) are left out, unlike postgres_cpu_seconds. A connection that closes
    between start() and ms_per() is lost; the gateway keeps its pools open."""

    def __init__(self, engine):
        self.engine = engine
        self.before: dict[int, float] = {}

    def pids(self) -> list[int]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return list(conn.scalars(text("SELECT pid FROM pg_stat_activity WHERE (datname = current_database() OR "
                                          "datname IS NULL) AND pid <> pg_backend_pid()")))

    def start(self) -> None:
        self.before = {pid: cpu_seconds(pid) for pid in self.pids()}

    def ms_per(self, requests: int) -> float:
        return sum(cpu_seconds(pid) - self.before.get(pid, 0.0) for pid in self.pids()) * 1000 / requests


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far (Linux /proc/stat), (0, 0) when it cannot be read."""
    try:
        fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, e.g. "0.52 0.40 0.31"."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def reference_loop_ms(rounds: int = 5) -> float:
    """CPU milliseconds this machine takes for a fixed pure-Python loop (the fastest of `rounds`): a yardstick for
    comparing a benchmark's figures across machines and moments, which differ by 2x and more (seen on one machine
    within a minute: 36 to 66 ms)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        total = 0
        for number in range(1_000_000):
            total += number
        best = min(best, time.process_time() - started)
    return round(best * 1000, 1)


# ---- figures -------------------------------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, q between 0 and 1."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class Table:
    """Columns of figures under a header line: Table(("database", 11), ("wall time", 12)); the first column is
    aligned left, the others right; a row's cells are already formatted, and text after them is printed as is."""

    def __init__(self, *columns: tuple[str, int]):
        self.columns = columns

    def line(self, *cells: str) -> str:
        shown = [f"{cell:<{width}}" if k == 0 else f"{cell:>{width}}"
                 for k, (cell, (_, width)) in enumerate(zip(cells, self.columns))]
        rest = list(cells[len(self.columns):])
        return " ".join(shown) + ("  " + " ".join(rest) if rest else "")

    def header(self, after: str = "") -> None:
        print(self.line(*(title for title, _ in self.columns), *([after] if after else [])), flush=True)

    def row(self, *cells: str) -> None:
        print(self.line(*cells), flush=True)
