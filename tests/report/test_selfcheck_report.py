"""The HTML report of the self-check's run shows a failed step's evidence, in a real browser, with no secret.

tests/selfcheck/harness.py runs the deliberately failing feature set once per session; scripts/report builds
the report from its Allure results, scripts/serve-report serves it on 127.0.0.1, and headless Chromium renders
the page of a failed test. The screenshot stays in artifacts/selfcheck-report-failed-step.png (not committed).

Skips: everything when node/npm are missing (no report), the browser part when /usr/bin/chromium is missing.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOT = ROOT / "artifacts" / "selfcheck-report-failed-step.png"
TEST_NAME = "A refusal expected to be allowed"
FAILED_STEP = "Then Vic's attempt is allowed"
DOSSIER = ("Failure: summary", "Failure: last exchanges", "Failure: stack state",
           "Failure: gateway log lines for these requests", "Failure: audit events for these requests")


def _harness():
    if "selfcheck_harness" not in sys.modules:
        spec = importlib.util.spec_from_file_location("selfcheck_harness",
                                                      ROOT / "tests" / "selfcheck" / "harness.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["selfcheck_harness"] = module
        spec.loader.exec_module(module)
    return sys.modules["selfcheck_harness"]


@pytest.fixture(scope="module")
def run():
    return _harness().run_selfcheck()


@pytest.fixture(scope="module")
def report(run, tmp_path_factory):
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node/npm not installed: scripts/report needs Node.js 20+")
    out = tmp_path_factory.mktemp("selfcheck-report") / "allure-report"
    proc = subprocess.run([str(ROOT / "scripts" / "report"), str(run.results), str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    by_id = json.loads((out / "test-results.json").read_text())["byId"]
    [test_id] = [tid for tid, tr in by_id.items() if tr["name"] == TEST_NAME]
    return {"out": out, "test_id": test_id}


def _step(report, name: str) -> dict:
    detail = json.loads((report["out"] / "data" / "test-results" / f"{report['test_id']}.json").read_text())
    [step] = [s for s in detail["steps"] if s.get("type") == "step" and s["name"] == name]
    return step


def _links(step: dict) -> dict:
    return {child["link"]["name"]: child["link"] for child in step.get("steps", [])
            if child.get("type") == "attachment"}


def test_the_failed_steps_evidence_is_in_the_report_and_served(report, served_report):
    links = _links(_step(report, FAILED_STEP))
    assert set(DOSSIER) <= set(links), sorted(links)
    # The refused request was made by the step before (its exchange is attached there, as it happened) and is
    # the newest of the failed step's last exchanges.
    made = [name for name in _links(_step(report, 'When Vic tries to issue an API key in "Acme"'))
            if name.startswith("POST /orgs/") and "→ 403" in name]
    assert made, "the refused request is not attached to the step that made it"
    link = links["Failure: last exchanges"]
    attachment = f"{served_report}data/attachments/{link['id']}{link.get('ext', '')}"
    with urllib.request.urlopen(attachment, timeout=10) as resp:
        last = json.loads(resp.read().decode())
    refused = [e for e in last if (e.get("response") or {}).get("status") == 403]
    assert refused and f"[{refused[-1]['request_id']}]" in made[-1], (made, last)
    assert "forbidden" in refused[-1]["response"]["body"]


def test_no_secret_in_the_generated_report(run, report):
    leaks = []
    for path in report["out"].rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode("utf-8", errors="replace")
            leaks += [f"{path.relative_to(report['out'])}: {kind}" for value, kind in run.secrets.items()
                      if value in text]
    assert not leaks, sorted(set(leaks))


def test_chromium_shows_the_failed_step_with_its_evidence(report, served_report, tmp_path, headless_chromium):
    page = f"{served_report}index.html#{report['test_id']}"
    dom = headless_chromium("--dump-dom", page, window="1400,1700")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    for expected in (TEST_NAME, "Vic's attempt is allowed", "request id", *DOSSIER):
        assert expected in html, f"{expected!r} not rendered; DOM starts:\n{html[:1500]}"
    assert "→ 403" in html, "the refused exchange's attachment is not listed"

    SHOT.parent.mkdir(parents=True, exist_ok=True)
    SHOT.unlink(missing_ok=True)
    shot = headless_chromium(f"--screenshot={SHOT}", page, window="1400,1700")
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = SHOT.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, f"screenshot looks blank ({len(data)} bytes)"
    print(f"\nscreenshot of the failed step's page: {SHOT.relative_to(ROOT)} ({len(data)} bytes)")
