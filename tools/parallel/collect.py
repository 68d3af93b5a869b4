"""Runs inside a behave process: list the scenarios that behave arguments select, for the runner's plan.

    python -m tools.parallel.collect PLAN.json [behave args...]

writes the selected scenarios (paths, ``--tags``, behave.ini's default tags) as a JSON list, one entry per scenario
and per outline row: location ``file:line``, feature, rule, name and effective tags. It is a dry run with only
:class:`PlanFormatter` as formatter: the formatters of behave.ini (Allure, pretty) and the JUnit reporter are left
out, so collecting never writes into allure-results or reports/junit.
"""
from __future__ import annotations

import json
import os
import sys

from behave.__main__ import run_behave
from behave.configuration import Configuration
from behave.formatter.base import Formatter, StreamOpener
from behave.model import Rule
from behave.runner import Runner

__all__ = ["PlanFormatter", "collect"]


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

    name = "parallel_plan"
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


class ParseOnlyRunner(Runner):
    """A dry run that only parses and selects: environment.py and the step modules are not loaded (they import the
    suite, two thirds of the collection's time), as no hook runs and no step is matched in a dry run anyway."""

    def load_hooks(self, filename=None):
        self.hooks["before_all"] = self.before_all_default_hook

    def load_step_definitions(self, extra_step_paths=None):
        pass


def collect(out: str, behave_args: list[str]) -> int:
    """Dry-run behave with ``behave_args`` and write the selected scenarios to ``out``."""
    config = Configuration(behave_args)
    config.runner = "tools.parallel.collect:ParseOnlyRunner"
    config.show_snippets = False  # every step is undefined when no step module is loaded
    config.format = ["tools.parallel.collect:PlanFormatter"]
    config.outputs = [StreamOpener(out)]
    config.reporters = []  # no JUnit files, no summary
    config.dry_run = True
    config.summary = False
    return run_behave(config)


def main(argv: list[str]) -> int:
    if argv and not argv[0].startswith("-"):
        return collect(argv[0], argv[1:])
    sys.stderr.write("usage: python -m tools.parallel.collect PLAN.json [behave args...]\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
