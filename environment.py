"""behave hooks: bring the stack up once (context.suite_run), give each scenario its own state with its namespace
and cleanup (context.state), attach evidence on failure, search the gateway's logs for the run's secrets, bring the
stack down. See support/scenario.py."""
from __future__ import annotations

import os
import sys

from support.client import console, evidence, failure_dossier
from support.domain import cleanup
from support.harness.config import SuiteSetupError, options_help
from support.scenario import ScenarioState, SuiteRun, import_sdk_meanwhile
from support.stacks import needs


def before_all(context):
    runner = getattr(context, "_runner", None)  # the registry behave matches steps with
    evidence.install(getattr(runner, "step_registry", None))  # failure messages and log records masked from here on
    console.count_rules_in_durations()
    if "help" in context.config.userdata:  # behave -D help: the options, and no stack
        print(options_help(), flush=True)
        os._exit(0)
    import_sdk_meanwhile(runner.features if runner else [], context.config)
    try:
        # Started by the runner (support/runner.py) while behave loaded the suite; here it is waited for.
        context.suite_run = SuiteRun.start(context.config.userdata, report=console.results_folder(context.config),
                                           launched=getattr(runner, "launched", None))
    except SuiteSetupError as problem:
        # A set-up problem ends the run at once with one line that says what to do.
        sys.stderr.write(f"acceptance suite: {problem}\n")
        sys.stderr.flush()
        os._exit(2)


def before_scenario(context, scenario):
    run = context.suite_run
    context.state = ScenarioState(run, f"{scenario.filename}:{scenario.line}:{scenario.name}", context.add_cleanup)
    lacking = needs.missing(scenario.effective_tags, run.endpoints, run.config)
    if lacking:
        scenario.skip(lacking)


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
            _leave_nothing_behind(run, context._runner.features)


after_all.capture = False  # behave would keep its lines (what was skipped, what was cleaned up) to itself


def _leave_nothing_behind(run: SuiteRun, features) -> None:
    """Say what was skipped and why, retire what the run created (-D cleanup=false keeps it), stop the stack."""
    try:
        skipped = needs.skip_summary(s for feature in features for s in feature.walk_scenarios())
        if skipped:
            print(f"acceptance suite: {skipped}")
        if run.config.cleanup and run.stack.outlives_the_run:
            done = cleanup.after_run(run.endpoints.base_url, run.keys, run.config.run_id + run.config.worker)
            print(f"acceptance suite: cleanup: {done}")
    finally:
        run.stop()
