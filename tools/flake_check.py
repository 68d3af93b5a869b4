"""Run the whole suite N times in parallel and in random order, and print every scenario whose outcome changed.

    scripts/flake-check N [--seed S] [run-parallel args...]

Each run is `scripts/run-parallel --order random --seed S+k ARGS` (S: --seed, else a new random one; all seeds
are printed, so any run can be repeated alone with scripts/run-parallel --seed ...). Per run: its log, its
outcomes and, when something failed, its Allure results are kept under reports/flake-check/.
At the end it lists the scenarios whose outcome changed between runs (passed in some, failed in others),
with the seeds of the failing runs and the first failure message, then the scenarios that failed every time.
Exit codes: 0 every scenario passed in every run, 1 an outcome changed or a scenario always failed,
2 bad usage or a run that could not start.
"""
from __future__ import annotations

import json
import random
import shutil
import sys
from collections import defaultdict
from dataclasses import dataclass, field

from tools.parallel.invoke import run_runner
from tools.parallel.model import REPORTS, ROOT

OUT = REPORTS / "flake-check"
FINE = ("passed", "skipped")


class CouldNotStart(Exception):
    pass


@dataclass
class History:
    """What every run said of every scenario."""
    runs: int
    seen: dict[str, list[tuple[int, str]]] = field(default_factory=lambda: defaultdict(list))  # location: (seed, status)
    names: dict[str, str] = field(default_factory=dict)
    errors: dict[str, tuple[int, str]] = field(default_factory=dict)  # location: the first failure's seed, message

    def add(self, seed: int, outcomes: dict[str, dict]) -> None:
        for location, outcome in outcomes.items():
            self.seen[location].append((seed, outcome["status"]))
            self.names[location] = outcome.get("name", "")
            if outcome["status"] not in FINE and location not in self.errors:
                self.errors[location] = (seed, outcome.get("error") or "")

    def changed(self) -> dict[str, list]:
        return {loc: seen for loc, seen in self.seen.items()
                if len({status for _, status in seen}) > 1 or len(seen) < self.runs}

    def always_failed(self) -> dict[str, list]:
        changed = self.changed()
        return {loc: seen for loc, seen in self.seen.items()
                if loc not in changed and all(status not in FINE for _, status in seen)}


def parse(argv: list[str]) -> tuple[int, int | None, list[str]]:
    """(runs, seed or None, the run-parallel arguments); --order is dropped (every run is random)."""
    seed = None
    extra: list[str] = []
    args = iter(argv[1:])
    for arg in args:
        if arg == "--seed":
            seed = int(next(args))
        elif arg.startswith("--seed="):
            seed = int(arg.split("=", 1)[1])
        elif arg == "--order" or arg.startswith("--order="):
            if arg == "--order":
                next(args, None)
        else:
            extra.append(arg)
    return int(argv[0]), seed, extra


def one_run(k: int, runs: int, seed: int, extra: list[str], history: History) -> None:
    log = OUT / f"run-{k:02d}.log"
    done = run_runner(["--order", "random", "--seed", str(seed), *extra], log)
    if done.code == 2 or done.outcomes is None:
        raise CouldNotStart(f"flake-check: run {k} (seed {seed}) could not start; see {log.relative_to(ROOT)}:\n  "
                            + "\n  ".join(log.read_text(errors="replace").splitlines()[-10:]))
    (OUT / f"run-{k:02d}.json").write_text(json.dumps(done.outcomes, indent=1) + "\n")
    outcomes = done.outcomes["scenarios"]
    failed = [loc for loc, o in outcomes.items() if o["status"] not in FINE]
    history.add(seed, outcomes)
    if failed:
        results = ROOT / "allure-results"
        if results.is_dir():
            shutil.copytree(results, OUT / f"run-{k:02d}-allure-results")
    print(f"  run {k:>2}/{runs} seed {seed}: {len(outcomes) - len(failed)} passed, {len(failed)} failed "
          f"in {done.seconds:.1f} s{'  (failed: ' + ', '.join(failed) + ')' if failed else ''}", flush=True)


def report(history: History) -> int:
    changed, always = history.changed(), history.always_failed()
    print(f"\nflake-check: {history.runs} runs, {len(history.seen)} scenarios, {len(changed)} with a changed "
          f"outcome, {len(always)} failing every time")
    for title, group in (("Changed outcome", changed), ("Failed in every run", always)):
        if not group:
            continue
        print(f"\n{title}:")
        for location, seen in sorted(group.items()):
            pattern = "".join({"passed": ".", "skipped": "s"}.get(status, "F") for _, status in seen)
            failing = [str(s) for s, status in seen if status not in FINE]
            print(f"  {location}  {history.names.get(location, '')}")
            print(f"      runs {pattern} ({len(seen)} of {history.runs} ran it); failed with seed(s) "
                  f"{', '.join(failing)}")
            if location in history.errors:
                first_seed, message = history.errors[location]
                lines = str(message).strip().splitlines()
                print(f"      first failure (seed {first_seed}): " + "\n        ".join(lines[:5]))
    return 1 if changed or always else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or not argv[0].isdigit() or int(argv[0]) < 1:
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    runs, seed, extra = parse(argv)
    if seed is None:
        seed = random.SystemRandom().randrange(1, 900_000)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    print(f"flake-check: {runs} runs of scripts/run-parallel --order random {' '.join(extra)}; seeds {seed + 1}.."
          f"{seed + runs}", flush=True)
    history = History(runs)
    try:
        for k in range(1, runs + 1):
            one_run(k, runs, seed + k, extra, history)
    except CouldNotStart as problem:
        print(problem)
        return 2
    return report(history)


if __name__ == "__main__":
    sys.exit(main())
