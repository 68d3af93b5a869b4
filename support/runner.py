"""behave's runner, starting the suite's stack before behave loads the hooks, the steps and the features.

behave.ini names it as the runner (run-parallel's ordered runner builds on it). The embedded stack's gateway takes
over a second to start; started here, it imports while behave imports the suite, loads the steps and parses the
features (a third of a second saved on every run), and before_all (environment.py) only waits for it to answer.
Nothing is started for `-D help` or a dry run.
"""
from __future__ import annotations

import os
import sys

from behave.runner import Runner

from support.harness.config import SuiteSetupError


class SuiteRunner(Runner):
    """Runner whose `launched` stack (None before the run, or for -D help and dry runs) is the one before_all
    brings up."""

    launched = None

    def run_with_paths(self):
        if not self.config.dry_run and "help" not in self.config.userdata:
            from support.client.console import results_folder
            from support.stacks import launch
            try:
                self.launched = launch(self.config.userdata, report=results_folder(self.config))
            except SuiteSetupError as problem:
                # The same one line as a problem found in before_all (environment.py).
                sys.stderr.write(f"acceptance suite: {problem}\n")
                sys.stderr.flush()
                os._exit(2)
        return super().run_with_paths()
