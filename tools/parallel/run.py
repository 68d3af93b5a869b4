"""One run: collect and plan, print the plan, run the workers on their stacks, then summarize and keep the outcomes."""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tools.parallel.history import (BASELINE_FILE, allure_folder, estimate, previous_durations, read_timings,
                                    refresh_baseline, save_timings)
from tools.parallel.model import (JUNIT_DIR, NOT_RUN, PARALLEL_DIR, PASSED, SKIPPED, Interrupted, Queue, RunError,
                                  Scenario, Worker)
from tools.parallel.planning import parse_shard, plan, serial_mode, shard_selection
from tools.parallel.results import check_results, summarize, write_outcomes
from tools.parallel.workers import (collect_scenarios, left_in_queue, open_queue, start_worker, stop_workers,
                                    wait_workers)


@dataclass
class Plan:
    selected: int  # before sharding
    scenarios: list[Scenario]
    workers: list[Worker]
    mode: str  # private or after
    randomized: bool
    known: int  # scenarios whose duration came from history
    shard_note: str = ""

    @property
    def queue(self) -> Queue | None:
        return next((w.queue for w in self.workers if w.queue is not None), None)


def make_plan(args, defines: dict[str, str], results_dir: Path) -> Plan:
    by_key, by_name = previous_durations(results_dir, args.jobs)
    scenarios = collect_scenarios(args, defines)
    selected = len(scenarios)
    shard_note = ""
    if args.shard:
        index, total = parse_shard(args.shard)
        weights = {}
        if args.timings:
            try:
                weights = read_timings(Path(args.timings))
            except (OSError, ValueError, AttributeError) as exc:
                raise RunError(f"--timings {args.timings}: cannot read it ({exc})") from None
        scenarios = shard_selection(scenarios, index, total, weights, args.serial_tag)
        shard_note = f", shard {index}/{total}: {len(scenarios)}"
    known = estimate(scenarios, by_key, by_name, args.serial_tag)
    mode = serial_mode(args.serial, defines)
    rng = random.Random(args.seed) if args.order == "random" else None
    workers = plan(scenarios, args.jobs, args.serial_tag, mode, rng)
    return Plan(selected, scenarios, workers, mode, rng is not None, known, shard_note)


def layout(args, planned: Plan) -> str:
    """Where the workers run, in words."""
    serial_count = sum(args.serial_tag in s.tags for s in planned.scenarios)
    shared = [w for w in planned.workers if not w.own_stack]
    if not serial_count:
        return f"{len(shared)} worker(s) on a shared stack (no @{args.serial_tag} scenario selected)"
    if planned.mode == "private":
        private_note = (f"the private worker on a stack of its own (the {serial_count} @{args.serial_tag}"
                        f"{'' if planned.randomized else ' first'}, "
                        f"{'then ordinary ones from the queue' if planned.queue else 'and the others it is dealt'})")
        return (f"{len(shared)} worker(s) on a shared stack and, beside them, {private_note}" if shared
                else f"{private_note} alone")
    return f"{len(shared)} worker(s) on a shared stack, then {serial_count} @{args.serial_tag} alone"


def describe(args, planned: Plan) -> None:
    order_note = f"order random, seed {args.seed} (repeat with --seed {args.seed})" if args.order == "random" \
        else "order defined"
    print(f"run-parallel: {planned.selected} scenarios selected{planned.shard_note}; -j {args.jobs}: "
          f"{layout(args, planned)}; {order_note}; durations known for {planned.known}", flush=True)
    for worker in planned.workers:
        where = "own stack" + (", after the others" if worker.after else "") if worker.own_stack else "shared stack"
        end = "shortest first" if worker.shortest_first else "longest first"
        if worker.queue and not worker.scenarios:
            print(f"  {worker.name:<7} takes from the queue, {end} ({where})", flush=True)
            continue
        then = f", then takes from the queue, {end}" if worker.queue else ""
        print(f"  {worker.name:<7} {len(worker.scenarios):>4} scenarios, about {worker.estimate:.1f} s{then} "
              f"({where})", flush=True)
    if planned.queue:
        print(f"  {'queue':<7} {len(planned.queue.scenarios):>4} scenarios, about {planned.queue.estimate:.1f} s, "
              f"longest first, each taken by the first worker free from its end", flush=True)


def list_plan(planned: Plan) -> None:
    for worker in planned.workers:
        if not worker.scenarios:
            continue
        print(f"\n{worker.name}:")
        for s in worker.scenarios:
            print(f"  {s.location:<60} {s.estimate:>6.2f}s  {s.name}")
    if planned.queue:
        takers = [w.name for w in planned.workers if w.queue]
        print(f"\nqueue, longest first (each taken by the first of {', '.join(takers)} free; "
              f"{', '.join(w.name for w in planned.workers if w.shortest_first) or 'none'} from the short end):")
        for s in planned.queue.scenarios:
            print(f"  {s.location:<60} {s.estimate:>6.2f}s  {s.name}")


class Execution:
    """The workers at work: the private one on its own stack beside the shared stack's workers, then any that run
    after them. Holds the shared stack while it is up, and the phases' durations."""

    def __init__(self, args, defines: dict[str, str], run_id: str, workers: list[Worker]):
        self.args, self.defines, self.run_id, self.workers = args, defines, run_id, workers
        self.stack = None
        self.phases: dict[str, float] = {}

    def own_defines(self, worker: Worker) -> dict[str, str]:
        return {**self.defines, "run_id": self.run_id, "worker": worker.name}

    def run(self) -> None:
        side_by_side = [w for w in self.workers if not w.after]
        shared = [w for w in side_by_side if not w.own_stack]
        t_workers = time.monotonic()
        for worker in side_by_side:
            if worker.own_stack:  # it brings up its own stack while the shared one starts
                start_worker(worker, self.args, self.own_defines(worker))
        if shared:
            self.run_shared(shared, side_by_side)
        wait_workers(side_by_side)
        self.phases["parallel"] = time.monotonic() - t_workers
        for worker in self.workers:
            if worker.after:
                self.run_after(worker)

    def run_shared(self, shared: list[Worker], side_by_side: list[Worker]) -> None:
        """Start the shared stack and its workers; take the stack down as soon as they are done."""
        external = self.start_shared_stack()
        for worker in shared:
            start_worker(worker, self.args, {**external, "worker": worker.name})
        wait_workers(side_by_side, until=shared)
        if any(w.exit_code != 0 for w in shared):
            print(f"run-parallel: a worker failed; the shared stack's state: "
                  f"{', '.join(f'{k} {v}' for k, v in self.stack.state().items()) or 'unknown'}", flush=True)
        t0 = time.monotonic()
        self.stack.down()  # at once: the private worker may still be running, and gets the machine
        self.stack = None
        self.phases["stack_down"] = time.monotonic() - t0

    def start_shared_stack(self) -> dict[str, str]:
        """Bring the shared stack up; the -D options with which workers use it as `external`."""
        from support.harness.config import SuiteSetupError  # imported here: --list needs no stack code
        from support.stacks import standalone
        t0 = time.monotonic()
        try:
            self.stack, endpoints = standalone.start({**self.defines, "run_id": self.run_id})
        except SuiteSetupError as problem:
            raise RunError(f"the stack did not start: {problem}") from None
        self.phases["stack_up"] = time.monotonic() - t0
        print(f"run-parallel: {self.stack.name} stack up in {self.phases['stack_up']:.1f} s "
              f"({standalone.masked(endpoints)})", flush=True)
        # The workers see it as external; they need not retire what they made on a stack that goes with the run.
        discarded = {} if self.stack.outlives_the_run else {"cleanup": "false"}
        return {**discarded, **self.defines, **standalone.external_defines(endpoints, self.stack), "run_id": self.run_id}

    def run_after(self, worker: Worker) -> None:
        t0 = time.monotonic()
        print(f"run-parallel: {len(worker.scenarios)} @{self.args.serial_tag} scenario(s), alone, on a stack "
              f"of their own", flush=True)
        start_worker(worker, self.args, self.own_defines(worker))
        wait_workers([worker])
        self.phases["serial"] = time.monotonic() - t0

    def close(self) -> None:
        stop_workers(self.workers)  # none left running unless the run was cut short
        if self.stack is not None:
            self.stack.down()


def clear_outputs(results_dir: Path) -> None:
    for folder in (results_dir, JUNIT_DIR, PARALLEL_DIR):
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)


def new_run_id(defines: dict[str, str]) -> str:
    return defines.get("run_id") or time.strftime("p%m%d%H%M%S") + hashlib.sha1(os.urandom(8)).hexdigest()[:4]


def run(args, defines: dict[str, str]) -> int:
    if args.check_results:
        return check_results([Path(d) for d in args.check_results], lambda: collect_scenarios(args, defines))
    started = time.monotonic()
    results_dir = allure_folder()
    planned = make_plan(args, defines, results_dir)
    describe(args, planned)
    if args.list:
        list_plan(planned)
        return 0
    if not planned.scenarios:
        print("run-parallel: nothing selected\n0 scenarios passed, 0 failed, 0 skipped, 0 not run")
        return 0

    clear_outputs(results_dir)
    facts = {"seed": args.seed, "order": args.order, "shard": args.shard, "jobs": args.jobs,
             "run_id": new_run_id(defines), "serial": planned.mode}
    queue = [s.location for s in planned.queue.scenarios] if planned.queue else []
    (PARALLEL_DIR / "plan.json").write_text(json.dumps(
        {**facts, "workers": {w.name: [s.location for s in w.scenarios] for w in planned.workers}, "queue": queue},
        indent=1) + "\n")
    if planned.queue:
        open_queue(planned.queue)
    execution = Execution(args, defines, facts["run_id"], planned.workers)
    try:
        execution.run()
    except (KeyboardInterrupt, Interrupted):
        print("\nrun-parallel: interrupted; stopping the workers and the stack", flush=True)
        stop_workers(planned.workers)
        return 130
    finally:
        execution.close()
    return finish(args, planned.workers, facts, time.monotonic() - started, execution.phases, results_dir)


def finish(args, workers: list[Worker], facts: dict, wall: float, phases: dict[str, float], results_dir: Path) -> int:
    """The summary, the durations kept for the next run, outcomes.json and the closing lines; the exit code."""
    left_in_queue(workers)
    totals = summarize(workers)
    passed, failed, skipped, not_run = totals[PASSED], totals["failed"], totals[SKIPPED], totals[NOT_RUN]
    save_timings(workers, args.jobs)
    if args.refresh_baseline:
        print(f"run-parallel: {os.path.relpath(BASELINE_FILE)} now holds {refresh_baseline(workers)} durations "
              f"(commit it)")
    write_outcomes(facts, wall, phases, workers)
    ok = failed == 0 and not_run == 0 and all(w.exit_code == 0 for w in workers)
    extra = f"; seed {args.seed}" if args.order == "random" else ""
    print(f"\nAllure results: {os.path.relpath(results_dir)}/  JUnit: reports/junit/<worker>/  logs: "
          f"reports/parallel/<worker>.log{extra}")
    print(f"run-parallel: {'PASSED' if ok else 'FAILED'} in {wall:.1f} s")
    print(f"{passed} scenarios passed, {failed} failed, {skipped} skipped, {not_run} not run")
    return 0 if ok else 1
