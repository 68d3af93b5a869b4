"""The plan: which machine (--shard) and which worker runs which scenario: the @serial ones given to one worker, the
others queued longest first for whichever worker is free, or (random order) dealt out balanced by estimated
duration."""
from __future__ import annotations

import os
import random
import statistics

from tools.parallel.model import Queue, RunError, Scenario, Worker

# Hooks, cleanups and formatters per scenario, beyond the step durations that estimates are made of (measured).
SCENARIO_OVERHEAD_SECONDS = 0.01
# When scenarios are dealt out in advance (random order), how much later the shared-stack workers reach their first
# scenario than the private worker does:
# they wait for the shared stack (~2 s), while the private worker's behave starts meanwhile. Measured on the local
# stack: with equal estimates the shared-stack workers ended ~2.5 s after the private one.
SHARED_STACK_WAIT_SECONDS = 2.0


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, total = (int(part) for part in text.split("/"))
    except ValueError:
        raise RunError(f"--shard {text!r} is not I/N (e.g. --shard 1/3)") from None
    if total < 1 or not 1 <= index <= total:
        raise RunError(f"--shard {text!r}: I must be between 1 and N (e.g. --shard 1/3)")
    return index, total


def deal(scenarios: list[Scenario], bins: int, weight=lambda s: s.estimate, ordered: bool = False,
         loads: list[float] | None = None) -> list[list[Scenario]]:
    """Greedy longest-first balancing: each scenario goes to the least loaded bin (lowest index on ties).
    `ordered` keeps the given order instead of sorting longest first (random order); `loads` are what
    the bins already hold."""
    loads = list(loads) if loads is not None else [0.0] * bins
    dealt: list[list[Scenario]] = [[] for _ in range(bins)]
    items = scenarios if ordered else sorted(scenarios, key=lambda s: (-weight(s), s.stable_key))
    for scenario in items:
        target = min(range(bins), key=lambda k: (loads[k], k))
        dealt[target].append(scenario)
        loads[target] += weight(scenario)
    return dealt


def shard(scenarios: list[Scenario], index: int, total: int, weights: dict[str, float]) -> list[Scenario]:
    """The index-th (1-based) of total parts. Depends only on the checkout and the weights file, never on
    this machine's history, so every machine computes the same split."""
    known = [w for w in weights.values() if w > 0]
    default = statistics.median(known) if known else 1.0

    def weight(s: Scenario) -> float:
        return weights.get(s.timing_key, default) if weights else 1.0

    return deal(scenarios, total, weight=weight)[index - 1]


def shard_selection(scenarios: list[Scenario], index: int, total: int, weights: dict[str, float],
                    serial_tag: str) -> list[Scenario]:
    """This machine's part: ordinary and @serial scenarios are split apart, so every shard gets its share of both."""
    serial = [s for s in scenarios if serial_tag in s.tags]
    ordinary = [s for s in scenarios if serial_tag not in s.tags]
    return shard(ordinary, index, total, weights) + shard(serial, index, total, weights)


def plan_workers(parallel: list[Scenario], jobs: int, rng: random.Random | None,
                 loads: list[float] | None = None) -> list[list[Scenario]]:
    """`jobs` parts, balanced longest first (or dealt in a seeded random order); with `loads`, what each part
    already holds. Empty parts are kept, so a part's index says which worker it is for."""
    if rng is not None:
        items = sorted(parallel, key=lambda s: s.stable_key)
        rng.shuffle(items)
        return deal(items, jobs, weight=cost, ordered=True, loads=loads)
    return [sorted(part, key=lambda s: (s.file, s.line)) for part in deal(parallel, jobs, weight=cost, loads=loads)]


def cost(s: Scenario) -> float:
    """What a scenario adds to its worker's time: its steps, plus behave's own work around them."""
    return s.estimate + SCENARIO_OVERHEAD_SECONDS


def serial_mode(requested: str, defines: dict[str, str]) -> str:
    """'private' or 'after'. A stack the runner can start twice (local, compose) gives the private worker a stack
    of its own; on an external deployment the second "stack" would be the same one, so @serial runs after."""
    if requested != "auto":
        return requested
    stack = defines.get("stack") or os.environ.get("SUITE_STACK") or "local"
    return "after" if stack == "external" else "private"


def plan(scenarios: list[Scenario], jobs: int, serial_tag: str, mode: str, rng: random.Random | None
         ) -> list[Worker]:
    """The workers and what each runs.

    private: N-1 shared-stack workers w1.. and one private worker; the private one holds the @serial scenarios
    (first, in defined order). With no @serial scenario selected there is no private worker: all N share the one
    stack.
    after: N shared-stack workers, then one `serial` worker with the @serial scenarios only.
    The ordinary scenarios wait in one queue (queued()) from which each worker that runs them takes the next whenever
    it is free; with `rng` (random order), or a single such worker, they are dealt out in advance instead, balanced
    by their durations, so that a seed repeats who runs what."""
    serial = [s for s in scenarios if serial_tag in s.tags]
    ordinary = [s for s in scenarios if serial_tag not in s.tags]
    serial.sort(key=lambda s: s.stable_key)
    if rng is not None:
        rng.shuffle(serial)
    else:
        serial.sort(key=lambda s: (s.file, s.line))
    private_worker = mode != "after" and bool(serial)
    shared_count = jobs - 1 if private_worker else jobs
    if rng is None and ordinary and shared_count + private_worker > 1:
        return queued(ordinary, serial, shared_count, private_worker)
    if not private_worker:  # nothing needs a stack of its own: every worker shares the one stack
        workers = [Worker(f"w{k + 1}", part) for k, part in enumerate(plan_workers(ordinary, jobs, rng)) if part]
        if serial:
            workers.append(Worker("serial", serial, own_stack=True, after=True))
        return workers
    parts = plan_workers(ordinary, jobs, rng, loads=[SHARED_STACK_WAIT_SECONDS] * (jobs - 1)
                         + [sum(cost(s) for s in serial)])
    workers = [Worker(f"w{k + 1}", part) for k, part in enumerate(parts[:-1]) if part]
    private = serial + parts[-1]
    if rng is not None:  # random order mixes them, so no scenario always follows a fault or a restart
        rng.shuffle(private)
    if private:
        workers.append(Worker("private", private, own_stack=True))
    return workers


def queued(ordinary: list[Scenario], serial: list[Scenario], shared_count: int, private_worker: bool
           ) -> list[Worker]:
    """The workers of a plan whose ordinary scenarios wait in one queue (the feature with the longest first). No more
    shared-stack workers than the queue holds scenarios; the private worker takes from it once its @serial ones are
    done.

    The long scenarios mostly wait (a retry window, a cool-down, a time-out), and so do the @serial ones; the short
    ones keep a core busy. Two cores shared by four busy processes (two behave, two gateways) do less for each than
    one core does for two, so waits are best spent beside another worker's busy work, not beside its waits. So the
    private worker (its @serial ones first), or without one w1, takes from the long end, the others from the short
    end; they meet in the middle, on scenarios of middling length, and so still end together."""
    longest_first = sorted(ordinary, key=lambda s: (-cost(s), s.stable_key))
    # A feature's scenarios together (behave parses a file again for each run of its locations, and runs a feature's
    # scenarios as one block anyway), the features in the order of their longest.
    first_seen = {s.file: n for n, s in reversed(list(enumerate(longest_first)))}
    pending = Queue(sorted(longest_first, key=lambda s: first_seen[s.file]))
    workers = [Worker(f"w{k + 1}", [], queue=pending, shortest_first=private_worker or k > 0)
               for k in range(min(shared_count, len(ordinary)))]
    if private_worker:
        workers.append(Worker("private", serial, own_stack=True, queue=pending))
    elif serial:
        workers.append(Worker("serial", serial, own_stack=True, after=True))
    return workers
