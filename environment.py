"""behave hooks: bring the stack up once (context.suite_run), give each scenario its own state with its namespace
and cleanup (context.state), attach evidence on failure, search the gateway's logs for the run's secrets, bring the
stack down. See support/scenario.py."""
from __future__ import annotations

import os
import sys

from support.client import evidence, failure_dossier
from support.harness.config import SuiteSetupError
from support.scenario import ScenarioState, SuiteRun


def before_all(context):
    runner = getattr(context, "_runner", None)  # the registry behave matches steps with
    evidence.install(getattr(runner, "step_registry", None))  # failure messages and log records masked from here on
    try:
        context.suite_run = SuiteRun.start(context.config.userdata)
    except SuiteSetupError as problem:
        # A set-up problem ends the run at once with one line that says what to do.
        sys.stderr.write(f"acceptance suite: {problem}\n")
        sys.stderr.flush()
        os._exit(2)


def before_scenario(context, scenario):
    run = context.suite_run
    context.state = ScenarioState(run, f"{scenario.filename}:{scenario.line}:{scenario.name}", context.add_cleanup)
    if "needs_config_repo" in scenario.effective_tags and not run.endpoints.config_repo:
        scenario.skip("needs the gateway's config repository on this machine: use the local stack, or pass "
                      "-D config_repo=PATH (a working copy of the repository the gateway reads)")


def after_step(context, step):
    if step.status.has_failed():
        failure_dossier.attach(context.state, step)


def after_scenario(context, scenario):
    context.suite_run.secrets_seen.remember(context.state.api.exchanges)  # searched for in the gateway's logs


def after_all(context):
    run = getattr(context, "suite_run", None)
    if run is not None:
        try:
            run.secrets_seen.search(run.stack)  # a secret in the gateway's logs fails the run
        finally:
            run.stop()
