"""Tests of tools/prove/: the catalogue still fits the gateway and covers every capability, faults are applied to a
copy and taken out again, behave's reports are judged right, and the corrupting proxy corrupts what it is told to
and nothing else."""
from __future__ import annotations

import json
import subprocess
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import requests

from support.client import evidence
from tools.prove.catalogue import CATALOGUE
from tools.prove.corruptions import CORRUPTIONS, Corruption, json_edit, status_to, without_done, without_header
from tools.prove.faults import CatalogueRot, Fault, check_catalogue
from tools.prove.proxy import CorruptingProxy
from tools.prove.report import summary
from tools.prove.verdicts import BROKEN, KILLED, NOT_RUN, SURVIVED, TIMED_OUT, judge, mark_unproven
from tools.prove.workspace import ROOT, Workspace, head_commit

RUN_ID = "pf01abcd"


def test_every_fault_of_the_catalogue_still_applies_to_the_gateway():
    assert check_catalogue(CATALOGUE, ROOT) == [], "update tools/prove/catalogue.py (scripts/prove --check)"


def test_the_catalogue_names_every_committed_capability_and_has_at_least_forty_faults():
    committed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "features"], capture_output=True, text=True,
                               check=True).stdout.split()
    capabilities = {Path(path).parts[1] for path in committed if path.endswith(".feature")}
    named = {c for fault in CATALOGUE for c in fault.capabilities}
    assert len(CATALOGUE) >= 40
    assert capabilities <= named, f"add a fault to tools/prove/catalogue.py for: {sorted(capabilities - named)}"
    sample = [f for f in CATALOGUE if f.sample]
    assert 8 <= len(sample) <= 20, "the CI sample must stay small (scripts/test runs it on every build)"


def test_a_fault_whose_text_is_gone_or_repeated_fails_loudly(tmp_path):
    (tmp_path / "gateway").mkdir()
    (tmp_path / "gateway" / "x.py").write_text("a = 1\nb = 1\n")
    (tmp_path / "features" / "x").mkdir(parents=True)
    gone = Fault("x.gone", "", "gateway/x.py", "c = 1", "c = 2", ("features/x",))
    twice = Fault("x.twice", "", "gateway/x.py", " = 1", " = 2", ("features/x",))
    fine = Fault("x.fine", "", "gateway/x.py", "a = 1", "a = 2", ("features/x",))
    for rotten in (gone, twice):
        with pytest.raises(CatalogueRot, match=rotten.name):
            rotten.check(tmp_path)
    fine.check(tmp_path)
    assert check_catalogue([fine, fine], tmp_path) == ["fault x.fine is in the catalogue twice"]


def test_a_fault_is_applied_to_a_copy_of_the_last_commit_and_taken_out_again():
    fault = next(f for f in CATALOGUE if f.name == "keys.revoked-key-works")
    workspace = Workspace.create(head_commit())
    try:
        path = workspace.root / fault.file
        original, stamp = path.read_text(), path.stat().st_mtime_ns
        with workspace.applied(fault, 7):
            assert fault.replace in path.read_text() and fault.find not in path.read_text()
            assert path.stat().st_mtime_ns == stamp + 7 * 10 ** 9, "a time of its own, for the bytecode cache"
        assert path.read_text() == original and path.stat().st_mtime_ns == stamp
        assert fault.find in (ROOT / fault.file).read_text(), "the checkout itself is never touched"
    finally:
        workspace.remove()
    assert not workspace.root.exists()


def _report(*scenarios: tuple[str, str, str | None]) -> list[dict]:
    """A behave JSON report: (location, status, the failure message of its last step or None)."""
    elements = []
    for location, status, message in scenarios:
        result = {"status": status, **({"error_message": message.splitlines()} if message else {})}
        elements.append({"type": "scenario", "name": f"scenario at {location}", "location": location,
                         "status": status, "steps": [{"keyword": "Then", "name": "it holds",
                                                      "location": location, "result": result}]})
    return [{"name": "f", "elements": elements}]


def test_reports_are_judged_by_what_failed_and_whether_its_message_names_the_request(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("first line\nlast line\n")
    with_id = _report(("features/a/a.feature:3", "passed", None),
                      ("features/a/a.feature:9", "failed", f"Expected 401, but it answered 200 [request id "
                                                           f"{RUN_ID}.0a1b2c.004]"))
    killed = judge("f", ["features/a"], 1, 2.0, with_id, RUN_ID, log)
    assert (killed.outcome, killed.scenario, killed.carries_request_id, killed.caught_in) == (
        KILLED, "features/a/a.feature:9", True, "a")
    without_id = judge("f", [], 1, 2.0, _report(("features/a/a.feature:9", "failed", "Expected 1, but it was 2")),
                       RUN_ID, log)
    assert without_id.outcome == KILLED and without_id.carries_request_id is False
    assert judge("f", [], 0, 1.0, _report(("features/a/a.feature:3", "passed", None)), RUN_ID, log).outcome == SURVIVED
    assert judge("f", [], 2, 1.0, None, RUN_ID, log).outcome == BROKEN, "the stack did not start"
    assert judge("f", [], 0, 1.0, _report(("features/a/a.feature:3", "skipped", None)), RUN_ID, log).outcome == NOT_RUN
    assert judge("f", [], None, 9.0, None, RUN_ID, log).outcome == TIMED_OUT
    last_of_a_rule = _report(("features/a/a.feature:3", "passed", None))
    del last_of_a_rule[0]["elements"][0]["status"]  # behave 1.3 leaves it out: read from its steps
    assert judge("f", [], 0, 1.0, last_of_a_rule, RUN_ID, log).outcome == SURVIVED


def test_a_kill_whose_scenario_fails_without_the_fault_is_not_counted(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("")
    verdicts = [judge(name, [], 1, 1.0, _report((where, "failed", "boom")), RUN_ID, log)
                for name, where in (("real", "features/a/a.feature:3"), ("flaky", "features/a/a.feature:9"))]
    assert mark_unproven(verdicts, _report(("features/a/a.feature:9", "failed", "boom")), "without the fault") == [
        "flaky"]
    result = summary(verdicts, mode="selection", commit="commit x", seconds=1, catalogue_size=2)
    assert (result["kill_rate"], result["survivors"]) == ("1/2 (50%)", ["flaky"])


def test_the_report_environment_shows_the_last_kill_rate(tmp_path):
    summary_file = tmp_path / "summary.json"
    summary_file.write_text(json.dumps({"kill_rate": "14/15 (93%)", "tried": 15, "mode": "sample",
                                        "commit": "commit abc", "survivors": ["a.b"]}))
    assert evidence.proven_strength(str(summary_file)) == {
        "suite.kill_rate": "14/15 (93%) of 15 faults (sample, commit abc)", "suite.survivors": "a.b"}
    assert evidence.proven_strength(str(tmp_path / "none.json")) == {}


class _Deployment(BaseHTTPRequestHandler):
    """A stand-in deployment: JSON at /thing, an event stream at /stream."""
    ANSWERS = {"/thing": ("application/json", b'{"count": 1}'),
               "/stream": ("text/event-stream", b'data: {"choices": []}\n\ndata: [DONE]\n\n')}

    def do_GET(self):  # noqa: N802 - the stdlib's name
        content_type, body = self.ANSWERS[self.path]
        self.send_response(200)
        for name, value in (("Content-Type", content_type), ("X-Request-ID", "r-1"), ("Content-Length", len(body))):
            self.send_header(name, str(value))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # quiet
        return None


@pytest.fixture(scope="module")
def proxy(serving):
    with serving(_Deployment) as server:
        corrupting = CorruptingProxy(f"http://127.0.0.1:{server.server_address[1]}").start()
        yield corrupting
        corrupting.stop()


def test_the_proxy_passes_answers_through_until_told_to_corrupt_them(proxy):
    proxy.use(None)
    honest = requests.get(f"{proxy.url}/thing", timeout=5)
    assert (honest.status_code, honest.json(), honest.headers["X-Request-ID"]) == (200, {"count": 1}, "r-1")
    proxy.use(Corruption("c", "", (), r"/thing", "GET", 200, lambda e: status_to(503)(e) | without_header(
        "X-Request-ID")(e) | json_edit(lambda body: body.update(count=2) is None)(e)))
    broken = requests.get(f"{proxy.url}/thing", timeout=5)
    assert (broken.status_code, broken.json(), "X-Request-ID" in broken.headers) == (503, {"count": 2}, False)
    assert proxy.corrupted == 1
    assert requests.get(f"{proxy.url}/stream", timeout=5).text.endswith("data: [DONE]\n\n"), "not its path"
    proxy.use(Corruption("s", "", (), r"/stream", "GET", 200, event=without_done))
    assert "[DONE]" not in requests.get(f"{proxy.url}/stream", timeout=5).text


def test_every_corruption_names_features_that_exist():
    for corruption in CORRUPTIONS:
        assert corruption.caught_by and all((ROOT / path).exists() for path in corruption.caught_by), corruption.name
    assert len({c.name for c in CORRUPTIONS}) == len(CORRUPTIONS)
