"""The run's console output: behave's pretty output in a terminal, and in a log (CI, a pipe, a file) a compact
progress line per feature with every failure printed in full under it.

Registered in behave.ini as behave's default formatter (`default_format = console`), so it is the one that writes
to the console unless `-f` asks for another; the Allure formatter writes only to its results folder.
"""
from __future__ import annotations

import sys
import textwrap

from behave.formatter.base import Formatter
from behave.formatter.pretty import PrettyFormatter
from behave.formatter.progress import ScenarioProgressFormatter
from behave.model import Feature
from behave.model_core import Status

PROBLEMS = (Status.failed, Status.error, Status.hook_error, Status.cleanup_error)


class ConsoleFormatter(Formatter):
    """Chooses by where the output goes: a terminal gets Pretty (one line per step), anything else gets
    FailuresInFull. behave builds a formatter by calling its class, so __new__ hands back the chosen one."""
    name = "console"
    description = "pretty in a terminal; otherwise progress per feature with each failure in full"

    def __new__(cls, stream_opener, config):
        stream = stream_opener.stream or sys.stdout
        if stream_opener.name is None and getattr(stream, "isatty", lambda: False)():
            return Pretty(stream_opener, config)
        return FailuresInFull(stream_opener, config)


class Pretty(PrettyFormatter):
    """behave's pretty output, each line once and every header shown. behave 1.3 keeps the feature as a statement
    still to print and prints it again (indented) when a Background comes, and never prints a Rule's header."""

    def feature(self, feature):
        super().feature(feature)
        if feature.description:
            self.stream.write("\n")  # behave leaves the description's last line open
        self.statement = None  # printed already

    def rule(self, rule):
        super().rule(rule)
        self.stream.write("\n")
        self.print_tags(rule.tags, "  ")
        self.stream.write(f"  {rule.keyword}: {rule.name}\n")
        self.statement = None


class FailuresInFull(ScenarioProgressFormatter):
    """One line per feature: its file, then a dot (or F, E, S...) per scenario. Under it, each scenario that did
    not pass: its name and location, the step that failed and the failure's whole message (the suite's messages
    quote what was expected, what came back and the request id)."""
    name = "failures-in-full"
    description = "progress per feature, then each failure in full"
    dot_status = {**ScenarioProgressFormatter.dot_status, Status.cleanup_error: "C", Status.xfailed: "x",
                  Status.xpassed: "X"}

    def __init__(self, stream_opener, config):
        super().__init__(stream_opener, config)
        self.problems = []

    def report_current_scenario_progress(self):
        super().report_current_scenario_progress()
        if self.current_scenario is not None and self.current_scenario.status in PROBLEMS:
            self.problems.append(self.current_scenario)

    def report_current_scenario_failures(self):
        for scenario in self.problems:
            self.stream.write(describe_problem(scenario))
        self.problems = []


def describe_problem(scenario) -> str:
    """A scenario that did not pass, in full: what failed, where, and the message."""
    lines = [f"  {scenario.status.name.upper().replace('_', ' ')}: {scenario.name}  ({scenario.location})"]
    steps = [step for step in scenario.all_steps if step.status in PROBLEMS or step.status == Status.undefined]
    for step in steps:
        lines.append(f"    {step.keyword} {step.name}  ({step.location})")
        message = step.error_message or ("the step is not defined" if step.status == Status.undefined else "")
        lines.append(textwrap.indent(message.strip(), "      "))
    if not steps:  # a hook failed (before or after the scenario's steps): behave keeps its message in the capture
        captured = scenario.captured.make_report() if scenario.captured.has_output() else ""
        lines.append(textwrap.indent((captured or "a hook failed; see the output above").strip(), "      "))
    return "\n".join(lines) + "\n"


def count_rules_in_durations() -> None:
    """behave 1.3 sums a feature's duration over the scenarios outside its Rules only, so a run of features written
    in Rule: blocks ended with "Took 0min 0.250s". Sum over every scenario instead (its steps, Background too)."""
    Feature.duration = property(lambda feature: sum(s.duration for s in feature.walk_scenarios()))


def results_folder(config) -> str | None:
    """Where this run's Allure formatter writes (behave's config: formats and their output files in order)."""
    for index, name in enumerate(config.format or []):
        if "allure" in name.lower() and index < len(config.outputs) and config.outputs[index].name:
            return config.outputs[index].name
    return None
