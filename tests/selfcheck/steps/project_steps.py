"""The project's own step library (<root>/steps), loaded the way behave loads a steps folder.

behave takes its steps from the `steps/` folder next to the features it runs; the self-check's features live
under tests/selfcheck/ so that `behave features/` never picks them up, and this module gives them the real
steps instead of copies.
"""
import os
import sys
from pathlib import Path

from behave.api.step_matchers import step_matcher, use_default_step_matcher, use_step_matcher
from behave.runner_util import exec_file
from behave.step_registry import setup_step_decorators

PROJECT_STEPS = Path(__file__).resolve().parents[3] / "steps"

if str(PROJECT_STEPS) not in sys.path:
    sys.path.insert(0, str(PROJECT_STEPS))  # as behave does: step modules may import helpers from their folder
for _name in sorted(os.listdir(PROJECT_STEPS)):
    if _name.endswith(".py"):
        _globals = {"use_step_matcher": use_step_matcher, "step_matcher": step_matcher}
        setup_step_decorators(_globals)
        exec_file(str(PROJECT_STEPS / _name), _globals)
        use_default_step_matcher()
