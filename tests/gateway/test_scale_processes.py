"""The gateway in many processes: the rate limiter shared through PostgreSQL (exact under racing processes), one
leader at a time (taken over when it goes), a slot of the journal folder per process, the key ring that sees
another process's rotation on its next use, and the settings that refuse several processes on SQLite."""
from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from gateway import process_slots
from gateway.db import Database
from gateway.leadership import Leadership
from gateway.migrate import upgrade
from gateway.models import SigningKey
from gateway.secrets_at_rest import Sealer, new_key
from gateway.security import KeyRing, generate_signing_key
from gateway.services.chat_billing import PgChatStore
from gateway.settings import Settings
from gateway.shared_limits import SharedFailureWindow, SharedRefusalSampler, SharedRateLimiter

PG_SERVER = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SEALER = Sealer([new_key()])


@pytest.fixture(scope="module")
def pg_url():
    """A fresh, migrated database of this module's own on the PostgreSQL server, dropped afterwards."""
    name = f"scale_{secrets.token_hex(4)}"
    server = create_engine(PG_SERVER, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 2})
    try:
        with server.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError:
        pytest.skip(f"no PostgreSQL server at {PG_SERVER}")
    url = make_url(PG_SERVER).set(drivername="postgresql+psycopg", database=name).render_as_string(
        hide_password=False)
    upgrade(url)
    yield url
    with server.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    server.dispose()


# ---- the shared rate limiter -----------------------------------------------------------------------------------------

def _racing(url: str, calls: int, key: str, limit: int, window: float) -> list[int | None]:
    """`calls` counts of one key at once, as that many processes would send them: each store its own connection."""
    async def race():
        db = Database(url)
        stores = [PgChatStore(db, None, size=1) for _ in range(calls)]
        try:
            return await asyncio.gather(*(SharedRateLimiter(s).over_limit(key, limit, window) for s in stores))
        finally:
            for store in stores:
                await store.close()
            db.dispose()
    return asyncio.run(race())


def test_requests_racing_from_many_connections_are_served_exactly_up_to_the_limit(pg_url):
    verdicts = _racing(pg_url, 30, "key-race", limit=10, window=60)
    assert verdicts.count(None) == 10
    assert all(1 <= v <= 60_000 for v in verdicts if v is not None)  # ms until the oldest leaves the window


def test_a_refused_request_is_not_counted_and_the_window_slides(pg_url):
    assert _racing(pg_url, 5, "key-slide", limit=2, window=1).count(None) == 2
    deadline = time.monotonic() + 5
    while _racing(pg_url, 1, "key-slide", limit=2, window=1) != [None]:  # refusals did not push the window on
        assert time.monotonic() < deadline, "the key was not served again once its window had passed"
    assert _racing(pg_url, 3, "key-slide", limit=2, window=1).count(None) == 1  # one of two taken just now


def test_keys_count_on_their_own(pg_url):
    assert _racing(pg_url, 3, "key-a", limit=3, window=60).count(None) == 3
    assert _racing(pg_url, 1, "key-b", limit=3, window=60) == [None]


# ---- throttles and the audit budget, shared ------------------------------------------------------------------------

def test_failures_counted_by_two_processes_throttle_the_account_in_both(pg_url):
    db = Database(pg_url)
    here, there = (SharedFailureWindow(db, "account", 3, 60) for _ in range(2))
    for window in (here, there, here):
        assert window.blocked_for("olive@acme.test") is None
        window.failed("olive@acme.test")
    assert 1 <= there.blocked_for("olive@acme.test") <= 60
    assert here.blocked_for("eve@evil.test") is None  # each account on its own
    assert here.first_refusal_of_burst("olive@acme.test", 60) is True  # audited once, whichever process refuses
    assert there.first_refusal_of_burst("olive@acme.test", 60) is False
    there.clear("olive@acme.test")  # a login that succeeded
    assert here.blocked_for("olive@acme.test") is None
    db.dispose()


def test_refusals_audited_one_by_one_share_one_budget_across_processes(pg_url):
    db = Database(pg_url)
    here, there = (SharedRefusalSampler(db, 86400, per_address=3, per_window=5) for _ in range(2))
    admitted = [sampler.admit("auth.api_key", "203.0.113.7") for sampler in (here, there) * 3]
    assert admitted.count(True) == 3  # the address's budget, spent by both
    assert sum(here.drain().values()) + sum(there.drain().values()) == 3  # the rest counted, for summaries
    admitted = [here.admit("auth.api_key", f"198.51.100.{n}") for n in range(5)]
    assert admitted.count(True) == 2  # the window's budget of 5, 3 of it spent above
    db.dispose()


def test_a_spent_budget_is_not_asked_for_again_until_its_window_ends(pg_url):
    db = Database(pg_url)

    class Asking:  # the database, counting how often it is asked
        asked = 0

        @property
        def engine(self):
            Asking.asked += 1
            return db.engine

    clock = [1000.0]
    window = 43200  # a window of its own: not the one the test above spent
    here = SharedRefusalSampler(Asking(), window, per_address=1, per_window=2, clock=lambda: clock[0])
    there = SharedRefusalSampler(db, window, per_address=1, per_window=2)
    assert [here.admit("auth.api_key", "203.0.113.7") for _ in range(3)] == [True, False, False]
    assert Asking.asked == 2  # the third was counted without asking: the address's budget is spent
    assert here.admit("auth.api_key", "198.51.100.9") and not there.admit("auth.api_key", "198.51.100.8")
    Asking.asked = 0
    assert not here.admit("auth.api_key", "198.51.100.7") and not here.admit("auth.api_key", "198.51.100.6")
    assert Asking.asked == 1  # the window's budget is spent: every address's refusals are counted until its end
    clock[0] += window  # the window is over, by the database's clock
    here.admit("auth.api_key", "198.51.100.5")
    assert Asking.asked == 2
    db.dispose()


# ---- leadership ------------------------------------------------------------------------------------------------------

def test_one_process_leads_and_another_takes_over_when_it_goes(pg_url):
    async def scenario():
        first, second = Leadership(pg_url, 0.2), Leadership(pg_url, 0.2)
        await first.try_to_lead()
        await second.try_to_lead()
        assert (first.leads, second.leads) == (True, False)
        await second.try_to_lead()  # while the leader lives, nobody else leads
        assert second.leads is False
        await first.stop()  # its connection closes: PostgreSQL lets go of the lock once its backend has ended
        await _lead_within(second, 5)
        assert first.leads is False
        await second.stop()
    asyncio.run(scenario())


def test_a_leader_whose_connection_breaks_steps_down(pg_url):
    async def scenario():
        leader = Leadership(pg_url, 0.2)
        await leader.try_to_lead()
        assert leader.leads
        pid = leader._conn.info.backend_pid
        engine = create_engine(pg_url)
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        engine.dispose()
        await leader.try_to_lead()
        assert leader.leads is False
        await _lead_within(leader, 5)  # a fresh connection, and the lock nobody holds now
        await leader.stop()
    asyncio.run(scenario())


async def _lead_within(leadership: Leadership, seconds: float) -> None:
    """Try on every beat, as the process does, until it leads."""
    deadline = time.monotonic() + seconds
    while not leadership.leads:
        assert time.monotonic() < deadline, f"no process took the lead within {seconds} s"
        await leadership.try_to_lead()
        await asyncio.sleep(leadership.retry_seconds)


def test_on_sqlite_the_one_process_always_leads():
    assert Leadership("sqlite:///x.db", 1.0).leads is True


# ---- the journal folder's slots ----------------------------------------------------------------------------------

def test_each_process_takes_the_lowest_free_slot_and_a_dead_ones_slot_is_taken_again(tmp_path):
    first, second = process_slots.claim(tmp_path), process_slots.claim(tmp_path)
    assert (first.number, second.number) == (0, 1)
    assert first.folder == tmp_path / "process-0"
    first.release()  # as when the process dies: the kernel lets go of its lock
    again = process_slots.claim(tmp_path)
    assert again.number == 0
    for slot in (second, again):
        slot.release()


# ---- signing keys seen by every process ---------------------------------------------------------------------------

def _add_key(db: Database, state: str) -> str:
    kid, private_pem, public_pem = generate_signing_key()
    with db.transaction() as session:
        session.add(SigningKey(kid=kid, private_key_sealed=SEALER.seal(private_pem, bound_to=kid),
                               public_pem=public_pem, state=state))
    return kid


def test_a_rotation_made_by_another_process_holds_here_on_the_next_use(pg_url):
    db = Database(pg_url)
    ring = KeyRing(db, SEALER, every_use=True)
    kid = _add_key(db, "active")
    assert ring.verifying(kid) is not None  # published by another process: known at once
    with db.transaction() as session:
        session.get(SigningKey, kid).state = "retired"
    assert ring.verifying(kid) is None  # retired by another process: refused at once
    db.dispose()


def test_uses_arriving_together_share_the_database_reads(pg_url, monkeypatch):
    db = Database(pg_url)
    ring = KeyRing(db, SEALER, every_use=True)
    kid = _add_key(db, "retiring")
    reads = []
    sessions = db.sessions

    def counted_sessions():
        reads.append(threading.get_ident())
        time.sleep(0.02)  # a slow read, so that uses pile up behind it
        return sessions()
    monkeypatch.setattr(db, "sessions", counted_sessions)
    together = threading.Barrier(32)

    def use(_):
        together.wait()
        return ring.verifying(kid)
    with ThreadPoolExecutor(max_workers=32) as pool:
        found = list(pool.map(use, range(32)))
    assert all(key is not None for key in found)
    # 32 uses at once: the first comparison (and the reload it finds needed), then one for those that arrived while
    # it ran; not one read per use.
    assert len(reads) <= 4, f"{len(reads)} database reads for 32 uses arriving together"
    db.dispose()


# ---- settings ------------------------------------------------------------------------------------------------------

def _settings(**changes) -> Settings:
    base = dict(database_url="sqlite:///g.db", keys_dir=None, internal_jwt_secret="i" * 40,
                admin_jwt_secret="a" * 40, config_repo=None, key_encryption_keys=(new_key(),))
    return Settings(**{**base, **changes})


def test_several_workers_need_postgresql():
    assert any("GATEWAY_WORKERS is 2" in p for p in _settings(workers=2).problems())
    assert not _settings(workers=2, database_url="postgresql+psycopg://u@h/d").problems()


def test_the_rate_limit_store_follows_the_database_unless_told():
    assert _settings().shared_rate_limits is False
    assert _settings(database_url="postgresql+psycopg://u@h/d").shared_rate_limits is True
    assert _settings(database_url="postgresql+psycopg://u@h/d", rate_limit_store="process").shared_rate_limits is False
    assert any("RATE_LIMIT_STORE" in p for p in _settings(rate_limit_store="database").problems())
    assert any("RATE_LIMIT_STORE" in p for p in _settings(rate_limit_store="redis").problems())


def test_the_journal_slots_live_under_the_configured_folder(tmp_path):
    slot = process_slots.claim(_settings(settlement_journal_dir=tmp_path).settlement_journal_path())
    assert Path(slot.folder).parent == tmp_path
    slot.release()
