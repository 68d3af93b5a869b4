"""The ledger and Idempotency-Key handling, against a real database: SQLite always, PostgreSQL when a server
answers at $TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres; a fresh database per run)."""
from __future__ import annotations

import os
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, func, select, text, update
from sqlalchemy.engine import make_url

from gateway.db import Database
from gateway.errors import ApiError
from gateway.migrate import upgrade
from gateway.models import Account, IdempotencyRecord, LedgerEntry, LedgerPosting, Reservation, utcnow
from gateway.services import idempotency, ledger

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
