"""Prints how long `behave features/billing` takes from a cold start, on SQLite and on PostgreSQL.

    scripts/bench-billing [--database sqlite] [--database postgresql://postgres@127.0.0.1:5432/postgres]
                          [--repeat 1] [--features features/billing]

Per database:
  1. cold start to ready: a fresh embedded stack (keygen, a new SQLite file or a new PostgreSQL database, model stub
     and gateway processes, migrations) brought up until /readyz answers 200, then taken down;
  2. wall time of `behave features/billing` as a user runs it (its own cold stack included), with its scenario
     count and result, and the CPU time it and its processes used (user + system; PostgreSQL's own server not
     included): on a shared machine the wall time depends on the load, the CPU time much less.
Goal: the whole `behave features/billing` run under 20 s on these machines (2 shared cores).
Exit status 1 when a run fails (a failing suite makes the timing meaningless).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

from tools.benchmarks.common import POSTGRES_SERVER, Table, behave_run, cold_start, label

GOAL_SECONDS = 20.0
TABLE = Table(("database", 11), ("cold start to ready", 20), ("behave wall time", 17), ("its CPU time", 13))


def bench(database: str, features: str, repeat: int) -> bool:
    """Prints the database's row of the table; whether every run passed."""
    starts, runs = [], []
    for _ in range(repeat):
        starts.append(cold_start(database))
        runs.append(behave_run([features], database))
    wall = statistics.median(run.seconds for run in runs)
    failed = not all(run.ok for run in runs)
    verdict = "not timed: a run failed" if failed else "within goal" if wall < GOAL_SECONDS else "OVER GOAL"
    result = runs[-1].summary if runs[-1].ok else f"FAILED: {runs[-1].summary}"
    TABLE.row(label(database), f"{statistics.median(starts):.2f} s", f"{wall:.2f} s",
              f"{statistics.median(run.cpu for run in runs):.2f} s", f"{result}; {verdict}"
              + (f" (runs: {', '.join(f'{run.seconds:.2f}' for run in runs)} s)" if repeat > 1 else ""))
    return not failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench-billing", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", action="append", help="sqlite or a PostgreSQL server URL (repeatable)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per database; the median is printed")
    parser.add_argument("--features", default="features/billing")
    args = parser.parse_args(argv)
    print(f"bench-billing: {args.features}, {args.repeat} run(s) per database, goal < {GOAL_SECONDS:g} s, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    TABLE.header(after="result")
    passed = [bench(database, args.features, args.repeat) for database in args.database or ["sqlite", POSTGRES_SERVER]]
    return 0 if all(passed) else 1


if __name__ == "__main__":
    sys.exit(main())
