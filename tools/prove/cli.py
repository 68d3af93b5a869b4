"""scripts/prove's command line: which faults (or corruptions) to try, how, and its exit codes."""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import tools.prove
from support.harness.config import SuiteSetupError
from tools.prove import proxy_mode
from tools.prove.catalogue import CATALOGUE
from tools.prove.faults import Fault, check_catalogue
from tools.prove.report import closing_lines, summary, verdict_line, write
from tools.prove.trials import TrialOptions, control, try_all
from tools.prove.verdicts import BROKEN, KILLED, NOT_RUN, TIMED_OUT, UNPROVEN
from tools.prove.workspace import ROOT, Workspace, WorkspaceError, head_commit

RESULTS = ROOT / "reports" / "prove"


def parser() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(prog="scripts/prove", description=tools.prove.__doc__.split("\n\n")[0],
                                      formatter_class=argparse.RawDescriptionHelpFormatter,
                                      epilog="See docs/proving.md.")
    options.add_argument("--sample", action="store_true", help="only the faults marked for CI (a few minutes)")
    options.add_argument("--fault", action="append", default=[], metavar="NAME",
                         help="only this fault (repeatable; a name ending in '.' or '-' is a prefix)")
    options.add_argument("--list", action="store_true", help="list the catalogue and exit")
    options.add_argument("--check", action="store_true",
                         help="check that every fault still applies to the checkout, and exit")
    options.add_argument("-j", "--jobs", type=int, default=1, help="faults tried at once, each on its own copy")
    options.add_argument("--worktree", action="store_true",
                         help="copy the working tree as it is now (default: the last commit)")
    options.add_argument("--wide", action="store_true",
                         help="a fault its features miss is run against the whole suite too")
    options.add_argument("--no-control", action="store_true",
                         help="skip the run without any fault that confirms each kill")
    options.add_argument("--timeout", type=float, default=900, help="seconds one behave run may take")
    options.add_argument("-D", "--define", action="append", default=[], metavar="NAME=VALUE",
                         help="a suite option for every run (say database_url=postgresql://...)")
    options.add_argument("--results", type=Path, default=RESULTS, help="where results.json and summary.json go")
    proxy_mode.add_arguments(options)
    return options


def select(args) -> list[tuple[int, Fault]]:
    numbered = list(enumerate(CATALOGUE, start=1))
    if args.sample:
        numbered = [(n, f) for n, f in numbered if f.sample]
    if args.fault:
        wanted = args.fault
        numbered = [(n, f) for n, f in numbered
                    if any(f.name == w or (w.endswith((".", "-")) and f.name.startswith(w)) for w in wanted)]
        if not numbered:
            raise SystemExit(f"scripts/prove: no fault matches {', '.join(wanted)} (scripts/prove --list)")
    return numbered


def list_catalogue() -> int:
    for number, fault in enumerate(CATALOGUE, start=1):
        mark = " [sample]" if fault.sample else ""
        print(f"{number:>3} {fault.name}{mark}: {fault.what}\n"
              f"      {fault.file}; caught by {', '.join(fault.caught_by)}")
    capabilities = sorted({c for f in CATALOGUE for c in f.capabilities})
    print(f"{len(CATALOGUE)} faults ({sum(f.sample for f in CATALOGUE)} in the sample), naming {len(capabilities)} "
          f"capabilities: {', '.join(capabilities)}")
    uncovered = sorted({p.name for p in (ROOT / "features").iterdir() if p.is_dir()} - set(capabilities))
    if uncovered:
        print(f"capabilities no fault names: {', '.join(uncovered)}")
    return 0


def check(commit: str | None) -> list[str]:
    """The catalogue's problems against the copy the faults would be applied to."""
    workspace = Workspace.create(commit)
    try:
        return check_catalogue(CATALOGUE, workspace.root)
    finally:
        workspace.remove()


def describe(commit: str | None) -> str:
    return "the working tree" if commit is None else f"commit {commit[:12]}"


def prove_faults(args) -> int:
    commit = None if args.worktree else head_commit()
    problems = check(commit)
    if problems:
        print("scripts/prove: the catalogue no longer fits the gateway:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    numbered = select(args)
    if args.check:
        print(f"scripts/prove: all {len(CATALOGUE)} faults apply to {describe(commit)}")
        return 0
    mode = "sample" if args.sample else ("selection" if args.fault else "catalogue")
    logs = args.results / "logs"
    options = TrialOptions(args.define, args.timeout, logs, commit, args.wide)
    print(f"scripts/prove: {len(numbered)} of {len(CATALOGUE)} faults ({mode}), {args.jobs} at a time, each on a "
          f"temporary copy of {describe(commit)}; logs in {logs}", flush=True)
    started, printing, done = time.monotonic(), threading.Lock(), []

    def on_verdict(number, fault, verdict):
        with printing:
            done.append(number)
            print(verdict_line(len(done), len(numbered), verdict), flush=True)

    verdicts = try_all(numbered, args.jobs, options, on_verdict)
    checked = None if args.no_control else control(verdicts, options)
    if checked is not None and checked.outcome in (BROKEN, TIMED_OUT):
        print(f"control run without any fault: {checked.outcome} ({checked.log}); the kills are not confirmed",
              flush=True)
    elif checked is not None:
        unproven = [v.name for v in verdicts if v.outcome == UNPROVEN]
        print(f"control run without any fault ({len(checked.targets)} scenarios, {checked.seconds:.0f} s): "
              + (f"these kills are not proven, their scenarios fail anyway: {', '.join(unproven)}" if unproven
                 else "every scenario that caught a fault passes"), flush=True)
    result = summary(verdicts, mode=mode, commit=describe(commit), seconds=time.monotonic() - started,
                     catalogue_size=len(CATALOGUE))
    write(args.results, verdicts, result, checked)
    for line in closing_lines(result):
        print(line)
    confirmed = checked is None or checked.outcome not in (BROKEN, TIMED_OUT)
    return 0 if confirmed and all(v.outcome in (KILLED, NOT_RUN) for v in verdicts) else 1


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    os.chdir(ROOT)
    try:
        if args.proxy:
            return proxy_mode.run(args)
        if args.list:
            return list_catalogue()
        return prove_faults(args)
    except (WorkspaceError, SuiteSetupError) as problem:
        print(f"scripts/prove: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scripts/prove: interrupted", file=sys.stderr)
        return 130
