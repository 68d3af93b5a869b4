"""What a parallel run is made of: the selected scenarios, the workers that run them, and where their files go."""
from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tools.project import project_root

ROOT = project_root()
REPORTS = ROOT / "reports"
PARALLEL_DIR = REPORTS / "parallel"
QUEUE_DIR = PARALLEL_DIR / "queue"  # the shared queue: its locations, and a file per scenario taken
QUEUE_ENV = "PARALLEL_QUEUE"  # tells a worker's ordered runner where the shared queue is
JOURNAL_ENV = "PARALLEL_JOURNAL"  # the file a worker's ordered runner adds each finished scenario's outcome to
JUNIT_DIR = REPORTS / "junit"
TIMINGS_FILE = REPORTS / "timings.json"
COLLECTION_FILE = REPORTS / "collection.json"  # the last collection, kept with a digest of what it depended on


def timings_file(jobs: int) -> Path:
    """The durations kept by runs at this -j: side by side, scenarios take longer than alone (they share the
    cores), so a plan for -j 2 is weighed by what -j 2 runs measured."""
    return REPORTS / f"timings-j{jobs}.json"
PASSED, SKIPPED, NOT_RUN = "passed", "skipped", "not run"


class RunError(Exception):
    """The run cannot start; the message says what to do (exit 2)."""


class Interrupted(Exception):
    pass


def kind_of(status: str) -> str:
    """passed, skipped, not run, or failed (behave's failed, error, undefined...)."""
    return status if status in (PASSED, SKIPPED, NOT_RUN) else "failed"


@dataclass
class Scenario:
    location: str
    file: str
    line: int
    feature: str
    name: str
    rule: str | None = None
    tags: list[str] = field(default_factory=list)
    estimate: float = 1.0

    @property
    def stable_key(self) -> str:
        """The same on every machine for the same checkout: decides shard membership and tie-breaks."""
        return hashlib.sha1(f"{self.location}:{self.name}".encode()).hexdigest()

    @property
    def timing_key(self) -> str:
        """Survives lines moving when a file is edited (the name of an outline row includes its row id)."""
        return f"{self.file}::{self.name}"

    def allure_names(self) -> set[str]:
        """The fullName an Allure result of this scenario carries (with or without its Rule)."""
        base = " ".join(self.name.split(" -- ")[0].split())
        names = {f"{self.feature}: {base}"}
        if self.rule:
            names.add(f"{self.feature}: {self.rule}: {base}")
        return {" ".join(n.split()) for n in names}


@dataclass
class Queue:
    """Ordinary scenarios no worker is given in advance: each goes to the first worker free to take it, so the
    workers end together however fast this machine runs each kind of scenario. Longest first; a worker takes from
    one end or the other (Worker.shortest_first), and they meet in the middle."""
    scenarios: list[Scenario]

    @property
    def estimate(self) -> float:
        return sum(s.estimate for s in self.scenarios)

    @staticmethod
    def locations_file() -> Path:
        return QUEUE_DIR / "locations"

    @staticmethod
    def taken_dir() -> Path:
        return QUEUE_DIR / "taken"

    def taken_by(self) -> dict[str, str]:
        """location -> the worker that took it, from the files the workers' ordered runners made."""
        by_index = {}
        for path in self.taken_dir().glob("*") if self.taken_dir().exists() else []:
            by_index[int(path.name)] = path.read_text().strip()
        return {s.location: by_index[i] for i, s in enumerate(self.scenarios) if i in by_index}


@dataclass
class Worker:
    name: str
    scenarios: list[Scenario]  # given in advance; those it takes from the queue are added when it is done
    own_stack: bool = False  # brings up a stack of its own (the private worker, or the @serial one run after)
    after: bool = False  # starts only when the shared-stack workers are done
    queue: Queue | None = None  # after its own scenarios, it takes from this queue
    shortest_first: bool = False  # takes from the queue's short end (see planning.queued)
    process: subprocess.Popen | None = None
    started: float = 0.0
    seconds: float = 0.0
    exit_code: int | None = None
    outcomes: dict[str, dict] = field(default_factory=dict)

    @property
    def estimate(self) -> float:
        return sum(s.estimate for s in self.scenarios)

    def queue_order(self) -> list[Scenario]:
        """The queue's scenarios in the order this worker tries to take them."""
        if self.queue is None:
            return []
        return self.queue.scenarios[::-1] if self.shortest_first else self.queue.scenarios

    def locations_file(self) -> Path:
        return PARALLEL_DIR / f"{self.name}.locations"

    def log_file(self) -> Path:
        return PARALLEL_DIR / f"{self.name}.log"

    def json_file(self) -> Path:
        return PARALLEL_DIR / f"{self.name}.json"

    def journal_file(self) -> Path:
        """A line per scenario as it ends (behave writes its JSON report only when the worker ends well)."""
        return PARALLEL_DIR / f"{self.name}.journal"

    def junit_dir(self) -> Path:
        return JUNIT_DIR / self.name
