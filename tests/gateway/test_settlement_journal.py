"""The settlement journal (gateway/services/settlements.py): the file, exactly-once application against a real
database (SQLite, and PostgreSQL when a server answers), late charges, the worker's retries and dead letters."""
from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select, update

from gateway import context
from gateway.audit import Actor
from gateway.errors import ApiError
from gateway.models import AuditEvent, IdempotencyRecord, LedgerEntry, Reservation, SettlementDeadLetter, utcnow
from gateway.services import idempotency, settlements
from gateway.services.settlements import JournalInUse, SettlementFailed, SettlementJournal, Settlements
from tests.gateway.test_ledger import USD, balances, db, funded, mine, reconcile, reserve  # noqa: F401 (db: fixture)

ACTOR = Actor("api_key", "key_test")


def owed(reservation_id: str, actual: int, **extra) -> dict:
    token = context.set_current(context.Correlation(f"req-{reservation_id}", "ab" * 16))
    try:
        return settlements.new_entry(reservation_id, actual, actor=ACTOR, target="model:m", org=None,
                                     outcome="allowed", reason=None, details={"charged_micros": actual}, **extra)
    finally:
        context.reset_current(token)


def kinds(db, reservation_id: str) -> list[str]:
    with db.sessions() as s:
        return sorted(s.scalars(select(LedgerEntry.kind).where(LedgerEntry.reservation_id == reservation_id)))


def events(db, request_id: str) -> list[AuditEvent]:
    with db.sessions() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.request_id == request_id)))


# ---- the file -------------------------------------------------------------------------------------------------------

def test_an_entry_owed_and_not_done_is_found_again_after_a_crash(tmp_path):
    journal = SettlementJournal(tmp_path)
    assert journal.open() == []
    first, second = owed("res_a", 5), owed("res_b", 7)
    asyncio.run(journal.owe(first))
    asyncio.run(journal.owe(second))
    journal.done(first["id"])
    journal.close()  # the process dies: nothing more is written
    again = SettlementJournal(tmp_path)
    assert [e["id"] for e in again.open()] == [second["id"]]
    again.done(second["id"])
    again.close()
    assert SettlementJournal(tmp_path).open() == []


def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path):
    journal = SettlementJournal(tmp_path)
    journal.open()
    kept = owed("res_a", 5)
    asyncio.run(journal.owe(kept))
    journal.close()
    segment = sorted(tmp_path.glob("segment-*.jsonl"))[-1]
    with open(segment, "a") as handle:
        handle.write('{"op": "owe", "id": "se_cut", "entry": {"reserv')
    assert [e["id"] for e in SettlementJournal(tmp_path).open()] == [kept["id"]]


def test_a_second_process_cannot_take_the_same_journal(tmp_path):
    journal = SettlementJournal(tmp_path)
    journal.open()
    with pytest.raises(JournalInUse, match="in use by another gateway process"):
        SettlementJournal(tmp_path).open()
    journal.close()


def test_settled_segments_are_removed_once_the_journal_moves_on(tmp_path):
    journal = SettlementJournal(tmp_path)
    journal.SEGMENT_BYTES = 2000
    journal.open()
    entries = [owed(f"res_{i}", i) for i in range(20)]

    async def write_all():
        for entry in entries:
            await journal.owe(entry)
            journal.done(entry["id"])
    asyncio.run(write_all())
    assert len(list(tmp_path.glob("segment-*.jsonl"))) == 1
    journal.close()


def test_requests_owing_at_once_share_the_disk_writes(tmp_path, monkeypatch):
    syncs = []
    monkeypatch.setattr(settlements.os, "fdatasync", lambda fd: syncs.append(fd))
    journal = SettlementJournal(tmp_path)
    journal.open()

    async def together():
        await asyncio.gather(*(journal.owe(owed(f"res_{i}", i)) for i in range(50)))
    asyncio.run(together())
    assert 1 <= len(syncs) < 50
    lines = [json.loads(line) for segment in tmp_path.glob("segment-*.jsonl") for line in segment.open()]
    assert len(lines) == 50
    journal.close()


# ---- applying an entry, exactly once --------------------------------------------------------------------------------

def test_an_entry_applies_once_however_often_it_is_applied(db):
    account = funded(db, 10 * USD)
    res = reserve(db, account, 3 * USD)
    entry = owed(res, 1 * USD)
    assert settlements.apply(db, entry) == "finalized"
    assert settlements.apply(db, entry) == "already_applied"
    assert balances(db, account) == (10 * USD, 9 * USD, 0, 1 * USD)
    assert kinds(db, res) == ["finalize", "reserve"]
    assert [(e.action, e.actor_id) for e in events(db, entry["request_id"])] == [("chat.completion", "key_test")]


def test_an_entry_whose_hold_expired_is_charged_late_and_once(db):
    account = funded(db, 10 * USD)
    res = reserve(db, account, 3 * USD)
    with db.transaction() as s:  # its time to live passes before the settlement is written
        s.execute(update(Reservation).where(Reservation.id == res).values(expires_at=utcnow() - timedelta(seconds=1)))
    entry = owed(res, 2 * USD)
    assert settlements.apply(db, entry) == "late_charge"
    assert settlements.apply(db, entry) == "already_applied"
    assert balances(db, account) == (10 * USD, 8 * USD, 0, 2 * USD)
    assert kinds(db, res) == ["expire", "late_charge", "reserve"]
    with db.sessions() as s:
        reservation = s.get(Reservation, res)
        assert (reservation.status, reservation.actual_micros) == ("expired", 2 * USD)
    (event,) = [e for e in events(db, entry["request_id"]) if e.action == "chat.completion"]
    assert event.details["late_charge"] is True and "charged late" in event.reason
    assert not mine(reconcile(db), account)


def test_entries_applied_at_once_for_one_reservation_charge_it_once(db):
    account = funded(db, 10 * USD)
    res = reserve(db, account, 3 * USD)
    with db.transaction() as s:
        s.execute(update(Reservation).where(Reservation.id == res).values(expires_at=utcnow() - timedelta(seconds=1)))
    entry = owed(res, 1 * USD)

    def attempt(_):
        try:
            return settlements.apply(db, entry)
        except SettlementFailed as exc:  # a serialization failure: the other one applied it
            return f"refused: {exc}"
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(attempt, range(4)))
    assert outcomes.count("late_charge") == 1, outcomes
    assert balances(db, account)[3] == 1 * USD


def test_the_idempotency_key_answer_commits_with_the_charge(db):
    account = funded(db, 10 * USD)
    res = reserve(db, account, 3 * USD)
    assert idempotency.claim(db, "chat:test", "k1", "hash") is None
    entry = owed(res, 1 * USD, idempotency_record={"scope": "chat:test", "key": "k1", "status": 200,
                                                   "stored": {"raw": "{}", "backend": "primary"}})
    settlements.apply(db, entry)
    with db.sessions() as s:
        record = s.get(IdempotencyRecord, ("chat:test", "k1"))
        assert (record.state, record.response_status) == ("done", 200)


def test_an_entry_the_database_refuses_spends_a_try(db):
    with pytest.raises(SettlementFailed, match="does not exist"):
        settlements.apply(db, owed("res_missing", 1))


# ---- the worker and dead letters ------------------------------------------------------------------------------------

def _runtime(db, tmp_path, **overrides):
    threads = ThreadPoolExecutor(max_workers=2)

    async def in_db_thread(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(threads, fn, *args)
    settings = SimpleNamespace(settlement_retry_seconds=0.01, settlement_retry_max_seconds=0.05,
                               settlement_max_tries=3, **overrides)
    return SimpleNamespace(db=db, settings=settings, in_db_thread=in_db_thread), SettlementJournal(tmp_path)


async def _until(condition, seconds: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "the worker did not get there in time"
        await asyncio.sleep(0.01)


def _hand_over_and_drain(worker: Settlements, entry: dict, why: str) -> None:
    """The chat path journals the entry and cannot write it; the worker runs until nothing waits."""
    async def scenario():
        await worker.start()
        await worker.owe(entry)
        worker.hand_over(entry, why)
        await _until(lambda: not worker.waiting)
        await worker.stop()
    asyncio.run(scenario())


def test_a_settlement_refused_again_and_again_becomes_a_dead_letter_and_replays_once(db, tmp_path, monkeypatch):
    account = funded(db, 10 * USD)
    res = reserve(db, account, 3 * USD)
    entry = owed(res, 2 * USD)
    rt, journal = _runtime(db, tmp_path)
    real_apply = settlements.apply

    def refusing_apply(database, item):
        raise SettlementFailed("IntegrityError: the account refuses every change")

    monkeypatch.setattr(settlements, "apply", refusing_apply)
    _hand_over_and_drain(Settlements(rt, journal), entry, "IntegrityError")
    monkeypatch.setattr(settlements, "apply", real_apply)
    with db.sessions() as s:
        letter = s.get(SettlementDeadLetter, f"dl_{entry['id']}")
        assert (letter.state, letter.tries, letter.amount_micros) == ("dead", 3, 2 * USD)
    assert SettlementJournal(tmp_path).open() == []  # set aside: no longer the journal's
    letter, outcome = settlements.replay(db, f"dl_{entry['id']}", Actor("admin", "ops"))
    assert (letter.state, outcome) == ("replayed", "finalized")
    with pytest.raises(ApiError) as again:
        settlements.replay(db, f"dl_{entry['id']}", Actor("admin", "ops"))
    assert (again.value.status, again.value.code) == (409, "dead_letter_replayed")
    assert balances(db, account) == (10 * USD, 8 * USD, 0, 2 * USD)


def test_the_worker_applies_what_a_killed_process_journaled(db, tmp_path):
    account = funded(db, 10 * USD)
    res = reserve(db, account, 3 * USD)
    entry = owed(res, 1 * USD)
    before = SettlementJournal(tmp_path)
    before.open()
    asyncio.run(before.owe(entry))
    before.close()  # killed between the journal and the commit
    rt, journal = _runtime(db, tmp_path)
    worker = Settlements(rt, journal)

    async def restart():
        await worker.start()
        await _until(lambda: not worker.waiting)
        await worker.stop()
    asyncio.run(restart())
    assert balances(db, account) == (10 * USD, 9 * USD, 0, 1 * USD)
    assert SettlementJournal(tmp_path).open() == []


def test_an_outage_is_retried_without_spending_tries(db, tmp_path, monkeypatch):
    account = funded(db, 10 * USD)
    res = reserve(db, account, 3 * USD)
    entry = owed(res, 1 * USD)
    rt, journal = _runtime(db, tmp_path)
    outage = {"tries": 0}
    real_apply = settlements.apply

    def unavailable_at_first(database, item):
        if outage["tries"] < 5:
            outage["tries"] += 1
            raise settlements.DATABASE_UNAVAILABLE[0]("SELECT 1", None, Exception("connection refused"))
        return real_apply(database, item)

    monkeypatch.setattr(settlements, "apply", unavailable_at_first)
    _hand_over_and_drain(Settlements(rt, journal), entry, "OperationalError")
    assert outage["tries"] == 5
    assert balances(db, account)[3] == 1 * USD
    with db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(SettlementDeadLetter)
                        .where(SettlementDeadLetter.reservation_id == res)) == 0
