"""The features' shape, read with behave's own parser: every scenario (each row of an outline, inside a Rule or
not) has exactly one When, before its first Then. `And`/`But` take the kind of the step before them, so a When
followed by an And is two actions. Features and scenarios tagged @wip are left out."""
from __future__ import annotations

from pathlib import Path

import pytest
from behave.parser import parse_file

ROOT = Path(__file__).resolve().parents[2]
FEATURES = sorted((ROOT / "features").rglob("*.feature"))
WORK_IN_PROGRESS = "wip"


def when_then_faults(path: Path) -> list[str]:
    """'file:line: what is wrong' for each scenario of the feature file whose When is not one, before its Thens."""
    faults = []
    for scenario in parse_file(str(path)).walk_scenarios():
        if WORK_IN_PROGRESS in scenario.effective_tags:
            continue
        kinds = [step.step_type for step in scenario.all_steps]  # background steps first, And/But resolved
        whens = [index for index, kind in enumerate(kinds) if kind == "when"]
        first_then = kinds.index("then") if "then" in kinds else len(kinds)
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{scenario.line}"
        if len(whens) != 1:
            faults.append(f"{where}: {len(whens)} When steps (And/But after a When count as When) in "
                          f"{scenario.name!r}; a scenario has exactly one")
        elif whens[0] > first_then:
            faults.append(f"{where}: the When of {scenario.name!r} comes after its first Then")
    return faults


def test_the_checker_finds_each_fault_and_names_its_line(tmp_path):
    feature = tmp_path / "shapes.feature"
    feature.write_text(
        "Feature: shapes\n"
        "  Scenario: fine\n"
        "    Given a\n    When b\n    Then c\n    And d\n"
        "  Scenario: two actions\n"                    # line 7
        "    Given a\n    When b\n    And c\n    Then d\n"
        "  Scenario: no action\n"                      # line 12
        "    Given a\n    Then b\n"
        "  Scenario: acting after the outcome\n"       # line 15
        "    Given a\n    Then b\n    When c\n"
        "  @wip\n  Scenario: still being written\n"
        "    Given a\n"
        "  Rule: a rule\n"
        "    Scenario: in a rule\n"                    # line 23
        "      When a\n      When b\n      Then c\n"
        "    Scenario Outline: rows\n"
        "      Given <x>\n      Then y\n"
        "      Examples:\n        | x |\n        | 1 |\n        | 2 |\n",  # rows on lines 32 and 33
        encoding="utf-8")
    lines = [fault.split(":")[1] for fault in when_then_faults(feature)]
    assert lines == ["7", "12", "15", "23", "32", "33"], when_then_faults(feature)
    assert "comes after its first Then" in when_then_faults(feature)[2]


def test_a_feature_tagged_wip_is_left_out(tmp_path):
    feature = tmp_path / "wip.feature"
    feature.write_text("@wip\nFeature: not yet\n  Scenario: no action yet\n    Given a\n", encoding="utf-8")
    assert when_then_faults(feature) == []


@pytest.mark.parametrize("path", FEATURES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_scenario_has_one_when_before_its_thens(path):
    faults = when_then_faults(path)
    assert not faults, "\n".join(["Each scenario has exactly one When, before its first Then (an earlier action "
                                  "is a Given that did it):", *faults])
