"""What a run reports: the workers' table and the scenarios that did not pass, outcomes.json, and --check-results."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tools.parallel.history import load_allure_results
from tools.parallel.model import NOT_RUN, PARALLEL_DIR, PASSED, SKIPPED, RunError, Scenario, Worker, kind_of


def summarize(workers: list[Worker]) -> Counter:
    """Prints the workers' table, the scenarios skipped at run time and those not passed; returns the totals."""
    print()
    print(f"{'worker':<8} {'scenarios':>9} {'passed':>7} {'failed':>7} {'skipped':>8} {'not run':>8} {'exit':>5} "
          f"{'seconds':>8}")
    totals = Counter()
    for worker in workers:
        counts = Counter(kind_of(outcome["status"]) for outcome in worker.outcomes.values())
        totals.update(counts)
        print(f"{worker.name:<8} {len(worker.scenarios):>9} {counts['passed']:>7} {counts['failed']:>7} "
              f"{counts[SKIPPED]:>8} {counts[NOT_RUN]:>8} "
              f"{worker.exit_code if worker.exit_code is not None else '-':>5} {worker.seconds:>8.1f}")
    print(f"{'total':<8} {sum(len(w.scenarios) for w in workers):>9} {totals['passed']:>7} "
          f"{totals['failed']:>7} {totals[SKIPPED]:>8} {totals[NOT_RUN]:>8}")
    print_skipped(workers)
    print_not_passed(workers)
    return totals


def print_skipped(workers: list[Worker]) -> None:
    skipped = [(w, loc, o) for w in workers for loc, o in w.outcomes.items() if o["status"] == SKIPPED]
    if skipped:
        print("\nSkipped at run time (not counted as failures):")
        for worker, location, outcome in skipped:
            print(f"  {location}  {outcome['name']}  [{worker.name}]")


def print_not_passed(workers: list[Worker]) -> None:
    """Each scenario that failed or did not run, with the start of its error; a worker that failed on its own."""
    bad = [(w, loc, o) for w in workers for loc, o in w.outcomes.items() if kind_of(o["status"]) in ("failed", NOT_RUN)]
    if bad:
        print("\nNot passed:")
        for worker, location, outcome in bad:
            print(f"  {location}  {outcome['name']}  [{outcome['status']}, {worker.name}]")
            if outcome.get("error"):
                lines = str(outcome["error"]).strip().splitlines()
                print("      " + "\n      ".join(lines[:6]) + ("\n      ..." if len(lines) > 6 else ""))
    broken = [w for w in workers if w.exit_code not in (0, None) and all(
        kind_of(o["status"]) in (PASSED, SKIPPED) for o in w.outcomes.values())]
    for worker in broken:
        print(f"\n{worker.name} exited with {worker.exit_code} although its scenarios passed; its log ends:")
        print("  " + "\n  ".join(tail(worker.log_file(), 12)))


def tail(path: Path, lines: int) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def write_outcomes(run_facts: dict, wall: float, phases: dict[str, float], workers: list[Worker]) -> None:
    """reports/parallel/outcomes.json: the run's facts, its phases, each worker and each scenario's outcome."""
    outcomes = {loc: o for w in workers for loc, o in w.outcomes.items()}
    (PARALLEL_DIR / "outcomes.json").write_text(json.dumps(
        {**run_facts, "wall_seconds": round(wall, 3),
         "phases": {k: round(v, 3) for k, v in phases.items()},
         "workers": {w.name: {"exit": w.exit_code, "seconds": round(w.seconds, 3),
                              "scenarios": len(w.scenarios)} for w in workers},
         "scenarios": outcomes}, indent=1) + "\n")


def check_results(folders: list[Path], scenarios_of) -> int:
    """Each selected scenario exactly once in the merged Allure results of the given folders. `scenarios_of()`
    collects the selection (only once the folders are known to exist)."""
    missing_dirs = [str(d) for d in folders if not d.is_dir()]
    if missing_dirs:
        raise RunError(f"--check-results: no such folder: {', '.join(missing_dirs)}")
    scenarios: list[Scenario] = scenarios_of()
    results = load_allure_results(folders)
    names = Counter(" ".join(r.get("fullName", "").split()) for r in results)
    statuses = Counter(r.get("status") for r in results)
    print(f"check-results: {len(scenarios)} scenarios selected, {len(results)} Allure results in "
          f"{', '.join(map(str, folders))} ({', '.join(f'{v} {k}' for k, v in sorted(statuses.items()))})")
    problems = count_problems(scenarios, names) + repeated_history(results)
    if problems:
        print("check-results: NOT each scenario exactly once:\n" + "\n".join(problems))
        if any("found 0" in p for p in problems):
            print("check-results: (a scenario that a step skipped at run time leaves no Allure result when "
                  "behave.ini says show_skipped = false; the runs' summaries list such scenarios)")
        return 1
    print(f"check-results: each of the {len(scenarios)} scenarios appears exactly once")
    return 0


def count_problems(scenarios: list[Scenario], names: Counter) -> list[str]:
    """A line per Allure name whose count of results differs from the count of scenarios that carry it."""
    expected: Counter = Counter()
    for s in scenarios:
        match = next((n for n in sorted(s.allure_names()) if n in names), sorted(s.allure_names())[0])
        expected[match] += 1
    return [f"  {name}: expected {expected[name]} result(s), found {names[name]}"
            for name in sorted(set(expected) | set(names)) if expected[name] != names[name]]


def repeated_history(results: list[dict]) -> list[str]:
    """A line per historyId (one scenario) that more than one result carries."""
    history = Counter(r.get("historyId") for r in results if r.get("historyId"))
    problems = []
    for history_id, count in sorted(history.items()):
        if count > 1:
            name = next(r.get("fullName") for r in results if r.get("historyId") == history_id)
            problems.append(f"  {name} (historyId {history_id}): {count} results for one scenario")
    return problems
