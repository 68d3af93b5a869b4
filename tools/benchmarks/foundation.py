"""Prints how fast the embedded stack starts (cold start to /readyz 200) and how long the health and journeys
features take from the command line, cold start included.

    scripts/bench-foundation [--runs 5] [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

Goals on 2 cores: cold start under 3 s; health + journeys under 10 s."""
from __future__ import annotations

import argparse
import statistics
import sys

from tools.benchmarks.common import behave_run, cold_start

FEATURES = ["features/health", "features/journeys"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench-foundation", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server for a fresh database per start")
    args = parser.parse_args(argv)
    database = args.database_url or "sqlite"
    starts = [cold_start(database) for _ in range(args.runs)]
    print(f"cold start to ready ({args.runs} runs): median {statistics.median(starts):.2f} s, "
          f"max {max(starts):.2f} s (goal < 3 s)", flush=True)
    run = behave_run(FEATURES, database)
    print(f"behave {' '.join(FEATURES)}: {run.seconds:.2f} s wall, exit {run.code} (goal < 10 s)")
    return run.code


if __name__ == "__main__":
    sys.exit(main())
