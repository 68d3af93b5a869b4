"""Tests of the resilience and load helpers: the SQLite outage, the ledger checks, the load run's bounds."""
from __future__ import annotations

import sqlite3
from collections import Counter
from types import SimpleNamespace

import pytest
import requests

from support.database.conservation import AccountLedger
from support.stacks.outages import FaultUnavailable, PostgresGate, SqliteLock, database_outage
from support.stress.faults import CORPUS, Faults, require, send_malformed
from support.stress.load import LoadKey, LoadRefused, percentile, run_chat_load


def test_a_held_sqlite_lock_keeps_writers_out_until_it_ends(tmp_path):
    path = tmp_path / "gateway.db"
    with sqlite3.connect(path) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE t (x INTEGER)")
    outage = database_outage(f"sqlite:///{path}", None, None)
    assert isinstance(outage, SqliteLock)
    outage.begin()
    writer = sqlite3.connect(path, timeout=0.2, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            writer.execute("BEGIN IMMEDIATE")
        outage.end()
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO t VALUES (1)")
        writer.execute("COMMIT")
    finally:
        writer.close()
        outage.end()


def test_only_a_database_the_stack_created_may_be_closed():
    gate = database_outage("postgresql://postgres@127.0.0.1/acceptance_x", "postgresql://postgres@127.0.0.1/postgres",
                           "acceptance_x")
    assert isinstance(gate, PostgresGate) and gate.database == "acceptance_x"
    with pytest.raises(FaultUnavailable):
        database_outage("postgresql://postgres@127.0.0.1/shared", "postgresql://postgres@127.0.0.1/postgres", None)
    with pytest.raises(FaultUnavailable):
        database_outage("sqlite:///:memory:", None, None)


def test_a_stack_without_the_fault_says_which_stack_has_it():
    class External:
        name = "external"

    with pytest.raises(FaultUnavailable, match="embedded stack"):
        require(External(), "kill_gateway")


@pytest.mark.parametrize("pid, restarts", [(None, 1), (4242, 0)])
def test_a_gateway_left_down_by_a_scenario_is_started_again_and_a_running_one_is_left_alone(pid, restarts):
    class Stack:
        started = 0

        def gateway_pid(self):
            return pid

        def restart_gateway(self):
            self.started += 1

    stack = Stack()
    routing = SimpleNamespace(api=None, platform=None, world=None)
    Faults(stack, routing, add_cleanup=lambda *a, **k: None).gateway_up_again_if_down()
    assert stack.started == restarts


def test_the_corpus_has_oversized_bodies_and_builds_for_a_model():
    assert sum(case.oversized for case in CORPUS) == 2
    for case in CORPUS:
        body = case.body("chat-x")
        assert body is not None


def test_every_target_gets_each_case_whole_though_bodies_are_built_once(monkeypatch):
    received = []

    class Answer:
        status_code = 400

        def json(self):
            return {"code": "invalid_body", "detail": "bad"}

    def request(session, method, url, data=None, **_):
        received.append((url, data if isinstance(data, bytes) else b"".join(data)))
        return Answer()

    monkeypatch.setattr(requests.Session, "request", request)
    monkeypatch.setattr(requests, "get", lambda *a, **k: SimpleNamespace(status_code=200))
    targets = {name: ("POST", f"/{name}", {}) for name in ("a", "b")}
    burst = send_malformed("http://gw", targets, "chat-x", workers=2, probe_every=10)
    assert len(burst.outcomes) == len(received) == 2 * len(CORPUS)
    sizes = {(url, len(body)) for url, body in received}
    for case in CORPUS:
        whole = case.body("chat-x")
        size = len(whole) if isinstance(whole, bytes) else sum(map(len, whole))
        assert {("http://gw/a", size), ("http://gw/b", size)} <= sizes, case.name  # a stream is not sent empty


def _ledger(**changes) -> AccountLedger:
    base = dict(account_id="acct", minted=1000, available=860, held=0, spent=140,
                entries_by_kind=Counter({"mint": 1, "reserve": 1, "finalize": 1}),
                reservations=[{"id": "r1", "status": "finalized", "amount": 500, "actual": 140, "voided": 0,
                               "expires_at": None, "request_id": "q1"}],
                entries_by_reservation={"r1": ["reserve", "finalize"]},
                postings={"issuance": -1000, "available": 860, "held": 0, "spent": 140})
    base.update(changes)
    return AccountLedger(**base)


def test_a_sound_ledger_has_no_problems():
    assert _ledger().problems() == []


def test_a_doubled_settlement_and_a_lost_charge_are_problems():
    doubled = _ledger(entries_by_reservation={"r1": ["reserve", "finalize", "finalize"]})
    assert any("settling entries" in p for p in doubled.problems())
    lost = _ledger(spent=0, available=1000, postings={"issuance": -1000, "available": 1000, "held": 0, "spent": 0})
    assert any("reservations' charges add up to" in p for p in lost.problems())


def test_percentile_is_nearest_rank():
    values = sorted(float(v) for v in range(1, 101))
    assert percentile(values, 0.5) == 50 and percentile(values, 0.95) == 95 and percentile(values, 0.99) == 99
    assert percentile([], 0.5) is None


def test_a_load_run_aims_only_at_loopback_and_within_bounds():
    keys = [LoadKey("Acme", "tg_x")]
    with pytest.raises(LoadRefused, match="loopback"):
        run_chat_load("https://gateway.example.test", keys, model="m", prompt_price_per_1k=1,
                      completion_price_per_1k=1, users=1, seconds=1, max_requests=1)
    with pytest.raises(LoadRefused, match="out of bounds"):
        run_chat_load("http://127.0.0.1:9", keys, model="m", prompt_price_per_1k=1, completion_price_per_1k=1,
                      users=1000, seconds=1, max_requests=1)
