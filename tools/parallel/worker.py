"""A run-parallel worker: ``python -m tools.parallel.worker BEHAVE-ARGS...`` runs behave as ``python -m behave``
does, then ends without the interpreter's teardown.

A worker ends holding every feature, step and report it made; freeing them all object by object took half a second
of the run's last second, and nothing waits for it. The exit handlers (the stack's, logging's) still run first, and
the output is flushed, so the worker leaves exactly what a normal exit leaves.
"""
from __future__ import annotations

import atexit
import os
import sys


def run() -> int:
    from behave.__main__ import main

    try:
        code = main(sys.argv[1:])  # (given: behave reads sys.argv itself only when its command is named behave)
    except SystemExit as stop:  # behave or a hook ended the run early
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return code


def end_now(code: int) -> None:
    atexit._run_exitfuncs()  # pylint: disable=protected-access  (what a normal exit would run)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    end_now(run())
