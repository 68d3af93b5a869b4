"""The failure dossier, against stand-in stacks: what it attaches, and that gathering never raises."""
import json
from types import SimpleNamespace

import pytest

from support.client import evidence
from support.client import failure_dossier
from support.client.api import Exchange

KEY = "tg_abcdefghijklmnopqrstuvwxyz012345"


@pytest.fixture
def attached(monkeypatch):
    seen = {}
    monkeypatch.setattr(evidence, "attach_json", lambda name, data: seen.__setitem__(name, data))
    monkeypatch.setattr(evidence, "attach_text", lambda name, text: seen.__setitem__(name, text))
    return seen


def exchange(n: int, status: int = 200) -> Exchange:
    rid = f"r1.abc.{n:03d}"
    return Exchange("POST", "http://gw/orgs/acme/keys", "/orgs/acme/keys", {"Authorization": f"Bearer {KEY}"},
                    {"name": "ci"}, rid, status=status, response_headers={"X-Request-ID": rid}, text='{"detail": "no"}')


class Stack:
    name = "stand-in"

    def __init__(self, lines=None, broken=False):
        self.lines, self.broken = lines or [], broken

    def logs(self, lines=40):
        if self.broken:
            raise OSError("log file gone")
        return {"gateway": self.lines[-lines:]} if self.lines else {}

    def state(self):
        return {"gateway": "running (pid 1)"}


def state(stack, count=7):
    api = SimpleNamespace(exchanges=[exchange(i) for i in range(1, count + 1)], trace_id="t" * 32)
    return SimpleNamespace(api=api, stack=stack, db=None)


def test_the_last_exchanges_and_the_log_lines_of_exactly_their_request_ids(attached):
    lines = [json.dumps({"request_id": "r1.abc.007", "message": "POST /orgs/acme/keys 403"}),
             json.dumps({"request_id": "r1.abc.0070", "message": "another request whose id starts the same"}),
             json.dumps({"request_id": "r1.abc.001", "message": "too old to be among the last five"}),
             "plain text line about r1.abc.006 from a proxy",
             "plain text line about r1.abc.0061"]
    failure_dossier.attach(state(Stack(lines)))
    assert [e["request_id"] for e in attached["Failure: last exchanges"]] == [f"r1.abc.{i:03d}" for i in range(3, 8)]
    shown = attached["Failure: gateway log lines for these requests"].splitlines()
    assert shown == [lines[0], lines[3]]
    assert attached["Failure: stack state"] == {"gateway": "running (pid 1)"}
    assert "the stack named no database" in attached["Failure: audit events for these requests"]
    assert "r1.abc.007" in attached["Failure: summary"]


def test_a_stack_without_logs_says_so(attached):
    failure_dossier.attach(state(Stack()))
    assert "offers no process logs" in attached["Failure: gateway log lines for these requests"]


def test_a_piece_that_cannot_be_gathered_becomes_a_note(attached):
    failure_dossier.attach(state(Stack(broken=True)))
    note = attached["Failure: gateway log lines (unavailable)"]
    assert "OSError: log file gone" in note
    assert "Failure: last exchanges" in attached and "Failure: stack state" in attached


def test_the_exchanges_in_the_dossier_are_masked(attached):
    failure_dossier.attach(state(Stack()))
    assert KEY not in json.dumps(attached["Failure: last exchanges"])
