"""End-to-end check of the report tooling.

A throwaway behave project (its own features/, steps/, environment.py in a temp dir) is
run with support.client.reporting:AllureFormatter; the Allure results are checked
(one result per scenario, also under a Rule and per outline row; capability labels;
the evidence attached to the failing step); then scripts/report builds the HTML report,
scripts/serve-report serves it on 127.0.0.1 and headless Chromium renders the failing
test's page (deep link ``index.html#<test result id>``) and writes
artifacts/report-screenshot.png. The single-file copy scripts/report writes beside it
(allure-report-single/index.html) is opened from file://, as a reviewer opens a downloaded
CI artifact, and must show the failed step and its evidence (reports/report-single-file.png).

Skips: the report part when node/npm are missing, the browser part when
/usr/bin/chromium is missing.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv" / "bin" / "python"
MARKER = "evidence-marker-123"

FEATURE_NAME = "Invoices follow the money"
RULE_NAME = "Spending stops at the budget"
FAILING = "A failed charge leaves evidence"
EXPECTED_NAMES = {
    "A paying org gets an invoice": None,
    FAILING: None,
    "An org over budget is refused": RULE_NAME,
    "Spending 1.00 is allowed -- @1.1": RULE_NAME,
    "Spending 9.00 is refused -- @1.2": RULE_NAME,
}

FEATURE = f"""\
Feature: {FEATURE_NAME}
  Every charge an org makes shows up on its invoice.

  Scenario: A paying org gets an invoice
    Given an org "acme"
    Then the org is billed

  Scenario: {FAILING}
    Given an org "acme"
    Then the charge is rejected with evidence

  Rule: {RULE_NAME}

    Scenario: An org over budget is refused
      Given an org "zeta"
      And these charges:
        | model | amount |
        | small | 1.50   |
        | large | 0.75   |
      Then the org is billed

    Scenario Outline: Spending <amount> is <outcome>
      Given an org "<org>"
      Then the org is billed

      Examples:
        | org  | amount | outcome |
        | acme | 1.00   | allowed |
        | beta | 9.00   | refused |
"""

STEPS = f"""\
import allure
from behave import given, then


@given('an org "{{name}}"')
def step_org(context, name):
    context.org = name


@given("these charges:")
def step_charges(context):
    context.charges = [row["amount"] for row in context.table]


@then("the org is billed")
def step_billed(context):
    assert context.org


@then("the charge is rejected with evidence")
def step_rejected(context):
    allure.attach("{MARKER}: POST /v1/charges -> 500", name="evidence",
                  attachment_type=allure.attachment_type.TEXT)
    assert False, "expected status 200, got 500"
"""

ENVIRONMENT = """\
import allure


def before_scenario(context, scenario):
    allure.attach("namespace for " + scenario.name, name="namespace",
                  attachment_type=allure.attachment_type.TEXT)
"""

BEHAVE_INI = """\
[behave]
paths = features
scenario_outline_annotation_schema = {name} -- @{row.id}
"""


# ---------------------------------------------------------------------------
# behave run -> allure results
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def behave_run(tmp_path_factory):
    project = tmp_path_factory.mktemp("behave-project")
    (project / "features" / "billing").mkdir(parents=True)
    (project / "features" / "billing" / "billing.invoices.feature").write_text(FEATURE)
    (project / "steps").mkdir()
    (project / "steps" / "billing_steps.py").write_text(STEPS)
    (project / "environment.py").write_text(ENVIRONMENT)
    (project / "behave.ini").write_text(BEHAVE_INI)
    results = project / "allure-results"

    python = str(PYTHON if PYTHON.exists() else Path(sys.executable))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [python, "-m", "behave", "-f", "support.client.reporting:AllureFormatter",
         "-o", str(results), "-f", "progress"],
        cwd=project, env=env, capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, f"behave should fail exactly one scenario:\n{output}"
    assert "1 failed" in output and "HOOK-ERROR" not in output and "Traceback" not in output, output

    by_name = {}
    for path in results.glob("*-result.json"):
        result = json.loads(path.read_text())
        by_name.setdefault(result["name"], []).append(result)
    return {"project": project, "results": results, "by_name": by_name, "output": output}


def labels(result, name):
    return [label["value"] for label in result["labels"] if label["name"] == name]


def test_every_scenario_rule_and_outline_row_has_one_result(behave_run):
    by_name = behave_run["by_name"]
    assert sorted(by_name) == sorted(EXPECTED_NAMES), by_name.keys()
    for name, results in by_name.items():
        assert len(results) == 1, f"{name!r} has {len(results)} results"
        assert name == name.strip(), f"name has stray blanks: {name!r}"
    statuses = {name: results[0]["status"] for name, results in by_name.items()}
    assert statuses == {name: "failed" if name == FAILING else "passed" for name in EXPECTED_NAMES}


def test_labels_read_as_capability_feature_rule(behave_run):
    for name, rule in EXPECTED_NAMES.items():
        result = behave_run["by_name"][name][0]
        assert labels(result, "epic") == ["Billing"], (name, result["labels"])
        assert labels(result, "feature") == [FEATURE_NAME], (name, result["labels"])
        assert labels(result, "story") == ([rule] if rule else []), (name, result["labels"])
        assert labels(result, "parentSuite") == ["Billing"], (name, result["labels"])
        assert labels(result, "suite") == [FEATURE_NAME], (name, result["labels"])
        assert result["titlePath"] == ["Billing", FEATURE_NAME] + ([rule] if rule else [])


def test_outline_rows_carry_their_parameters(behave_run):
    row = behave_run["by_name"]["Spending 9.00 is refused -- @1.2"][0]
    params = {p["name"]: p["value"] for p in row["parameters"]}
    assert params == {"org": "beta", "amount": "9.00", "outcome": "refused"}


def test_step_tables_under_a_rule_are_attached(behave_run):
    result = behave_run["by_name"]["An org over budget is refused"][0]
    [step] = [s for s in result["steps"] if s["name"] == "And these charges:"]
    [table] = [a for a in step.get("attachments", []) if a["name"] == ".table"]
    assert "small,1.50" in (behave_run["results"] / table["source"]).read_text()


def test_evidence_is_attached_to_the_failing_step(behave_run):
    failing = behave_run["by_name"][FAILING][0]
    step = failing["steps"][-1]
    assert step["name"] == "Then the charge is rejected with evidence"
    assert step["status"] == "failed"
    assert "expected status 200, got 500" in step["statusDetails"]["message"]
    attached = [a for a in step.get("attachments", []) if a["name"] == "evidence"]
    assert len(attached) == 1, step
    body = (behave_run["results"] / attached[0]["source"]).read_text()
    assert MARKER in body
    assert "evidence" not in [a["name"] for a in failing.get("attachments", [])]


def test_hook_attachments_land_on_rule_scenarios_too(behave_run):
    for name in EXPECTED_NAMES:
        result = behave_run["by_name"][name][0]
        assert [a["name"] for a in result.get("attachments", [])] == ["namespace"], name


# ---------------------------------------------------------------------------
# scripts/report -> HTML report
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def report(behave_run):
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node/npm not installed: scripts/report needs Node.js 20+ (apt-get install nodejs npm)")
    out = behave_run["project"] / "allure-report"
    started = time.monotonic()
    proc = subprocess.run([str(ROOT / "scripts" / "report"), str(behave_run["results"]), str(out)],
                          cwd=behave_run["project"], capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"scripts/report took {elapsed:.2f} s")
    return {"out": out, "stdout": proc.stdout, "stderr": proc.stderr, "seconds": elapsed}


def test_report_is_generated_quietly(report):
    assert (report["out"] / "index.html").is_file()
    assert "index.html" in report["stdout"]
    assert "serve-report" in report["stdout"]
    assert report["stderr"] == ""
    assert len(report["stdout"].splitlines()) <= 3, report["stdout"]  # where it is, how to open it, the single file


def test_report_has_every_test_and_no_analytics(report):
    by_id = json.loads((report["out"] / "test-results.json").read_text())["byId"]
    assert sorted(tr["name"] for tr in by_id.values()) == sorted(EXPECTED_NAMES)
    for page in report["out"].rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        assert "gtag" not in html and "dataLayer" not in html, f"analytics left in {page}"


def test_run_metadata_is_written_when_missing(behave_run, report):
    executor = json.loads((behave_run["results"] / "executor.json").read_text())
    assert executor["name"] == "behave"
    props = (behave_run["results"] / "environment.properties").read_text()
    assert "behave=" in props


# ---------------------------------------------------------------------------
# browser: the report renders, deep link to the failing test
# ---------------------------------------------------------------------------
def failing_test_id(report):
    by_id = json.loads((report["out"] / "test-results.json").read_text())["byId"]
    [test_id] = [tid for tid, tr in by_id.items() if tr["name"] == FAILING]
    return test_id


def test_evidence_is_served_with_the_report(report, served_report):
    detail = json.loads((report["out"] / "data" / "test-results"
                         / f"{failing_test_id(report)}.json").read_text())
    [step] = [s for s in detail["steps"]
              if s.get("type") == "step" and s["name"] == "Then the charge is rejected with evidence"]
    sources = [child["link"] for child in step.get("steps", [])
               if child.get("type") == "attachment" and child["link"]["name"] == "evidence"]
    assert sources, json.dumps(step, indent=1)[:2000]
    link = sources[0]
    url = f"{served_report}data/attachments/{link['id']}{link.get('ext', '')}"
    with urllib.request.urlopen(url, timeout=10) as resp:  # 127.0.0.1 only
        assert MARKER in resp.read().decode()


def test_report_renders_failing_test_in_chromium(report, served_report, headless_chromium):
    page = f"{served_report}index.html#{failing_test_id(report)}"
    shows_the_failing_test(headless_chromium, page, ROOT / "artifacts" / "report-screenshot.png")


def shows_the_failing_test(headless_chromium, page: str, shot: Path, *flags: str) -> None:
    """Chromium renders the failing test's page with its failed step, message and evidence; a screenshot of it
    is written to `shot`."""
    dom = headless_chromium(*flags, "--dump-dom", page)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert FAILING in html, f"failing test's name not rendered from {page}; DOM starts:\n{html[:1500]}"
    assert "expected status 200, got 500" in html
    assert "Then the charge is rejected with evidence" in html
    assert "evidence" in html

    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)
    run = headless_chromium(*flags, f"--screenshot={shot}", page)
    assert run.returncode == 0, run.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000, f"screenshot looks blank ({len(data)} bytes)"


# ---------------------------------------------------------------------------
# the single-file report, opened from disk as a reviewer opens a downloaded CI artifact
# ---------------------------------------------------------------------------
def test_the_single_file_report_sits_beside_the_served_one(report):
    single = report["out"].parent / "allure-report-single" / "index.html"
    assert single.is_file(), report["stdout"]
    assert f"{single.parent.name}/index.html" in report["stdout"]
    assert not (single.parent / "data").exists(), "a single-file report keeps everything in index.html"
    assert any(MARKER.encode() in body for body in embedded_strings(single)), \
        "the failed step's evidence attachment is not inside index.html"


def embedded_strings(page: Path):
    """Every base64 string of the page, decoded (Allure embeds each attachment of a single-file report so)."""
    for text in re.findall(r'"([A-Za-z0-9+/]{20,}={0,2})"', page.read_text(encoding="utf-8")):
        try:
            yield base64.b64decode(text, validate=True)
        except binascii.Error:
            continue


def test_the_single_file_report_shows_the_failed_steps_evidence_from_file_url(report, headless_chromium):
    single = report["out"].parent / "allure-report-single" / "index.html"
    shows_the_failing_test(headless_chromium, f"{single.as_uri()}#{failing_test_id(report)}",
                           ROOT / "reports" / "report-single-file.png",  # kept by CI as an artifact
                           "--allow-file-access-from-files")
