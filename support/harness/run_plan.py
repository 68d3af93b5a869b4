"""Pieces of behave that scripts/run-parallel needs inside behave processes.

* ``collect``: ``python -m support.harness.run_plan collect PLAN.json [behave args...]`` writes the scenarios that
  the behave args select (paths, ``--tags``, behave.ini's default tags) as a JSON list, one entry per
  scenario and per outline row: location ``file:line``, feature, rule, name and effective tags. It is a
  dry run with only :class:`PlanFormatter` as formatter: the formatters of behave.ini (Allure, pretty) and
  the JUnit reporter are left out, so collecting never writes into allure-results or reports/junit.
* :class:`OrderedRunner` (``--runner support.harness.run_plan:OrderedRunner``): runs the selected scenarios in the
  order their locations are given (``FILE:LINE`` arguments or an ``@file`` of them) instead of file order:
  features by their first location, then the scenarios, rules and outline rows inside each feature.
  behave alone always runs a feature's scenarios top to bottom, which hides coupling between them.
"""
from __future__ import annotations

import json
import os
import sys

from behave.formatter.base import Formatter
from behave.model import Rule, ScenarioOutline
from behave.runner import Runner
from behave.runner_util import collect_feature_locations

__all__ = ["OrderedRunner", "PlanFormatter", "collect"]


def _relative(filename: str) -> str:
    path = os.path.relpath(os.path.abspath(filename))
    return path.replace(os.sep, "/")


def _rule_of(scenario):
    node = getattr(scenario, "parent", None)
    while node is not None:
        if isinstance(node, Rule):
            return node
        node = getattr(node, "parent", None)
    return None


class PlanFormatter(Formatter):
    """Dry-run formatter: at the end, write the selected scenarios (not skipped by tags or lines) as JSON."""

    name = "run_plan"
    description = "JSON list of the selected scenarios, for scripts/run-parallel"

    def __init__(self, stream_opener, config):
        super().__init__(stream_opener, config)
        self.features = []

    def feature(self, feature):
        self.features.append(feature)

    def close(self):
        plan = []
        for feature in self.features:
            for scenario in feature.walk_scenarios():
                status = getattr(scenario.status, "name", str(scenario.status))
                if status == "skipped":
                    continue
                rule = _rule_of(scenario)
                plan.append({
                    "location": f"{_relative(scenario.filename)}:{scenario.line}",
                    "file": _relative(scenario.filename),
                    "line": scenario.line,
                    "feature": feature.name,
                    "rule": rule.name if rule is not None else None,
                    "name": scenario.name,
                    "tags": sorted(str(tag) for tag in scenario.effective_tags),
                })
        stream = self.open()
        json.dump(plan, stream, indent=1)
        stream.write("\n")
        self.close_stream()


def collect(out: str, behave_args: list[str]) -> int:
    """Dry-run behave with ``behave_args`` and write the selected scenarios to ``out``."""
    from behave.__main__ import run_behave
    from behave.configuration import Configuration
    from behave.formatter.base import StreamOpener

    config = Configuration(behave_args)
    config.format = ["support.harness.run_plan:PlanFormatter"]
    config.outputs = [StreamOpener(out)]
    config.reporters = []  # no JUnit files, no summary
    config.dry_run = True
    config.summary = False
    return run_behave(config)


class OrderedRunner(Runner):
    """behave's runner, but features and scenarios run in the order of the given locations."""

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


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "collect":
        return collect(argv[1], argv[2:])
    sys.stderr.write("usage: python -m support.harness.run_plan collect PLAN.json [behave args...]\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
