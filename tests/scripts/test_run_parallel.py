"""Tests of the parallel runner (tools/parallel, behind scripts/run-parallel).

The splitting functions are tested directly. The runner itself is run as `python -m tools.parallel` on a throwaway
behave project in a temp folder (its own features/, steps/, environment.py and behave.ini, this repository's
support/ and tools/ linked in) against a tiny HTTP server standing in for a deployment (-D stack=external): no
gateway starts, and this repository's allure-results/ and reports/ are never touched.
Every scenario of the throwaway suite appends "worker location" to a log, so the tests can see who ran what,
in which order.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from dataclasses import replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

import tools.parallel.model
from tools.parallel.cli import parse_args
from tools.parallel.history import UNKNOWN_SERIAL_SECONDS, estimate, passed_durations
from tools.parallel.model import RunError, Scenario, Worker
from tools.parallel.planning import SHARED_STACK_WAIT_SECONDS, parse_shard, plan, plan_workers, serial_mode, shard
from tools.parallel.workers import add_taken, journaled_outcomes, left_in_queue, open_queue

ROOT = Path(__file__).resolve().parents[2]
RUNNER = [sys.executable, "-m", "tools.parallel"]


def scenarios(count: int, files: int = 4) -> list:
    return [Scenario(location=f"features/a/f{i % files}.feature:{10 + i}", file=f"features/a/f{i % files}.feature",
                        line=10 + i, feature=f"F{i % files}", name=f"scenario {i}", estimate=1.0 + (i * 7) % 5)
            for i in range(count)]


# ------------------------------------------------------------------------------------------------------------
# splitting
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("total", [1, 2, 3, 5, 8])
def test_shards_together_hold_each_scenario_exactly_once(total):
    items = scenarios(23)
    seen = Counter(s.location for i in range(1, total + 1) for s in shard(items, i, total, {}))
    assert seen == Counter(s.location for s in items)


def test_shards_are_the_same_whatever_the_order_scenarios_were_found_in():
    items = scenarios(30)
    shuffled = list(items)
    random.Random(7).shuffle(shuffled)
    for i in (1, 2, 3):
        assert [s.location for s in shard(items, i, 3, {})] == [s.location for s in shard(shuffled, i, 3, {})]


def test_shards_ignore_local_history_but_follow_a_given_timings_file():
    items = scenarios(12)
    for s in items:
        s.estimate = 100.0 if s.line == 10 else 1.0  # this machine's history must not move scenarios between shards
    plain = [sorted(s.location for s in shard(items, i, 3, {})) for i in (1, 2, 3)]
    assert sorted(len(part) for part in plain) == [4, 4, 4]
    heavy = {**{s.timing_key: 1.0 for s in items}, items[0].timing_key: 50.0}
    weighted = [sorted(s.location for s in shard(items, i, 3, heavy)) for i in (1, 2, 3)]
    holder = next(part for part in weighted if items[0].location in part)
    assert len(holder) < 4, f"the long scenario's shard should hold fewer scenarios, got {weighted}"
    assert sorted(loc for part in weighted for loc in part) == sorted(s.location for s in items)


def test_workers_get_longest_first_balanced_loads():
    items = scenarios(20)
    parts = plan_workers(items, 3, None)
    loads = [sum(s.estimate for s in part) for part in parts]
    assert max(loads) - min(loads) <= max(s.estimate for s in items)
    assert sorted(s.location for part in parts for s in part) == sorted(s.location for s in items)


def test_random_order_is_repeatable_by_seed_and_differs_between_seeds():
    items = scenarios(20)
    plan = lambda seed: [[s.location for s in part] for part in plan_workers(items, 2, random.Random(seed))]  # noqa: E731
    assert plan(11) == plan(11)
    assert plan(11) != plan(12)
    assert sorted(loc for part in plan(12) for loc in part) == sorted(s.location for s in items)


def test_more_workers_than_scenarios_starts_only_the_needed_ones():
    assert [w.name for w in plan(scenarios(2), 8, "serial", "after", None)] == ["w1", "w2"]
    assert [w.name for w in plan(scenarios(2), 8, "serial", "private", None)] == ["w1", "w2"]
    assert [w.name for w in plan(with_serial(scenarios(2), 1), 8, "serial", "private", None)] == ["w1", "private"]


def test_with_no_serial_scenario_selected_every_worker_shares_the_one_stack():
    workers = plan(scenarios(6), 2, "serial", "private", None)
    assert [(w.name, w.own_stack, len(w.scenarios)) for w in workers] == [("w1", False, 0), ("w2", False, 0)]
    assert workers[0].queue is workers[1].queue
    assert sorted(s.location for s in workers[0].queue.scenarios) == sorted(s.location for s in scenarios(6))


def with_serial(items: list, count: int, seconds: float = 10.0) -> list:
    """The first `count` scenarios tagged @serial and made long, as the real ones are."""
    for s in items[:count]:
        s.tags, s.estimate = ["serial"], seconds
    return items


def test_dealt_in_advance_the_private_worker_gets_the_serial_scenarios_and_is_balanced_with_the_shared_ones():
    items = with_serial(scenarios(30), 3)
    workers = plan(items, 3, "serial", "private", random.Random(3))  # random order: dealt in advance
    assert [w.name for w in workers] == ["w1", "w2", "private"]
    private = workers[-1]
    assert {s.location for s in items[:3]} <= {s.location for s in private.scenarios}
    assert not any("serial" in s.tags for w in workers[:-1] for s in w.scenarios)
    assert len(private.scenarios) > 3, "balancing should give the private worker ordinary scenarios too"
    loads = [w.estimate for w in workers]
    assert max(loads) - min(loads) <= max(s.estimate for s in items if "serial" not in s.tags)
    assert sorted(s.location for w in workers for s in w.scenarios) == sorted(s.location for s in items)
    assert all(w.own_stack and not w.after for w in workers if w.name == "private")
    assert not any(w.own_stack for w in workers[:-1])


def test_the_shared_stack_workers_are_dealt_less_by_the_time_they_wait_for_their_stack():
    items = with_serial([replace(s, estimate=0.5) for s in scenarios(41)], 1, seconds=0.5)
    w1, private = plan(items, 2, "serial", "private", random.Random(3))
    assert private.estimate - w1.estimate == pytest.approx(SHARED_STACK_WAIT_SECONDS, abs=0.5)


def test_serial_scenarios_longer_than_the_rest_leave_the_private_worker_no_ordinary_ones():
    items = with_serial(scenarios(10), 2, seconds=100.0)
    workers = plan(items, 2, "serial", "private", random.Random(3))
    assert [(w.name, len(w.scenarios)) for w in workers] == [("w1", 8), ("private", 2)]


def test_with_a_queue_the_ordinary_scenarios_wait_by_feature_longest_first_for_the_first_worker_free():
    items = with_serial(scenarios(30), 3)
    workers = plan(items, 3, "serial", "private", None)
    assert [(w.name, len(w.scenarios), w.own_stack) for w in workers] == [("w1", 0, False), ("w2", 0, False),
                                                                          ("private", 3, True)]
    queue = workers[0].queue
    assert all(w.queue is queue for w in workers), "one queue, taken from by every worker"
    files = [s.file for s in queue.scenarios]
    assert files == sorted(files, key=files.index), "a feature's scenarios are queued together"
    longest = {}
    for s in queue.scenarios:
        longest.setdefault(s.file, s.estimate)
        assert s.estimate <= longest[s.file], "longest first within a feature"
    assert list(longest.values()) == sorted(longest.values(), reverse=True), "the feature with the longest first"
    assert sorted(s.location for s in queue.scenarios + workers[-1].scenarios) == sorted(s.location for s in items)
    # The private worker (its @serial ones first) takes from the long end, the others from the short end.
    assert [(w.name, w.shortest_first) for w in workers] == [("w1", True), ("w2", True), ("private", False)]
    assert workers[0].queue_order() == queue.scenarios[::-1] and workers[-1].queue_order() == queue.scenarios


def test_a_queue_is_kept_for_the_defined_order_and_more_than_one_worker():
    items = with_serial(scenarios(12), 2)
    assert all(w.queue is None for w in plan(items, 1, "serial", "private", None)), "-j 1: one worker"
    assert all(w.queue is None for w in plan(items, 3, "serial", "private", random.Random(4)))
    after = plan(items, 2, "serial", "after", None)
    assert [(w.name, w.queue is not None, w.after) for w in after] == [("w1", True, False), ("w2", True, False),
                                                                       ("serial", False, True)]
    assert [w.shortest_first for w in after[:2]] == [False, True], "without a private worker, w1 takes the long end"
    assert [w.name for w in plan(scenarios(1), 4, "serial", "after", None)] == ["w1"]


def test_what_no_worker_took_or_a_worker_took_without_its_name_counts_as_not_run(tmp_path, monkeypatch):
    monkeypatch.setattr(tools.parallel.model, "QUEUE_DIR", tmp_path)
    w1, private = plan(with_serial(scenarios(5), 1), 2, "serial", "private", None)
    queue = w1.queue
    open_queue(queue)
    (queue.taken_dir() / "0").write_text("w1")
    (queue.taken_dir() / "1").write_text("")  # cut off between the create and the write
    w1.exit_code, private.exit_code = 0, 3
    add_taken(w1)
    left_in_queue([w1, private])
    assert [s.location for s in w1.scenarios] == [queue.scenarios[0].location]
    assert [s.location for s in private.scenarios[1:]] == [s.location for s in queue.scenarios[1:]]
    assert {private.outcomes[s.location]["error"] for s in queue.scenarios[1:]} == \
        {"no worker took it from the shared queue (w1 exited 0, private exited 3)"}


def test_with_one_job_the_private_worker_runs_everything_on_its_own_stack():
    items = with_serial(scenarios(12), 2)
    workers = plan(items, 1, "serial", "private", None)
    assert [w.name for w in workers] == ["private"]
    assert [s.location for s in workers[0].scenarios[:2]] == [items[0].location, items[1].location]
    assert len(workers[0].scenarios) == 12


def test_after_mode_keeps_the_serial_scenarios_for_one_worker_that_starts_when_the_others_are_done():
    items = with_serial(scenarios(12), 2)
    workers = plan(items, 2, "serial", "after", None)
    assert [(w.name, w.own_stack, w.after) for w in workers] == [("w1", False, False), ("w2", False, False),
                                                                ("serial", True, True)]
    assert {s.location for s in workers[-1].scenarios} == {items[0].location, items[1].location}


def test_random_order_deals_the_private_worker_repeatably_by_seed():
    items = with_serial(scenarios(24), 3)
    dealt = lambda seed: [(w.name, [s.location for s in w.scenarios])  # noqa: E731
                          for w in plan(items, 2, "serial", "private", random.Random(seed))]
    assert dealt(5) == dealt(5)
    assert dealt(5) != dealt(6)
    assert sorted(loc for _, locs in dealt(6) for loc in locs) == sorted(s.location for s in items)
    assert {s.location for s in items[:3]} <= set(dict(dealt(6))["private"])


@pytest.mark.parametrize("defines, environ, expected", [
    ({}, {}, "private"), ({"stack": "local"}, {}, "private"), ({"stack": "compose"}, {}, "private"),
    ({"stack": "external"}, {}, "after"), ({}, {"SUITE_STACK": "external"}, "after"),
    ({"stack": "local"}, {"SUITE_STACK": "external"}, "private")])
def test_a_private_stack_is_used_unless_the_stack_is_an_external_deployment(defines, environ, expected, monkeypatch):
    monkeypatch.delenv("SUITE_STACK", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert serial_mode("auto", defines) == expected
    assert serial_mode("after", {}) == "after" and serial_mode("private", {"stack": "external"}) == "private"


def test_a_serial_scenario_without_history_is_not_taken_for_a_short_one():
    items = scenarios(6)
    items[0].tags = ["serial"]
    known = {s.timing_key: 0.2 for s in items[2:]}
    assert estimate(items, known, {}, "serial") == 4
    assert items[0].estimate == UNKNOWN_SERIAL_SECONDS and items[1].estimate == 0.2


def test_a_scenario_skipped_at_run_time_keeps_a_duration_for_the_next_plan():
    passed, skipped, failed = scenarios(3)
    skipped.tags = ["serial"]  # without a figure it would count as UNKNOWN_SERIAL_SECONDS next time
    worker = Worker("private", [passed, skipped, failed], own_stack=True)
    worker.outcomes = {passed.location: {"status": "passed", "seconds": 0.4},
                       skipped.location: {"status": "skipped", "seconds": 0.0},
                       failed.location: {"status": "failed", "seconds": 2.0}}
    assert passed_durations([worker]) == {passed.timing_key: 0.4}
    assert passed_durations([worker], skipped_too=True) == {passed.timing_key: 0.4, skipped.timing_key: 0.001}


@pytest.mark.parametrize("text", ["0/3", "4/3", "x", "1/0", "1-3"])
def test_a_bad_shard_is_refused(text):
    with pytest.raises(RunError):
        parse_shard(text)


def test_allure_names_cover_rules_and_outline_rows():
    s = Scenario(location="f:1", file="f", line=1, feature="Budgets", rule="Limits", name="Spending 1.00 -- @1.2")
    assert s.allure_names() == {"Budgets: Spending 1.00", "Budgets: Limits: Spending 1.00"}


# ------------------------------------------------------------------------------------------------------------
# the runner on a throwaway project
# ------------------------------------------------------------------------------------------------------------
FEATURES = {
    "features/alpha/alpha.one.feature": """
        @allure.label.epic:Alpha
        Feature: Alpha one
          Alpha's rule.

          Scenario: First alpha
            Given the step passes

          @fast
          Scenario: Second alpha
            Given the step passes

          Scenario Outline: Alpha row <n>
            Given the step passes with <n>

            Examples:
              | n |
              | 1 |
              | 2 |
              | 3 |
        """,
    "features/beta/beta.two.feature": """
        Feature: Beta two
          Beta's rule.

          Scenario: First beta
            Given the step passes

          Rule: Grouped
            Scenario: Beta under a rule
              Given the step passes

          @serial
          Scenario: Beta alone one
            Given the step passes

          @serial
          Scenario: Beta alone two
            Given the step passes

          @fast
          Scenario: Last beta
            Given the step passes
        """,
    "features/gamma/gamma.three.feature": """
        Feature: Gamma three
          Gamma's rule.

          Scenario: Gamma one
            Given the step passes

          Scenario: Gamma two
            Given the step passes
        """,
}
ALL = 12  # scenarios above, outline rows counted one by one
SERIAL = 2

ENVIRONMENT = """
import os, time

def before_all(context):
    if os.environ.get("FAKE_CRASH_WORKER") == context.config.userdata.get("worker"):
        os._exit(3)

def before_scenario(context, scenario):
    data = context.config.userdata
    rendezvous = os.environ.get("FAKE_RENDEZVOUS")
    if rendezvous and "serial" in scenario.effective_tags:
        # Passes only if a shared-stack worker runs while this @serial scenario waits.
        from support.harness.waits import wait_until
        wait_until("a shared-stack worker's scenario", lambda: os.path.exists(rendezvous), bool, timeout=60)
    elif rendezvous:
        open(rendezvous, "a").close()
    shared = "queued" if getattr(scenario, "runs_only_if_free", False) else "own"
    line = (f"{data.get('worker', '-')} {scenario.filename}:{scenario.line} {time.time():.6f} "
            f"{data.get('stack')} {shared}\\n")
    fd = os.open(os.environ["FAKE_RUN_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, line.encode())
    os.close(fd)
    begun = context.config.userdata.setdefault("fake_begun", [])
    begun.append(scenario.name)
    if os.environ.get("FAKE_CRASH_AT") == f"{data.get('worker')}:{len(begun)}":
        os._exit(3)  # in this worker's Nth scenario
    if data.get("worker") == os.environ.get("FAKE_SLOW_WORKER"):
        time.sleep(0.5)  # a worker whose scenarios take longer, as on a stack under load
"""

STEPS = """
import os
from behave import given

@given("the step passes")
def passes(context):
    if context.scenario.name == os.environ.get("FAKE_FAIL"):
        assert False, "expected the fake step to pass, but FAKE_FAIL names this scenario"
    if context.scenario.name == os.environ.get("FAKE_SKIP"):
        context.scenario.skip("FAKE_SKIP names this scenario")

@given("the step passes with {n}")
def passes_with(context, n):
    pass
"""

BEHAVE_INI = """
[behave]
paths = features
default_tags = not @wip
format = allure
    pretty
outfiles = allure-results
    -
show_skipped = false
junit = true
junit_directory = reports/junit
scenario_outline_annotation_schema = {name} -- @{row.id}

[behave.formatters]
allure = support.client.reporting:AllureFormatter
"""


class _Healthy(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def deployment(serving):
    with serving(_Healthy) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture()
def project(tmp_path):
    for path, text in FEATURES.items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip())
    (tmp_path / "steps").mkdir()
    (tmp_path / "steps" / "fake_steps.py").write_text(STEPS)
    (tmp_path / "environment.py").write_text(ENVIRONMENT)
    (tmp_path / "behave.ini").write_text(BEHAVE_INI)
    (tmp_path / "support").symlink_to(ROOT / "support")
    (tmp_path / "tools").symlink_to(ROOT / "tools")
    return tmp_path


class Run:
    def __init__(self, project: Path, done: subprocess.CompletedProcess):
        self.project = project
        self.code = done.returncode
        self.output = done.stdout + done.stderr
        log = project / "run.log"
        self.log = [line.split() for line in log.read_text().splitlines()] if log.exists() else []

    @property
    def locations(self) -> Counter:
        return Counter(entry[1] for entry in self.log)

    def by_worker(self) -> dict[str, list[str]]:
        workers: dict[str, list[str]] = {}
        for worker, location, *_ in self.log:
            workers.setdefault(worker, []).append(location)
        return workers

    def allure_results(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in (self.project / "allure-results").glob("*-result.json")]


def run(project: Path, deployment: str, *args: str, env: dict | None = None, external: bool = True) -> Run:
    log = project / "run.log"
    if log.exists():
        log.unlink()
    defines = ["-D", "stack=external", "-D", f"base_url={deployment}"] if external else []
    done = subprocess.run([*RUNNER, *defines, *args], cwd=project, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "FAKE_RUN_LOG": str(log), **(env or {})})
    return Run(project, done)


def check_results(project: Path, folder: str) -> subprocess.CompletedProcess:
    return subprocess.run([*RUNNER, "--check-results", folder], cwd=project, capture_output=True, text=True,
                          timeout=120)


def test_every_scenario_runs_once_across_workers_and_serial_ones_alone_afterwards(project, deployment):
    result = run(project, deployment, "-j", "3")
    assert result.code == 0, result.output
    assert sum(result.locations.values()) == ALL and set(result.locations.values()) == {1}, result.locations
    workers = result.by_worker()
    assert "serial" in workers and set(workers) <= {"w1", "w2", "w3", "serial"} and len(workers) > 1, workers
    assert len(workers["serial"]) == SERIAL
    last_parallel = max(float(e[2]) for e in result.log if e[0] != "serial")
    first_serial = min(float(e[2]) for e in result.log if e[0] == "serial")
    assert first_serial > last_parallel, "the @serial scenarios must start after every worker is done"
    assert {e[3] for e in result.log if e[0] != "serial"} == {"external"}
    assert f"{ALL} scenarios passed, 0 failed, 0 skipped, 0 not run" in result.output
    # One Allure folder for all workers, one result per scenario; JUnit kept apart per worker.
    assert len(result.allure_results()) == ALL
    assert {p.name for p in (project / "reports" / "junit").iterdir()} == set(workers)  # of those that ran some
    outcomes = json.loads((project / "reports" / "parallel" / "outcomes.json").read_text())
    assert {loc: o["worker"] for loc, o in outcomes["scenarios"].items()} == \
        {entry[1]: entry[0] for entry in result.log}, "each outcome names the worker that ran it"
    check = check_results(project, "allure-results")
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"each of the {ALL} scenarios appears exactly once" in check.stdout


def test_the_private_worker_runs_the_serial_scenarios_beside_the_shared_stack_workers(project, deployment):
    result = run(project, deployment, "-j", "3", "--serial", "private",
                 env={"FAKE_RENDEZVOUS": str(project / "shared-worker-ran")})
    assert result.code == 0, result.output
    assert sum(result.locations.values()) == ALL and set(result.locations.values()) == {1}, result.locations
    workers = result.by_worker()
    assert "private" in workers and set(workers) <= {"w1", "w2", "private"} and len(workers) > 1, workers
    serial = {"features/beta/beta.two.feature:12", "features/beta/beta.two.feature:16"}
    assert set(workers["private"][:SERIAL]) == serial, "the private worker starts with the @serial scenarios"
    assert not serial & {loc for name, locs in workers.items() if name != "private" for loc in locs}
    assert {entry[1]: entry[4] for entry in result.log} == {loc: "own" if loc in serial else "queued"
                                                            for loc in result.locations}, "queued ones are marked"
    assert f"{ALL} scenarios passed, 0 failed, 0 skipped, 0 not run" in result.output
    assert "beside them, the private worker on a stack of its own" in result.output
    assert len(result.allure_results()) == ALL
    assert "private" in {p.name for p in (project / "reports" / "junit").iterdir()}
    plan = json.loads((project / "reports" / "parallel" / "plan.json").read_text())
    assert plan["serial"] == "private" and set(plan["workers"]) == {"w1", "w2", "private"}
    assert sorted(plan["workers"]["private"]) == sorted(serial) and not plan["workers"]["w1"]
    assert len(plan["queue"]) == ALL - SERIAL and not serial & set(plan["queue"])
    outcomes = json.loads((project / "reports" / "parallel" / "outcomes.json").read_text())
    assert {o["worker"] for loc, o in outcomes["scenarios"].items() if loc in serial} == {"private"}


def test_with_one_job_and_a_private_stack_everything_runs_in_one_process(project, deployment):
    result = run(project, deployment, "-j", "1", "--serial", "private")
    assert result.code == 0, result.output
    assert set(result.by_worker()) == {"private"} and sum(result.locations.values()) == ALL
    assert "stack up" not in result.output, "no shared stack is needed"


def test_a_failing_serial_scenario_on_the_private_worker_fails_the_run(project, deployment):
    result = run(project, deployment, "-j", "2", "--serial", "private", env={"FAKE_FAIL": "Beta alone two"})
    assert result.code == 1, result.output
    assert "features/beta/beta.two.feature:16  Beta alone two  [failed, private]" in result.output


def test_check_results_notices_a_scenario_reported_twice_or_missing(project, deployment):
    assert run(project, deployment, "-j", "2").code == 0
    results = project / "allure-results"
    first, *_, last = sorted(results.glob("*-result.json"))
    shutil.copy(first, results / "duplicate-result.json")
    last.unlink()  # (chosen before the copy: the copy's name may sort last)
    check = check_results(project, "allure-results")
    assert check.returncode == 1, check.stdout
    assert "NOT each scenario exactly once" in check.stdout


def test_three_shards_together_run_each_scenario_exactly_once(project, deployment):
    seen = Counter()
    merged = project / "merged-results"
    merged.mkdir()
    for index in (1, 2, 3):
        result = run(project, deployment, "--shard", f"{index}/3", "-j", "2")
        assert result.code == 0, result.output
        seen.update(result.locations)
        for path in (project / "allure-results").iterdir():
            shutil.copy(path, merged / path.name)
    assert sum(seen.values()) == ALL and set(seen.values()) == {1}, seen
    check = check_results(project, str(merged))
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_failing_scenario_fails_the_run_and_is_named_in_the_summary(project, deployment):
    result = run(project, deployment, "-j", "2", env={"FAKE_FAIL": "Gamma two"})
    assert result.code == 1, result.output
    assert f"{ALL - 1} scenarios passed, 1 failed, 0 skipped, 0 not run" in result.output
    assert "features/gamma/gamma.three.feature:7  Gamma two  [failed" in result.output
    assert "FAKE_FAIL names this scenario" in result.output


def test_a_scenario_skipped_at_run_time_is_listed_but_does_not_fail_the_run(project, deployment):
    result = run(project, deployment, "-j", "2", env={"FAKE_SKIP": "Gamma two"})
    assert result.code == 0, result.output
    assert f"{ALL - 1} scenarios passed, 0 failed, 1 skipped, 0 not run" in result.output
    assert "Skipped at run time (not counted as failures):\n  features/gamma/gamma.three.feature:7  Gamma two" \
        in result.output


def test_an_undefined_step_fails_the_run(project, deployment):
    feature = project / "features" / "gamma" / "gamma.three.feature"
    feature.write_text(feature.read_text().replace("Scenario: Gamma two\n    Given the step passes",
                                                   "Scenario: Gamma two\n    Given a step nobody wrote"))
    result = run(project, deployment, "-j", "2")
    assert result.code == 1, result.output
    assert "Gamma two  [error" in result.output or "Gamma two  [undefined" in result.output, result.output


def test_a_worker_that_dies_at_start_fails_the_run_and_the_others_take_the_whole_queue(project, deployment):
    result = run(project, deployment, "-j", "2", env={"FAKE_CRASH_WORKER": "w2"})
    assert result.code == 1, result.output
    assert "w1" in result.by_worker() and "w2" not in result.by_worker()
    assert sum(result.locations.values()) == ALL and set(result.locations.values()) == {1}, result.locations
    assert "w2 exited with 3 although its scenarios passed" in result.output, result.output


def test_a_worker_that_dies_in_a_scenario_fails_the_run_and_keeps_the_outcomes_of_what_it_finished(project,
                                                                                                      deployment):
    # The private worker dies in its second @serial scenario: it finished the first, and takes nothing from the queue.
    result = run(project, deployment, "-j", "3", "--serial", "private", env={"FAKE_CRASH_AT": "private:2"})
    assert result.code == 1, result.output
    assert sum(result.locations.values()) == ALL and set(result.locations.values()) == {1}, result.locations
    finished, killed_in = result.by_worker()["private"]
    outcomes = json.loads((project / "reports" / "parallel" / "outcomes.json").read_text())["scenarios"]
    # Its JSON report goes with it; its journal still tells what it finished.
    assert {loc for loc, o in outcomes.items() if o["status"] == "not run"} == {killed_in}, outcomes
    assert outcomes[finished]["status"] == "passed" and outcomes[finished]["worker"] == "private", outcomes
    assert "[not run, private]\n      no result from worker private (exit 3)" in result.output, result.output
    assert f"{ALL - 1} scenarios passed, 0 failed, 0 skipped, 1 not run" in result.output


def test_the_private_worker_is_given_the_queue_longest_first_and_w1_shortest_first(project, deployment):
    result = run(project, deployment, "-j", "2", "--serial", "private")
    assert result.code == 0, result.output
    folder = project / "reports" / "parallel"
    queue = [os.path.relpath(line, project) for line in (folder / "queue" / "locations").read_text().splitlines()]

    def listed(worker: str) -> list[str]:
        return [os.path.normpath(os.path.relpath(folder / line, project))
                for line in (folder / f"{worker}.locations").read_text().splitlines()]

    assert listed("private")[SERIAL:] == queue and listed("w1") == queue[::-1], (queue, listed("w1"))
    assert sum(result.locations.values()) == ALL and set(result.locations.values()) == {1}, result.locations


def test_a_worker_held_up_takes_less_from_the_queue(project, deployment):
    result = run(project, deployment, "-j", "2", "--serial", "private", env={"FAKE_SLOW_WORKER": "w1"})
    assert result.code == 0, result.output
    workers = result.by_worker()
    assert len(workers["private"]) - SERIAL > len(workers.get("w1", [])), workers
    assert sum(result.locations.values()) == ALL and set(result.locations.values()) == {1}, result.locations


def test_tags_and_paths_select_as_behave_does(project, deployment):
    tagged = run(project, deployment, "-j", "2", "--tags", "@fast")
    assert tagged.code == 0, tagged.output
    assert set(tagged.locations) == {"features/alpha/alpha.one.feature:9", "features/beta/beta.two.feature:20"}
    folder = run(project, deployment, "-j", "2", "features/alpha")
    assert folder.code == 0 and sum(folder.locations.values()) == 5, folder.output


def test_random_order_shuffles_within_workers_and_repeats_with_its_seed(project, deployment):
    first = run(project, deployment, "-j", "2", "--seed", "4242")
    assert first.code == 0, first.output
    assert "seed 4242" in first.output
    again = run(project, deployment, "-j", "2", "--order", "random", "--seed", "4242")
    assert first.by_worker() == again.by_worker()
    plan = json.loads((project / "reports" / "parallel" / "plan.json").read_text())
    planned = plan["workers"]["w1"]
    files = [loc.split(":")[0] for loc in planned]
    expected = sorted(planned, key=lambda loc: files.index(loc.split(":")[0]))  # a feature runs as one block
    assert first.by_worker()["w1"] == expected, "a worker runs its scenarios in the planned order"
    orders = {tuple(run(project, deployment, "-j", "1", "--seed", str(seed)).by_worker()["w1"]) for seed in (1, 2, 3)}
    assert len(orders) > 1, "different seeds should give different orders"
    assert any(order != tuple(sorted(order, key=lambda loc: (loc.split(":")[0], int(loc.split(":")[1]))))
               for order in orders), "random order should not keep file order"


def test_list_prints_the_plan_and_runs_nothing(project, deployment):
    result = run(project, deployment, "-j", "2", "--list")
    assert result.code == 0, result.output
    assert result.log == []
    assert "features/beta/beta.two.feature:16" in result.output and "serial:" in result.output
    assert not (project / "allure-results").exists()
    private = run(project, deployment, "-j", "2", "--serial", "private", "--list")
    assert private.code == 0 and private.log == [], private.output
    assert "\nprivate:\n  features/beta/beta.two.feature:12" in private.output
    assert re.search(r"^  private +2 scenarios, about [0-9.]+ s, then takes from the queue, longest first \(own stack\)$",
                     private.output, re.M), private.output
    assert "\n  w1      takes from the queue, shortest first (shared stack)\n" in private.output, private.output
    assert re.search(r"^  queue +10 scenarios, about [0-9.]+ s, longest first", private.output, re.M), private.output
    assert "\nqueue, longest first (each taken by the first of w1, private free; w1 from the short end):\n" \
        in private.output


def test_a_stack_that_does_not_answer_stops_the_run_with_one_line(project):
    result = run(project, "http://127.0.0.1:9", "-j", "2")
    assert result.code == 2, result.output
    assert "run-parallel: the stack did not start: the gateway at http://127.0.0.1:9 is down" in result.output


def test_behave_options_with_values_are_passed_through_not_taken_for_paths():
    args = parse_args(["-j", "2", "-n", "Gamma two", "features/x", "--stop", "-e", "foo.*", "-D", "a=b",
                          "--seed", "3", "--tags", "@fast"])
    assert args.paths == ["features/x"]
    assert args.behave_extra == ["--name=Gamma two", "--stop", "--exclude=foo.*"]
    assert (args.jobs, args.define, args.order, args.seed, args.tags) == (2, ["a=b"], "random", 3, ["@fast"])


def test_scripts_run_parallel_runs_the_runner_with_the_projects_venv():
    done = subprocess.run([str(ROOT / "scripts" / "run-parallel"), "-D", "oops"], capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stderr) == (2, "run-parallel: -D 'oops' is not NAME=VALUE\n"), done


def test_scripts_run_parallel_without_a_venv_says_to_bootstrap(tmp_path):
    (tmp_path / "scripts").mkdir()
    for name in ("run-parallel", "lib.sh"):
        shutil.copy(ROOT / "scripts" / name, tmp_path / "scripts" / name)
    done = subprocess.run([str(tmp_path / "scripts" / "run-parallel"), "--list"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and done.stdout == "", done
    assert done.stderr == f"run-parallel: no .venv in {tmp_path}: run scripts/bootstrap first\n", done.stderr


def test_a_journal_line_cut_short_by_a_kill_is_left_out(tmp_path):
    journal = tmp_path / "w1.journal"
    journal.write_text('{"location": "features/a.feature:3", "status": "failed", "seconds": 0.5, "error": "boom"}\n'
                       '{"location": "features/a.feature:9", "status": "pas')
    assert journaled_outcomes(journal) == {"features/a.feature:3": {"status": "failed", "seconds": 0.5,
                                                                   "error": "boom"}}
    assert journaled_outcomes(tmp_path / "none.journal") == {}


def test_a_journal_line_names_the_first_problem_masked(tmp_path):
    from types import SimpleNamespace as Thing

    from tools.parallel.ordered_runner import Journal

    token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c3JfMSJ9.c2lnbmF0dXJlLWJ5dGVz"
    status = {name: Thing(name=name) for name in ("passed", "failed", "untested")}
    steps = [Thing(status=status["passed"], error_message=None, keyword="Given", name="an org"),
             Thing(status=status["failed"], error_message=f"refused {token}", keyword="Then", name="it is served"),
             Thing(status=status["untested"], error_message=None, keyword="And", name="it is charged")]
    scenario = Thing(location="features/a.feature:7", status=status["failed"], duration=0.25, all_steps=steps)
    journal = tmp_path / "w1.journal"
    Journal(journal).note(scenario)
    (entry,) = journaled_outcomes(journal).values()
    assert entry["status"] == "failed" and entry["seconds"] == 0.25
    assert entry["error"].startswith("refused «masked:jwt#") and token not in journal.read_text()


def test_a_collection_is_kept_until_a_feature_or_the_arguments_change(project, monkeypatch):
    import tools.parallel.workers as workers

    monkeypatch.chdir(project)
    monkeypatch.setattr(workers, "ROOT", project)
    monkeypatch.setattr(workers, "COLLECTION_FILE", project / "reports" / "collection.json")
    args = parse_args(["features"])
    first = workers.collect_scenarios(args, {})
    assert {s.name for s in first} >= {"First alpha", "Second alpha"}
    monkeypatch.setattr(workers, "PYTHON", str(project / "no-such-python"))  # from here on no dry run can run
    assert workers.collect_scenarios(args, {}) == first  # kept: nothing changed
    with pytest.raises(FileNotFoundError):
        workers.collect_scenarios(parse_args(["features", "--tags", "@fast"]), {})  # other arguments
    feature = project / "features" / "alpha" / "alpha.one.feature"
    feature.write_text(feature.read_text() + "\n  Scenario: Third alpha\n    Given the step passes\n")
    with pytest.raises(FileNotFoundError):
        workers.collect_scenarios(args, {})  # a feature changed
    assert workers.collection_key([], ["@reports/some.list"]) is None  # a list of locations: never kept
