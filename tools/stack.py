"""Start one acceptance stack on its own and keep it up until Ctrl-C or SIGTERM.

    scripts/stack up [--out stack.json] [-D NAME=VALUE ...]

The stack is chosen and configured as in a behave run (-D stack=local|compose|external, -D database_url=...
for a fresh database on a PostgreSQL server, -D keys_dir=..., SUITE_* environment variables). Once it answers,
its endpoints are printed as one JSON object (and written to --out, mode 0600):

    {"stack": "local", "base_url": ..., "database_url": ..., "keys_dir": ..., "stub_url": ..., "config_repo": ...,
     "behave_args": ["-D", "stack=external", "-D", "base_url=...", ...]}

Any number of behave processes can then share it:

    .venv/bin/behave features/billing $(jq -r '.behave_args | join(" ")' stack.json) -D worker=w1

On Ctrl-C / SIGTERM the stack is taken down (processes stopped, a database it created dropped) and --out is
removed. Exit codes: 0 stopped cleanly, 2 the stack could not start (one line on stderr says why).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from support.harness.config import SuiteSetupError
from support.stacks import standalone
from tools.defines import parse_defines
from tools.project import project_root


def defines(pairs: list[str]) -> dict[str, str]:
    try:
        return parse_defines(pairs)
    except ValueError as problem:
        raise SystemExit(f"stack: {problem}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/stack", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up"], help="up: start the stack and keep it up until stopped")
    parser.add_argument("--out", help="also write the endpoints JSON to this file")
    parser.add_argument("-D", "--define", action="append", default=[], metavar="NAME=VALUE",
                        help="a suite option, as for behave (repeatable)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    os.chdir(project_root())
    try:
        stack, endpoints = standalone.start(defines(args.define))
    except SuiteSetupError as problem:
        sys.stderr.write(f"stack: {problem}\n")
        return 2
    out = Path(args.out).resolve() if args.out else None
    try:
        described = standalone.describe(stack, endpoints)
        if out:
            write_private(out, described)
        print(json.dumps(described), flush=True)
        sys.stderr.write(f"stack: {stack.name} stack up ({standalone.masked(endpoints)}); Ctrl-C or SIGTERM "
                         f"takes it down\n")
        sys.stderr.flush()
        return watch(stack, stop)
    finally:
        stack.down()
        if out and out.exists():
            out.unlink()
        sys.stderr.write("stack: down\n")


def write_private(path: Path, described: dict) -> None:
    """The endpoints JSON, readable by its owner only (it may name a database password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(described, handle, indent=2)
        handle.write("\n")


def watch(stack, stop: threading.Event) -> int:
    """Until `stop` is set (0), or until one of the stack's processes exits (1)."""
    while not stop.wait(1.0):
        state = stack.state()
        gone = [name for name, seen in state.items() if seen.startswith("exited")]
        if gone:
            sys.stderr.write(f"stack: {', '.join(gone)} exited ({state}); taking the stack down\n")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
