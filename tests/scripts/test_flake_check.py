"""Tests of tools/flake_check.py: what counts as a changed outcome, and how its arguments are read."""
from __future__ import annotations

from tools.flake_check import History, parse


def test_a_scenario_that_passed_once_and_failed_once_changed_and_one_that_always_failed_did_not():
    history = History(runs=2)
    history.add(11, {"f:1": {"status": "passed", "name": "steady"}, "f:2": {"status": "passed", "name": "flaky"},
                     "f:3": {"status": "failed", "name": "broken", "error": "first"}})
    history.add(12, {"f:1": {"status": "skipped", "name": "steady"},
                     "f:2": {"status": "failed", "name": "flaky", "error": "boom"},
                     "f:3": {"status": "failed", "name": "broken", "error": "second"}})
    assert set(history.changed()) == {"f:1", "f:2"}, "passed then skipped also counts as a change of outcome"
    assert set(history.always_failed()) == {"f:3"}
    assert history.errors == {"f:2": (12, "boom"), "f:3": (11, "first")}


def test_a_scenario_missing_from_a_run_counts_as_changed():
    history = History(runs=2)
    history.add(1, {"f:1": {"status": "passed"}, "f:2": {"status": "passed"}})
    history.add(2, {"f:1": {"status": "passed"}})
    assert set(history.changed()) == {"f:2"}


def test_the_seed_is_read_and_order_dropped_the_rest_goes_to_run_parallel():
    assert parse(["3", "--seed", "40", "--order", "defined", "-j", "2", "features/billing"]) == (
        3, 40, ["-j", "2", "features/billing"])
    assert parse(["1", "--seed=7", "--order=defined"]) == (1, 7, [])
