"""Wall time of the whole suite with scripts/run-parallel at -j 1 and at -j 2, in one go, and their ratio.

    scripts/bench-parallel [--rounds K] [--jobs A,B] [run-parallel args...]

Runs `scripts/run-parallel -j A ARGS` then `-j B ARGS` (A=1, B=2 by default), K times each alternating
(median kept; default K=1), and prints for each: the wall time of the whole command (stacks up, all workers,
stacks down), the phase in which the workers run side by side (the private worker on its own stack beside
the shared-stack workers; at -j 1 the private worker alone), each worker's time, any @serial phase run after
them (--serial after), the run's CPU, how busy it kept the cores and its floor (that CPU over the cores a run of
-j N can keep busy), and the scenarios passed/failed; then the ratio A/B. The goal on a 2-core machine is
>= 1.6x. At -j 2 the workers take the scenarios from one queue, in the order of the durations the previous run at
its -j left in reports/timings-j<N>.json.
The machine's load average is printed too (other work on the machine bends the figures), and the CPU time of a
fixed loop before and after (machines of one kind differ in speed by 2x and more: compare runs by it).
Exit codes: 0 both runs passed, 1 a run had failures (the figures are still printed), 2 bad usage.
"""
from __future__ import annotations

import os
import resource
import statistics
import sys

from tools.benchmarks.common import load_average, reference_loop_ms
from tools.parallel.invoke import run_runner
from tools.parallel.model import REPORTS, ROOT

LOGS = REPORTS / "bench-parallel"


def one_run(jobs: int, extra: list[str], name: str) -> dict:
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{name}.log"
    cpu_before = children_cpu_seconds()
    done = run_runner(["-j", str(jobs), *extra], log)
    cpu = children_cpu_seconds() - cpu_before
    outcomes = done.outcomes or {}
    statuses = [o.get("status") for o in outcomes.get("scenarios", {}).values()]
    result = {"jobs": jobs, "exit": done.code, "wall": done.seconds, "phases": outcomes.get("phases", {}),
              "workers": {name: w.get("seconds", 0) for name, w in outcomes.get("workers", {}).items()},
              "passed": statuses.count("passed"), "skipped": statuses.count("skipped"),
              "failed": len(statuses) - statuses.count("passed") - statuses.count("skipped")}
    phases = result["phases"]
    workers = ", ".join(f"{worker} {seconds:.1f} s" for worker, seconds in result["workers"].items())
    parts = [f"shared stack up {phases['stack_up']:.1f} s"] if "stack_up" in phases else []
    parts.append(f"workers side by side {phases.get('parallel', 0):.1f} s: {workers or 'none'}")
    if "serial" in phases:
        parts.append(f"@serial phase after them {phases['serial']:.1f} s")
    # How busy the machine was: CPU time well under cores x wall means the workers waited (time-outs, windows),
    # near it means only less CPU per scenario makes the run shorter. The floor is this CPU spread over every core a
    # run of -j N can keep busy: a worker asks and waits for each answer, so it keeps about one core busy
    # (docs/parallel.md, "What bounds a run's time").
    cores = os.cpu_count() or 1
    parts.append(f"CPU {cpu:.1f} s, {cpu / (result['wall'] * cores):.0%} of the cores, floor "
                 f"{cpu / min(cores, jobs):.1f} s")
    print(f"  -j {jobs}: {result['wall']:6.1f} s wall ({'; '.join(parts)}); {result['passed']} scenarios "
          f"passed, {result['failed']} failed, {result['skipped']} skipped; log {log.relative_to(ROOT)}", flush=True)
    return result


def children_cpu_seconds() -> float:
    """User and system CPU of every process this one has waited for, and those they waited for in turn."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parse(argv: list[str]) -> tuple[int, tuple[int, ...], list[str]]:
    """(rounds, the two -j values, run-parallel arguments); exits after --help (0) or on bad usage (2)."""
    rounds, jobs = 1, (1, 2)
    extra: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--rounds":
            rounds = int(next(args, "1"))
        elif arg == "--jobs":
            jobs = tuple(int(j) for j in next(args, "1,2").split(","))
        elif arg in ("-h", "--help"):
            print(__doc__)
            raise SystemExit(0)
        elif arg in ("-j", "--jobs") or arg.startswith("-j"):
            sys.stderr.write("bench-parallel: use --jobs A,B (the runs' -j values)\n")
            raise SystemExit(2)
        else:
            extra.append(arg)
    if len(jobs) != 2 or rounds < 1:
        sys.stderr.write("bench-parallel: --jobs takes two values (e.g. 1,2) and --rounds at least 1\n")
        raise SystemExit(2)
    return rounds, jobs, extra


def main(argv: list[str] | None = None) -> int:
    rounds, jobs, extra = parse(sys.argv[1:] if argv is None else argv)
    print(f"bench-parallel: {os.cpu_count()} cores, load average {load_average()}, reference loop "
          f"{reference_loop_ms()} ms of CPU (the machine's speed); run-parallel {' '.join(extra) or '(whole suite)'}; "
          f"{rounds} round(s)", flush=True)
    runs: dict[int, list[dict]] = {j: [] for j in jobs}
    for r in range(rounds):
        for j in jobs:
            runs[j].append(one_run(j, extra, f"j{j}-round{r + 1}"))
    a, b = jobs
    wall = {j: statistics.median(r["wall"] for r in runs[j]) for j in jobs}
    parallel = {j: statistics.median(r["phases"].get("parallel", 0) for r in runs[j]) for j in jobs}
    print(f"-j {a}: {wall[a]:.1f} s   -j {b}: {wall[b]:.1f} s   ratio {wall[a] / wall[b]:.2f}x (whole run, "
          f"median of {rounds}); workers' phase alone {parallel[a]:.1f} s vs {parallel[b]:.1f} s = "
          f"{(parallel[a] / parallel[b]) if parallel[b] else 0:.2f}x; load average now {load_average()}, reference "
          f"loop now {reference_loop_ms()} ms")
    return 0 if all(r["exit"] == 0 for rs in runs.values() for r in rs) else 1


if __name__ == "__main__":
    sys.exit(main())
