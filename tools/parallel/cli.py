"""scripts/run-parallel's command line: its options (unknown ones go to behave), its exit codes, SIGTERM."""
from __future__ import annotations

import argparse
import os
import random
import signal
import sys

import tools.parallel
from tools.defines import parse_defines
from tools.parallel.model import ROOT, Interrupted, RunError
from tools.parallel.run import run

# behave's selection options that take a value (so their value is not taken for a path).
BEHAVE_VALUE_OPTIONS = {"-n": "--name", "--name": "--name", "-e": "--exclude", "--exclude": "--exclude",
                        "-i": "--include", "--include": "--include", "--lang": "--lang"}


def parser() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(prog="scripts/run-parallel", add_help=True, allow_abbrev=False,
                                      description=tools.parallel.__doc__.split("\n\n")[0],
                                      epilog="See docs/parallel.md, or the top of tools/parallel/__init__.py, for "
                                             "details.")
    options.add_argument("paths", nargs="*", help="feature folders, files or FILE:LINE (default: behave.ini)")
    options.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    options.add_argument("-t", "--tags", action="append", default=[])
    options.add_argument("-D", "--define", action="append", default=[], metavar="NAME=VALUE")
    options.add_argument("--shard")
    options.add_argument("--order", choices=["defined", "random"], default=None)
    options.add_argument("--seed", type=int)
    options.add_argument("--list", action="store_true")
    options.add_argument("--timings")
    options.add_argument("--serial-tag", default="serial")
    options.add_argument("--serial", choices=["auto", "private", "after"], default="auto")
    options.add_argument("--check-results", nargs="+", metavar="DIR")
    options.add_argument("--refresh-baseline", action="store_true",
                         help="write this run's durations into tools/parallel/baseline.json (committed: a fresh "
                              "clone's first run balances by it)")
    return options


def parse_args(argv: list[str]):
    options = parser()
    joined, pending = [], iter(argv)
    for arg in pending:  # behave options that take a value, kept together as --option=VALUE
        long = BEHAVE_VALUE_OPTIONS.get(arg)
        joined.append(f"{long}={next(pending, '')}" if long else arg)
    args, extra = options.parse_known_args(joined)
    # Unknown options go to behave; a bare word after them is a path.
    words = args.paths + extra  # (argparse takes an option with a blank in its value for a positional)
    args.behave_extra = [a for a in words if a.startswith("-")]
    args.paths = [a for a in words if not a.startswith("-")]
    if args.jobs < 1:
        options.error("-j must be at least 1")
    if args.seed is not None and args.order is None:
        args.order = "random"
    args.order = args.order or "defined"
    if args.order == "random" and args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1_000_000)
    return args


def defines_of(pairs: list[str]) -> dict[str, str]:
    try:
        return parse_defines(pairs)
    except ValueError as problem:
        raise RunError(str(problem)) from None


def main(argv: list[str] | None = None) -> int:
    def on_term(signum, frame):
        raise Interrupted()

    signal.signal(signal.SIGTERM, on_term)
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        os.chdir(ROOT)
        return run(args, defines_of(args.define))
    except RunError as problem:
        sys.stderr.write(f"run-parallel: {problem}\n")
        return 2
    except (KeyboardInterrupt, Interrupted):
        sys.stderr.write("run-parallel: interrupted\n")
        return 130
