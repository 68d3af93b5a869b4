"""The ledger and Idempotency-Key handling, against a real database: SQLite always, PostgreSQL when a server
answers at $TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres; a fresh database per run)."""
from __future__ import annotations

import asyncio
import os
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import psycopg
import pytest
from sqlalchemy import create_engine, func, select, text, update
from sqlalchemy.engine import make_url

from gateway.audit import Actor
from gateway.db import Database
from gateway.errors import ApiError
from gateway.migrate import upgrade
from gateway.models import (Account, AuditEvent, IdempotencyRecord, LedgerEntry, LedgerPosting, Reservation,
                            utcnow)
from gateway.services import idempotency, ledger
from gateway.services.chat_billing import APPLICATION_NAME, make_chat_store

USD = 1_000_000
PG_SERVER = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _postgres_database():
    """Create a fresh database on the server; None when no server answers."""
    try:
        engine = create_engine(PG_SERVER, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 2})
        name = f"ledger_test_{secrets.token_hex(4)}"
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception:
        return None, None
    return engine, name


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db(request, tmp_path_factory):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'gateway.db'}"
        upgrade(url)
        database = Database(url)
        yield database
        database.engine.dispose()
        return
    server, name = _postgres_database()
    if server is None:
        pytest.skip(f"no PostgreSQL server at {PG_SERVER}")
    url = make_url(PG_SERVER).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    database = Database(url)
    yield database
    database.engine.dispose()
    with server.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    server.dispose()


def funded(db, amount: int) -> str:
    with db.transaction() as s:
        account = ledger.create_account(s)
        ledger.mint(s, account.id, amount, "test credit")
        return account.id


def balances(db, account_id: str) -> tuple[int, int, int, int]:
    with db.sessions() as s:
        b = ledger.balances(ledger.get_account(s, account_id))
        return b.minted_micros, b.available_micros, b.held_micros, b.spent_micros


def reconcile(db) -> dict:
    with ledger.snapshot(db) as s:
        return ledger.reconciliation(s)


def mine(report: dict, account_id: str) -> list[dict]:
    return [d for d in report["discrepancies"] if d.get("account_id") == account_id]


def reserve(db, account_id: str, amount: int, ttl: float = 300) -> str:
    with db.transaction() as s:
        return ledger.reserve(s, account_id, amount, ttl).id


def test_finalize_once_then_conflict(db):
    account = funded(db, 10 * USD)
    res = reserve(db, account, 3 * USD)
    assert balances(db, account) == (10 * USD, 7 * USD, 3 * USD, 0)
    with db.transaction() as s:
        ledger.finalize(s, res, 1 * USD)
    assert balances(db, account) == (10 * USD, 9 * USD, 0, 1 * USD)
    with pytest.raises(ApiError) as refused, db.transaction() as s:
        ledger.finalize(s, res, 1 * USD)
    assert (refused.value.status, refused.value.code) == (409, "reservation_not_pending")
    assert "finalized" in refused.value.message
    assert balances(db, account) == (10 * USD, 9 * USD, 0, 1 * USD)
    assert not mine(reconcile(db), account)


def test_finalize_above_reserved_posts_nothing(db):
    account = funded(db, 10 * USD)
    res = reserve(db, account, 3 * USD)
    with db.sessions() as s:
        entries = s.scalar(select(func.count()).select_from(LedgerEntry).where(LedgerEntry.account_id == account))
    with pytest.raises(ApiError) as refused, db.transaction() as s:
        ledger.finalize(s, res, 3 * USD + 1)
    assert refused.value.status == 422
    with db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(LedgerEntry)
                        .where(LedgerEntry.account_id == account)) == entries
        assert s.get(Reservation, res).status == "pending"


def test_release_then_finalize_conflicts(db):
    account = funded(db, 10 * USD)
    res = reserve(db, account, 3 * USD)
    with db.transaction() as s:
        ledger.release(s, res)
    with pytest.raises(ApiError) as refused, db.transaction() as s:
        ledger.finalize(s, res, 1)
    assert refused.value.status == 409 and "released" in refused.value.message
    assert balances(db, account) == (10 * USD, 10 * USD, 0, 0)


def test_expired_reservation_returns_and_cannot_move(db):
    account = funded(db, 10 * USD)
    res = reserve(db, account, 2 * USD, ttl=60)
    with db.transaction() as s:  # its TTL passes
        s.execute(update(Reservation).where(Reservation.id == res).values(expires_at=utcnow() - timedelta(seconds=1)))
    with pytest.raises(ApiError) as refused, db.transaction() as s:
        ledger.finalize(s, res, 1)
    assert refused.value.status == 409 and "expired" in refused.value.message
    with db.transaction() as s:
        assert ledger.expire_due(s, account_id=account) == 1
    assert balances(db, account) == (10 * USD, 10 * USD, 0, 0)
    with db.sessions() as s:
        assert s.get(Reservation, res).status == "expired"
    assert not mine(reconcile(db), account)


def test_reconciliation_reports_a_tampered_balance_and_an_unbalanced_entry(db):
    account = funded(db, 10 * USD)
    with db.transaction() as s:
        s.execute(update(Account).where(Account.id == account).values(available_micros=Account.available_micros + 5))
    report = reconcile(db)
    assert not report["balanced"]
    assert any(d["rule"] == "available = ledger available" and d["difference_micros"] == 5
               for d in mine(report, account))
    with db.transaction() as s:
        s.execute(update(Account).where(Account.id == account).values(available_micros=Account.available_micros - 5))
        entry = s.scalar(select(LedgerEntry.id).where(LedgerEntry.account_id == account))
        s.add(LedgerPosting(entry_id=entry, account_id=account, bucket="held", amount_micros=7))
        s.add(LedgerPosting(entry_id=entry, account_id=account, bucket="held", amount_micros=-7))
        s.add(LedgerPosting(entry_id=entry, account_id=account, bucket="spent", amount_micros=1))
    rules = {d["rule"] for d in mine(reconcile(db), account)}
    assert "ledger entry postings sum to zero" in rules and "spent = ledger spent" in rules


def test_reconciliation_counts_pending_reservations_against_held(db):
    account = funded(db, 10 * USD)
    res = reserve(db, account, 1 * USD)
    with db.transaction() as s:  # a hold that vanished without its reservation moving
        s.execute(update(Reservation).where(Reservation.id == res).values(status="released"))
    assert any(d["rule"] == "held = pending reservations" for d in mine(reconcile(db), account))


def test_fifty_reservations_at_once_against_room_for_twenty(db):
    account = funded(db, 20 * USD)
    barrier = threading.Barrier(50)

    def attempt(_):
        barrier.wait()
        try:
            reserve(db, account, 1 * USD)
            return "held"
        except ledger.Shortfall:
            return "short"

    with ThreadPoolExecutor(max_workers=50) as pool:
        outcomes = list(pool.map(attempt, range(50)))
    assert outcomes.count("held") == 20 and outcomes.count("short") == 30
    assert balances(db, account) == (20 * USD, 0, 20 * USD, 0)
    assert not mine(reconcile(db), account)


def test_reconciliation_is_one_snapshot_while_money_moves(db):
    """Reservations settle while the reconciliation reads: it must never see half of a movement."""
    account = funded(db, 1000 * USD)
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            res = reserve(db, account, 1 * USD)
            with db.transaction() as s:
                ledger.finalize(s, res, USD // 2)

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        reports = [reconcile(db) for _ in range(15)]
    finally:
        stop.set()
        worker.join()
    assert [mine(r, account) for r in reports] == [[]] * len(reports)


# ---- the chat path's hold and settlement (gateway/services/chat_billing.py) ------------------------------------------

ACTOR = Actor("api_key", "key_test")


def on_chat_store(db, work):
    """Run `work(store)` with the store the gateway would use on this database (PostgreSQL: asyncio statements)."""
    async def main():
        store = make_chat_store(db, lambda fn, *args: asyncio.to_thread(fn, *args))
        try:
            return await work(store)
        finally:
            await store.close()
    return asyncio.run(main())


def settle(store, reservation_id: str, actual: int | None):
    return store.settle(reservation_id, actual, actor=ACTOR, target="model:m", org="acme",
                        details={"reservation_id": reservation_id})


def test_chat_store_holds_finalizes_and_posts_every_move(db):
    account = funded(db, 10 * USD)

    async def work(store):
        res = await store.hold(account, 2 * USD, 300, budget_limit=5 * USD, request_id="req-hold")
        held = balances(db, account)
        settled = await settle(store, res, USD // 2)
        return res, held, settled

    res, held, settled = on_chat_store(db, work)
    assert held == (10 * USD, 8 * USD, 2 * USD, 0)
    assert settled is True
    assert balances(db, account) == (10 * USD, 10 * USD - USD // 2, 0, USD // 2)
    with db.sessions() as s:
        assert s.get(Reservation, res).status == "finalized"
        kinds = s.scalars(select(LedgerEntry.kind).where(LedgerEntry.reservation_id == res)).all()
        events = s.scalars(select(AuditEvent.details).where(AuditEvent.action == "chat.completion")).all()
    assert sorted(kinds) == ["finalize", "reserve"]
    assert {"reservation_id": res} in events
    assert not mine(reconcile(db), account)


def test_chat_store_refuses_a_hold_past_the_budget_and_writes_nothing(db):
    account = funded(db, 10 * USD)

    async def work(store):
        first = await store.hold(account, 3 * USD, 300, budget_limit=4 * USD, request_id="req-1")
        second = await store.hold(account, 2 * USD, 300, budget_limit=4 * USD, request_id="req-2")
        return first, second, await store.shortfall(account, 2 * USD, 4 * USD)

    first, second, short = on_chat_store(db, work)
    assert first is not None and second is None
    assert short.reason == "budget_exceeded" and short.account.held_micros == 3 * USD
    assert balances(db, account) == (10 * USD, 7 * USD, 3 * USD, 0)
    assert not mine(reconcile(db), account)


def test_a_refusal_whose_rules_pass_by_now_is_put_down_to_the_budget(db):
    """Holds above their charge: by the time the refusal is explained, a settlement may have made room again."""
    account = funded(db, 10 * USD)

    async def work(store):
        first = await store.hold(account, 3 * USD, 300, budget_limit=4 * USD, request_id="req-1")
        refused = await store.hold(account, 2 * USD, 300, budget_limit=4 * USD, request_id="req-2")
        await settle(store, first, USD)  # charged 1 of its 3: 3 of the 4 are free again
        return refused, await store.shortfall(account, 2 * USD, 4 * USD), await store.shortfall(account, 2 * USD, None)

    refused, with_budget, without = on_chat_store(db, work)
    assert refused is None
    assert (with_budget.reason, without.reason) == ("budget_exceeded", "insufficient_credit")


def test_chat_store_moves_a_reservation_once_and_says_why_not_after(db):
    account = funded(db, 10 * USD)

    async def work(store):
        res = await store.hold(account, 2 * USD, 300, budget_limit=None, request_id="req")
        released = await settle(store, res, None)
        again = await settle(store, res, USD)
        return released, again, await store.why_not_settled(res, USD)

    released, again, why = on_chat_store(db, work)
    assert released is True and again is False
    assert "it is released" in why, why
    assert balances(db, account) == (10 * USD, 10 * USD, 0, 0)
    assert not mine(reconcile(db), account)


def test_chat_store_charges_an_overrun_in_full_and_marks_the_reservation(db):
    """A backend reporting more than the hold: usage x price is charged, the difference comes from available
    credit (below zero if it must: a charge is never less than usage), and the reservation records the overrun."""
    account = funded(db, 3 * USD)

    async def work(store):
        res = await store.hold(account, USD, 300, budget_limit=None, request_id="req")
        other = await store.hold(account, USD, 300, budget_limit=None, request_id="req-2")
        return res, other, await settle(store, res, 4 * USD)

    res, other, settled = on_chat_store(db, work)
    assert settled is True
    assert balances(db, account) == (3 * USD, -2 * USD, USD, 4 * USD)  # 3 minted: 1 held by `other`, 4 spent
    with db.sessions() as s:
        reservation = s.get(Reservation, res)
        assert (reservation.status, reservation.actual_micros, reservation.overrun_micros) == (
            "finalized", 4 * USD, 3 * USD)
        assert s.get(Reservation, other).overrun_micros is None
    assert not mine(reconcile(db), account)


def test_chat_store_charge_within_the_hold_is_no_overrun(db):
    account = funded(db, 3 * USD)

    async def work(store):
        res = await store.hold(account, USD, 300, budget_limit=None, request_id="req")
        return res, await settle(store, res, USD)

    res, settled = on_chat_store(db, work)
    with db.sessions() as s:
        assert settled is True and s.get(Reservation, res).overrun_micros is None
    assert balances(db, account) == (3 * USD, 2 * USD, 0, USD)


def test_the_billing_api_still_refuses_a_finalize_above_the_hold_but_the_chat_path_charges_it(db):
    account = funded(db, 10 * USD)
    res = reserve(db, account, USD)
    with pytest.raises(ApiError) as refused, db.transaction() as s:
        ledger.finalize(s, res, 2 * USD)
    assert refused.value.code == "actual_exceeds_reserved"
    with db.transaction() as s:
        assert ledger.finalize(s, res, 2 * USD, beyond_hold=True).overrun_micros == USD


def test_chat_store_thirty_holds_at_once_against_a_budget_for_ten(db):
    account = funded(db, 100 * USD)

    async def work(store):
        return await asyncio.gather(*(store.hold(account, USD, 300, budget_limit=10 * USD, request_id=f"r{k}")
                                      for k in range(30)))

    placed = [r for r in on_chat_store(db, work) if r is not None]
    assert len(placed) == 10
    assert balances(db, account) == (100 * USD, 90 * USD, 10 * USD, 0)
    assert not mine(reconcile(db), account)


def test_holds_asked_together_are_judged_one_after_another_in_the_order_asked(db):
    """On PostgreSQL they go in one statement (group hold): a hold refused by the budget does not stop a smaller one
    after it that fits, and each account is judged on its own."""
    if db.dialect != "postgresql":
        pytest.skip("SQLite holds one at a time on worker threads, in whichever order they run")
    first, second = funded(db, 10 * USD), funded(db, 3 * USD)

    async def work(store):
        asked = [(first, 3 * USD, 5 * USD), (second, 2 * USD, None), (first, 3 * USD, 5 * USD),
                 (first, 2 * USD, 5 * USD), (second, 2 * USD, None), (first, USD, 5 * USD), (second, USD, None)]
        return await asyncio.gather(*(store.hold(account, amount, 300, budget_limit=limit, request_id=f"r{k}")
                                      for k, (account, amount, limit) in enumerate(asked)))

    placed = [res is not None for res in on_chat_store(db, work)]
    # first: 3 placed, 3 more would pass the budget of 5, 2 fits, then 1 would pass it; second: credit 3 then 1 left
    assert placed == [True, True, False, True, False, False, True], placed
    assert balances(db, first) == (10 * USD, 5 * USD, 5 * USD, 0)
    assert balances(db, second) == (3 * USD, 0, 3 * USD, 0)
    assert not mine(reconcile(db), first) and not mine(reconcile(db), second)


def test_settlements_asked_together_move_each_reservation_once_and_sum_per_account(db):
    """On PostgreSQL they go in one statement (group settlement): two accounts, finalizes, releases, an overrun,
    a reservation asked twice at once and one already moved; on SQLite one by one, to the same end."""
    first, second = funded(db, 100 * USD), funded(db, 100 * USD)

    async def work(store):
        holds = await asyncio.gather(*(store.hold(account, 2 * USD, 300, budget_limit=None, request_id=f"r{k}")
                                       for k, account in enumerate([first] * 6 + [second] * 4)))
        assert await settle(store, holds[5], None) is True  # moved before the others are asked
        asked = [(holds[0], USD), (holds[1], None), (holds[2], 3 * USD), (holds[3], USD), (holds[3], USD),
                 (holds[4], 0), (holds[5], USD), (holds[6], 2 * USD), (holds[7], None), (holds[8], USD // 2),
                 (holds[9], USD)]
        return holds, await asyncio.gather(*(settle(store, res, actual) for res, actual in asked))

    holds, moved = on_chat_store(db, work)
    assert sorted(moved[3:5]) == [False, True], f"one of the two asks for one reservation moves it: {moved}"
    assert moved[:3] + moved[5:] == [True, True, True, True, False, True, True, True, True], moved
    # first: 1 + 0 + 3 (overrun) + 1 + 0 spent; second: 2 + 0 + 0.5 + 1
    assert balances(db, first) == (100 * USD, 95 * USD, 0, 5 * USD)
    assert balances(db, second) == (100 * USD, 96 * USD + USD // 2, 0, 3 * USD + USD // 2)
    with db.sessions() as s:
        details = s.scalars(select(AuditEvent.details).where(AuditEvent.action == "chat.completion")).all()
    settled = sorted(d["reservation_id"] for d in details if d and d.get("reservation_id") in holds)
    assert settled == sorted(holds), f"expected one audit event per reservation moved, found {settled}"
    assert not mine(reconcile(db), first) and not mine(reconcile(db), second)


def test_chat_store_comes_back_after_the_database_dropped_its_connections(db):
    if db.dialect != "postgresql":
        pytest.skip("the asyncio connection pool is PostgreSQL's")
    account = funded(db, 10 * USD)
    database = make_url(db.url).database

    async def work(store):
        await asyncio.gather(*(store.hold(account, USD, 300, budget_limit=None, request_id=f"r{k}") for k in range(3)))
        pooled = len(store._idle)
        with db.engine.connect() as conn:  # what a database restart does to the store's connections
            ended = conn.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                      "WHERE datname = :db AND application_name = :app"),
                                 {"db": database, "app": APPLICATION_NAME}).scalar()
        assert ended == pooled, f"expected to end the store's {pooled} connections, ended {ended}"
        found = await store.lookup("no such key hash", "m")  # a read: retried once on a new connection
        return pooled, found, await store.hold(account, USD, 300, budget_limit=None, request_id="after")

    pooled, found, after = on_chat_store(db, work)
    assert pooled >= 1
    assert found is None and after is not None
    assert balances(db, account) == (10 * USD, 6 * USD, 4 * USD, 0)


def test_chat_store_waiting_for_a_free_connection_is_bounded(db):
    if db.dialect != "postgresql":
        pytest.skip("the asyncio connection pool is PostgreSQL's")

    async def work(store):
        store._slots = asyncio.Semaphore(0)  # every connection in use
        store._wait_seconds = 0.2
        with pytest.raises(psycopg.OperationalError, match="no database connection came free within 0.2 s"):
            await store.lookup("hash", "m")

    on_chat_store(db, work)


# ---- Idempotency-Key ---------------------------------------------------------------------------------------------

def _reserve_op(account_id: str, amount: int):
    def operation(session):
        return 201, ledger.reservation_json(ledger.reserve(session, account_id, amount, 300))
    return operation


def test_same_key_and_body_replays_one_hold(db):
    account = funded(db, 10 * USD)
    key, body = secrets.token_hex(8), {"account_id": account, "amount_micros": USD}
    first = idempotency.run(db, "test", key, body, _reserve_op(account, USD))
    again = idempotency.run(db, "test", key, body, _reserve_op(account, USD))
    assert again == (first[0], first[1], True) and first[2] is False
    assert balances(db, account) == (10 * USD, 9 * USD, USD, 0)


def test_same_key_other_body_is_422(db):
    account = funded(db, 10 * USD)
    key = secrets.token_hex(8)
    idempotency.run(db, "test", key, {"amount_micros": USD}, _reserve_op(account, USD))
    with pytest.raises(ApiError) as refused:
        idempotency.run(db, "test", key, {"amount_micros": 2 * USD}, _reserve_op(account, 2 * USD))
    assert (refused.value.status, refused.value.code) == (422, "idempotency_key_reused")


def test_same_key_while_in_progress_is_409(db):
    account = funded(db, 10 * USD)
    key, body = secrets.token_hex(8), {"amount_micros": USD}
    with db.transaction() as s:  # another request with this key is being processed right now
        s.add(IdempotencyRecord(scope="test", key=key, request_hash=idempotency.body_hash(body), state="in_progress"))
    with pytest.raises(ApiError) as refused:
        idempotency.run(db, "test", key, body, _reserve_op(account, USD))
    assert (refused.value.status, refused.value.code) == (409, "idempotency_conflict")
    assert balances(db, account) == (10 * USD, 10 * USD, 0, 0)


def test_a_crashed_requests_key_is_taken_over_by_one_retry_only(db):
    account = funded(db, 10 * USD)
    key, body = secrets.token_hex(8), {"amount_micros": USD}
    with db.transaction() as s:
        s.add(IdempotencyRecord(scope="test", key=key, request_hash=idempotency.body_hash(body), state="in_progress",
                                created_at=utcnow() - idempotency.STALE_AFTER - timedelta(seconds=1)))
    barrier = threading.Barrier(5)

    def retry(_):
        barrier.wait()
        try:
            return idempotency.run(db, "test", key, body, _reserve_op(account, USD))[0]
        except ApiError as exc:
            return exc.status

    with ThreadPoolExecutor(max_workers=5) as pool:
        statuses = list(pool.map(retry, range(5)))
    assert statuses.count(201) >= 1 and set(statuses) <= {201, 409}
    assert balances(db, account) == (10 * USD, 9 * USD, USD, 0)
