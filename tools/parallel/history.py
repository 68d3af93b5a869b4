"""Durations of earlier runs: reports/timings.json (kept by every run), the last run's Allure results, and the
committed baseline (tools/parallel/baseline.json, refreshed with scripts/run-parallel --refresh-baseline), so a
fresh clone's first run is balanced too."""
from __future__ import annotations

import configparser
import glob
import json
import statistics
from collections import defaultdict
from pathlib import Path

from tools.parallel.model import PASSED, ROOT, SKIPPED, TIMINGS_FILE, Scenario, Worker, timings_file

UNKNOWN_SERIAL_SECONDS = 5.0
BASELINE_FILE = ROOT / "tools" / "parallel" / "baseline.json"


def allure_folder() -> Path:
    """The folder behave.ini sends the Allure formatter's output to."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "behave.ini")
    if parser.has_section("behave"):
        formats = parser.get("behave", "format", fallback="").split()
        outfiles = parser.get("behave", "outfiles", fallback="").split()
        aliases = dict(parser.items("behave.formatters")) if parser.has_section("behave.formatters") else {}
        for index, name in enumerate(formats):
            target = aliases.get(name, name)
            if "allure" in target.lower() and index < len(outfiles):
                return (ROOT / outfiles[index]).resolve()
    return ROOT / "allure-results"


def load_allure_results(folders: list[Path]) -> list[dict]:
    results = []
    for folder in folders:
        for path in sorted(glob.glob(str(folder / "*-result.json"))):
            try:
                with open(path, encoding="utf-8") as handle:
                    results.append(json.load(handle))
            except (OSError, ValueError):
                continue
    return results


def read_timings(path: Path) -> dict[str, float]:
    """{timing key: seconds} from a timings file; OSError, ValueError or AttributeError when it cannot be read."""
    return {k: float(v) for k, v in json.loads(Path(path).read_text()).items()}


def _timings_or_none(path: Path) -> dict[str, float]:
    try:
        return read_timings(path) if path.exists() else {}
    except (OSError, ValueError, AttributeError):
        return {}


def previous_durations(results_dir: Path, jobs: int) -> tuple[dict[str, float], dict[str, list[float]]]:
    """(timing key -> seconds) from the last runs at this -j (reports/timings-j<N>.json), over the last run's at
    any -j (reports/timings.json), over the committed baseline's; (Allure fullName -> seconds) from the last run."""
    by_key = {**_timings_or_none(BASELINE_FILE), **_timings_or_none(TIMINGS_FILE),
              **_timings_or_none(timings_file(jobs))}
    by_name: dict[str, list[float]] = defaultdict(list)
    for result in load_allure_results([results_dir]):
        if result.get("fullName") and result.get("start") and result.get("stop"):
            by_name[" ".join(result["fullName"].split())].append((result["stop"] - result["start"]) / 1000)
    return by_key, by_name


def estimate(scenarios: list[Scenario], by_key: dict[str, float], by_name: dict[str, list[float]],
             serial_tag: str | None = None) -> int:
    """Sets each scenario's estimate; returns how many came from history. Without history a scenario weighs
    the median of the known ones, an @serial one at least UNKNOWN_SERIAL_SECONDS (they restart processes, wait
    out timeouts, run loads: counting them short would pile ordinary scenarios onto the private worker)."""
    known = 0
    for s in scenarios:
        seconds = by_key.get(s.timing_key)
        if seconds is None:
            seen = [d for n in s.allure_names() for d in by_name.get(n, [])]
            seconds = sum(seen) / len(seen) if seen else None
        if seconds is not None:
            s.estimate, known = max(seconds, 0.01), known + 1
        else:
            s.estimate = -1.0
    measured = [s.estimate for s in scenarios if s.estimate > 0]
    default = statistics.median(measured) if measured else 1.0
    for s in scenarios:
        if s.estimate < 0:
            s.estimate = max(default, UNKNOWN_SERIAL_SECONDS) if serial_tag in s.tags else default
    return known


def passed_durations(workers: list[Worker], skipped_too: bool = False) -> dict[str, float]:
    """(timing key -> seconds) of the scenarios that passed in this run; with `skipped_too`, also of those a step
    or hook skipped (a stack without a capability): they take no time there, and without a figure an @serial one
    would be counted as UNKNOWN_SERIAL_SECONDS."""
    kept = (PASSED, SKIPPED) if skipped_too else (PASSED,)
    return {s.timing_key: max(round(worker.outcomes[s.location].get("seconds") or 0, 3), 0.001)
            for worker in workers for s in worker.scenarios
            if worker.outcomes.get(s.location, {}).get("status") in kept
            and (worker.outcomes[s.location].get("seconds") or worker.outcomes[s.location]["status"] == SKIPPED)}


def save_timings(workers: list[Worker], jobs: int) -> None:
    """The passed scenarios' durations into reports/timings.json and reports/timings-j<N>.json, on top of what
    earlier runs left there."""
    for path in (TIMINGS_FILE, timings_file(jobs)):
        timings = {**_timings_or_none(path), **passed_durations(workers, skipped_too=True)}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dict(sorted(timings.items())), indent=1) + "\n")


def refresh_baseline(workers: list[Worker]) -> int:
    """The committed baseline from this run: every scenario that passed, at the duration it took (the others keep
    their earlier figures; one skipped here and never measured gets its skip's). Returns how many it holds."""
    earlier = _timings_or_none(BASELINE_FILE)
    skipped = {key: seconds for key, seconds in passed_durations(workers, skipped_too=True).items()
               if key not in earlier}
    baseline = {**skipped, **earlier, **passed_durations(workers)}
    BASELINE_FILE.write_text(json.dumps(dict(sorted(baseline.items())), indent=1) + "\n")
    return len(baseline)
