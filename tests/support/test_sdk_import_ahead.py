"""The OpenAI SDK is imported ahead, in a background thread, only when this process will surely need it."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

import support.scenario as scenario_module
from support.scenario import OPENAI_SDK_STEPS, RUNS_IF_FREE


@pytest.mark.parametrize("runs_if_free, imported", [(False, True), (True, False)])
def test_the_sdk_is_imported_ahead_only_for_a_scenario_this_process_will_surely_run(monkeypatch, runs_if_free,
                                                                                     imported):
    started = []
    monkeypatch.setattr(scenario_module.threading, "Thread",
                        lambda target, name, daemon: SimpleNamespace(start=lambda: started.append(name)))
    uses_sdk = SimpleNamespace(should_run=lambda config: True,
                               all_steps=[SimpleNamespace(name=f"an application built with {OPENAI_SDK_STEPS}")])
    if runs_if_free:  # in run-parallel's queue: another worker may take it
        setattr(uses_sdk, RUNS_IF_FREE, True)
    scenario_module.import_sdk_meanwhile([SimpleNamespace(walk_scenarios=lambda: [uses_sdk])], config=None)
    assert started == (["import-openai-sdk"] if imported else [])
