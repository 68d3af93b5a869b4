"""What a prove run says: one line per fault as it is judged, the kill rate and the survivors at the end, and two
files under reports/prove/: results.json (every verdict) and summary.json (the kill rate and the survivors, which
the acceptance suite's Allure report shows in its environment: support/client/evidence.py)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from tools.prove.verdicts import KILLED, NOT_RUN, SURVIVED, Verdict

WIDTH = 44  # of a fault's name in the lines printed


def verdict_line(number: int, total: int, verdict: Verdict) -> str:
    head = f"[{number:>2}/{total}] {verdict.name:<{WIDTH}} {verdict.outcome.upper():<9} {verdict.seconds:>6.1f} s"
    if verdict.outcome == KILLED:
        rid = "carries the request id" if verdict.carries_request_id else "NO request id in the message"
        first = (verdict.message or "").strip().splitlines()[:1]
        return (f"{head}  by {verdict.step}\n{'':>8}in {verdict.scenario} ({verdict.scenario_name}); {rid}"
                + (f"\n{'':>8}{first[0][:150]}" if first else ""))
    if verdict.outcome == SURVIVED:
        return f"{head}  nothing in {', '.join(verdict.targets)} failed"
    detail = (verdict.detail or "").strip().splitlines()
    return f"{head}  {detail[-1][:200] if detail else ''}" + (f" (log: {verdict.log})" if verdict.outcome != NOT_RUN
                                                                else "")


def kill_rate(verdicts: list[Verdict]) -> tuple[int, int]:
    """(killed, tried): a fault whose scenarios could not run on this stack is not counted either way."""
    return sum(v.outcome == KILLED for v in verdicts), sum(v.outcome != NOT_RUN for v in verdicts)


def percent(killed: int, total: int) -> str:
    return f"{100 * killed / total:.0f}%" if total else "n/a"


def summary(verdicts: list[Verdict], *, mode: str, commit: str, seconds: float, catalogue_size: int) -> dict:
    killed, total = kill_rate(verdicts)
    missing_id = [v.name for v in verdicts if v.outcome == KILLED and not v.carries_request_id]
    return {"mode": mode, "commit": commit, "catalogue": catalogue_size, "tried": total, "killed": killed,
            "kill_rate": f"{killed}/{total} ({percent(killed, total)})",
            "survivors": [v.name for v in verdicts if v.outcome not in (KILLED, NOT_RUN)],
            "not_run": [v.name for v in verdicts if v.outcome == NOT_RUN],
            "outcomes": {v.name: v.outcome for v in verdicts},
            "kills_without_request_id": missing_id, "seconds": round(seconds, 1),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def closing_lines(result: dict) -> list[str]:
    unit = "corruptions" if result["mode"] == "proxy" else "faults"
    lines = [f"kill rate: {result['kill_rate']} of {result['tried']} {unit} tried ({result['mode']}, catalogue of "
             f"{result['catalogue']}, {result['commit']}), in {result['seconds']:.0f} s"]
    if result["survivors"]:
        lines.append("survivors: " + ", ".join(f"{name} ({result['outcomes'][name]})" for name in result["survivors"]))
    if result["not_run"]:
        lines.append("not run (this stack lacks what their scenarios need): " + ", ".join(result["not_run"]))
    if result["kills_without_request_id"]:
        lines.append("caught, but the failure message carries no request id: "
                     + ", ".join(result["kills_without_request_id"]))
    return lines


def write(folder: Path, verdicts: list[Verdict], result: dict, control: Verdict | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(
        {"summary": result, "verdicts": [v.as_json() for v in verdicts],
         "control": control.as_json() if control else None}, indent=1) + "\n")
    (folder / "summary.json").write_text(json.dumps(result, indent=1) + "\n")
