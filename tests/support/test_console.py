"""The console formatter (support.client.console): in a log, one progress line per feature and each failure in
full (step, message, request id); in a terminal, behave's pretty output. Each line once, either way."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from behave.formatter.base import StreamOpener
from support.client.console import ConsoleFormatter, FailuresInFull, Pretty

ROOT = Path(__file__).resolve().parents[2]

FEATURE = """\
Feature: Invoices
  Scenario: A paying org is billed
    Given an org
    Then the org is billed

  Scenario: A refused charge says why
    Given an org
    Then the charge is refused
"""
STEPS = """\
from behave import given, then

@given("an org")
def org(context):
    pass

@then("the org is billed")
def billed(context):
    pass

@then("the charge is refused")
def refused(context):
    raise AssertionError("expected status 402, got 200 [request id r1.abc123.004]")
"""
BEHAVE_INI = """\
[behave]
default_format = console
[behave.formatters]
console = support.client.console:ConsoleFormatter
"""


def run_behave(project: Path, feature: str, *args: str) -> subprocess.CompletedProcess:
    (project / "features" / "steps").mkdir(parents=True)
    (project / "features" / "billing.invoices.feature").write_text(feature)
    (project / "features" / "steps" / "billing_steps.py").write_text(STEPS)
    (project / "behave.ini").write_text(BEHAVE_INI)
    return subprocess.run([sys.executable, "-m", "behave", *args], cwd=project, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)


def test_in_a_log_each_feature_is_one_line_and_each_failure_is_printed_in_full(tmp_path):
    done = run_behave(tmp_path, FEATURE)
    lines = done.stdout.splitlines()
    assert "features/billing.invoices.feature  .F" in lines, done.stdout
    at = lines.index("features/billing.invoices.feature  .F")
    assert lines[at + 1] == "  FAILED: A refused charge says why  (features/billing.invoices.feature:6)"
    assert lines[at + 2].startswith("    Then the charge is refused  (features/billing.invoices.feature:8)")
    assert "expected status 402, got 200 [request id r1.abc123.004]" in lines[at + 3]
    printed = [line for line in lines if line.strip()]
    assert len(printed) == len(set(printed)), done.stdout


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_gets_pretty_output_and_anything_else_the_compact_one():
    config = type("Config", (), {"show_timings": False, "show_source": True, "show_multiline": True,
                                 "has_colored_mode": lambda self, stream: False})()
    assert type(ConsoleFormatter(StreamOpener(stream=Terminal()), config)) is Pretty
    assert type(ConsoleFormatter(StreamOpener(stream=io.StringIO()), config)) is FailuresInFull


def test_pretty_output_shows_each_header_once_with_a_background_and_rules(tmp_path):
    feature = FEATURE.replace("  Scenario: A paying", "  Background:\n    Given an org\n\n  Rule: Orgs pay\n\n"
                                                        "  Scenario: A paying")
    done = run_behave(tmp_path, feature, "-f", "support.client.console:Pretty", "--no-color")
    assert done.stdout.count("Feature: Invoices") == 1, done.stdout
    assert "  Rule: Orgs pay" in done.stdout, done.stdout
