"""Runs inside a behave process: the selected scenarios in the order their locations are given.

``behave --runner tools.parallel.ordered_runner:OrderedRunner FILE:LINE... | @FILE`` runs features by their first
location, then the scenarios, rules and outline rows inside each feature in the order given, instead of file
order. behave alone always runs a feature's scenarios top to bottom, which hides coupling between them.

With PARALLEL_QUEUE set (the folder of run-parallel's shared queue), the scenarios whose locations its `locations`
file lists are shared with other workers: before running one, the worker takes it by creating the file named by its
index in `taken/` (an exclusive create, so exactly one worker wins). One another worker took is left out, as a
scenario outside the selection is: it is neither run nor reported (behave.ini: show_skipped = false), and neither is
a feature or rule that has nothing left for this worker.

With PARALLEL_JOURNAL set, each scenario this worker runs adds a line to that file: its location,
status, seconds and first problem, written at once, so a worker that is killed still tells what it ran.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from behave.model import Rule, ScenarioOutline
from behave.runner_util import collect_feature_locations

from support.harness.redaction import mask_text
from support.runner import SuiteRunner
from tools.parallel.model import JOURNAL_ENV, QUEUE_ENV

__all__ = ["OrderedRunner"]


class OrderedRunner(SuiteRunner):
    """The suite's runner, but features and scenarios run in the order of the given locations."""

    def run_model(self, features=None):
        order = {}
        try:
            for location in collect_feature_locations(self.config.paths):
                if location.line:
                    order.setdefault((os.path.abspath(location.filename), location.line), len(order))
        except Exception:  # pylint: disable=broad-except  (never stop a run over ordering)
            order = {}
        if order:
            self._reorder(self.features, order)
        journal = os.environ.get(JOURNAL_ENV)
        if journal:
            Journal(Path(journal)).keep(self.features)
        queue = os.environ.get(QUEUE_ENV)
        if queue:
            SharedQueue(Path(queue), self.config.userdata.get("worker", str(os.getpid()))).share(self.features)
        return super().run_model(features)

    @classmethod
    def _position(cls, item, order) -> float:
        if isinstance(item, (Rule, ScenarioOutline)) or hasattr(item, "run_items"):
            scenarios = item.walk_scenarios() if hasattr(item, "walk_scenarios") else item.scenarios
        else:
            scenarios = [item]
        positions = [order.get((os.path.abspath(s.filename), s.line)) for s in scenarios]
        positions = [p for p in positions if p is not None]
        return min(positions) if positions else float("inf")

    @classmethod
    def _reorder(cls, features, order) -> None:
        features.sort(key=lambda feature: cls._position(feature, order))
        for feature in features:
            cls._reorder_container(feature, order)

    @classmethod
    def _reorder_container(cls, container, order) -> None:
        container.run_items.sort(key=lambda item: cls._position(item, order))
        for item in container.run_items:
            if isinstance(item, Rule):
                cls._reorder_container(item, order)
            elif isinstance(item, ScenarioOutline):
                item.scenarios.sort(key=lambda row: cls._position(row, order))


class SharedQueue:
    """The scenarios this worker shares with others: it runs one only if it is the first to take it."""

    def __init__(self, folder: Path, worker: str):
        self.taken = folder / "taken"
        self.worker = worker
        self.index = {}
        for number, location in enumerate((folder / "locations").read_text().splitlines()):
            filename, _, line = location.rpartition(":")
            self.index[(os.path.abspath(filename), int(line))] = number

    def share(self, features) -> None:
        from support.scenario import RUNS_IF_FREE  # (loaded by now, with environment.py: not before the stack starts)

        for feature in features:
            containers = [feature] + [item for item in feature.run_items if isinstance(item, Rule)]
            for container in containers:
                self._share_container(container)
            for scenario in feature.walk_scenarios():
                if self._number(scenario) is not None:
                    scenario.run = self._if_taken_here(scenario, scenario.run)
                    setattr(scenario, RUNS_IF_FREE, True)

    def _share_container(self, container) -> None:
        """A feature or rule: not run at all when every one of its scenarios that this worker could run is queued
        and taken already."""
        queued = [s for s in container.walk_scenarios() if self._number(s) is not None and not s.should_skip]
        if queued:
            own = any(self._number(s) is None and not s.should_skip for s in container.walk_scenarios())
            container.run = self._unless_all_taken(container, container.run, queued, own)

    def _number(self, scenario) -> int | None:
        return self.index.get((os.path.abspath(scenario.filename), scenario.line))

    def _take(self, number: int) -> bool:
        try:
            fd = os.open(self.taken / str(number), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        os.write(fd, self.worker.encode())
        os.close(fd)
        return True

    def _if_taken_here(self, scenario, run):
        @functools.wraps(run)
        def run_if_taken_here(runner):
            if not scenario.should_skip and not self._take(self._number(scenario)):
                scenario.mark_skipped()  # another worker runs it
            return run(runner)
        return run_if_taken_here

    def _unless_all_taken(self, container, run, queued, has_own: bool):
        @functools.wraps(run)
        def run_unless_all_taken(runner):
            if not has_own and all((self.taken / str(self._number(s))).exists() for s in queued):
                container.mark_skipped()  # nothing left here for this worker: not reported at all
            return run(runner)
        return run_unless_all_taken


class Journal:
    """Each scenario's outcome as it ends, a JSON line appended in one write."""

    PASSED_OR_NOT_REACHED = (None, "passed", "skipped", "untested")

    def __init__(self, path: Path):
        self.path = path

    def keep(self, features) -> None:
        for feature in features:
            for scenario in feature.walk_scenarios():
                scenario.run = self._noted(scenario, scenario.run)

    def _noted(self, scenario, run):
        @functools.wraps(run)
        def run_and_note(runner):
            left_out = scenario.should_skip  # outside the selection, or taken by another worker: not run here
            failed = run(runner)
            if not left_out:
                self.note(scenario)
            return failed
        return run_and_note

    def note(self, scenario) -> None:
        problem = next((step.error_message or f"step {step.status.name}: {step.keyword} {step.name}"
                        for step in scenario.all_steps if step.status.name not in self.PASSED_OR_NOT_REACHED), None)
        if problem is None and scenario.status.name == "hook_error":
            problem = getattr(scenario, "error_message", None) or "a hook failed"
        line = json.dumps({"location": str(scenario.location), "status": scenario.status.name,
                           "seconds": round(scenario.duration or 0.0, 4), "error": problem and mask_text(problem)})
        with open(self.path, "a", encoding="utf-8") as journal:  # (O_APPEND: one line lands whole)
            journal.write(line + "\n")
