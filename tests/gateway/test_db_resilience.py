"""The database layer under faults: SQLite locking, database errors turned into clear answers, and on PostgreSQL
(when a server answers at $TEST_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/postgres) no connection
an outage ended left in a pool for the first request after it."""
from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, OperationalError

from gateway import errors
from gateway.db import Database
from gateway.services.chat_billing import PgChatStore
from support.stacks.outages import PostgresGate

PG_SERVER = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def db(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_BUSY_TIMEOUT_MS", "300")
    database = Database(f"sqlite:///{tmp_path / 'gateway.db'}")
    with database.transaction() as session:
        session.execute(text("CREATE TABLE t (x INTEGER)"))
        session.execute(text("INSERT INTO t VALUES (1)"))
    yield database, tmp_path / "gateway.db"
    database.engine.dispose()


def test_a_transaction_opened_inside_a_write_does_not_wait_for_itself(db):
    database, _ = db
    started = time.monotonic()
    with database.transaction() as outer:
        outer.execute(text("INSERT INTO t VALUES (2)"))
        with database.transaction() as inner:  # e.g. a key-ring reload during a login
            assert inner.execute(text("SELECT count(*) FROM t")).scalar() == 1
    assert time.monotonic() - started < 0.3


def test_reads_go_on_while_another_process_holds_the_write_lock_and_writes_fail_within_the_busy_timeout(db):
    database, path = db
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with database.sessions() as session:
            assert session.execute(text("SELECT count(*) FROM t")).scalar() == 1
        started = time.monotonic()
        with pytest.raises(OperationalError, match="locked"):
            with database.transaction() as session:
                session.execute(text("INSERT INTO t VALUES (3)"))
        assert time.monotonic() - started < 2
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with database.transaction() as session:
        session.execute(text("INSERT INTO t VALUES (3)"))


def test_writers_queued_behind_one_that_found_the_file_locked_fail_with_it_not_a_busy_timeout_each_later(
        tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_BUSY_TIMEOUT_MS", "300")
    monkeypatch.setenv("DATABASE_WRITE_TURN_TIMEOUT_MS", "5000")  # queued writers would wait their turn
    path = tmp_path / "gateway.db"
    database = Database(f"sqlite:///{path}")
    with database.transaction() as session:
        session.execute(text("CREATE TABLE t (x INTEGER)"))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")

    def write() -> float:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="locked"):
            with database.transaction() as session:
                session.execute(text("INSERT INTO t VALUES (4)"))
        return time.monotonic() - started

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            took = list(pool.map(lambda _: write(), range(4)))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert max(took) < 0.55, took  # each in turn would take 4 x 0.3 s
    with database.transaction() as session:  # the next writer, queued after the outage, is not failed for it
        session.execute(text("INSERT INTO t VALUES (5)"))
    database.engine.dispose()


def test_a_writer_waits_for_its_turn_as_long_as_the_write_turn_timeout_says(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_BUSY_TIMEOUT_MS", "100")
    monkeypatch.setenv("DATABASE_WRITE_TURN_TIMEOUT_MS", "1000")
    database = Database(f"sqlite:///{tmp_path / 'gateway.db'}")
    with database.transaction() as session:
        session.execute(text("CREATE TABLE t (x INTEGER)"))
    holding = threading.Event()

    def slow_writer() -> None:
        with database.transaction() as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
            holding.set()
            time.sleep(0.4)  # a long transaction of this process: longer than the busy timeout

    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(slow_writer)
        holding.wait(5)
        with database.transaction() as session:  # queued 0.4 s, past the busy timeout: load, not an outage
            session.execute(text("INSERT INTO t VALUES (2)"))
        slow.result()
    with database.sessions() as session:
        assert session.execute(text("SELECT count(*) FROM t")).scalar() == 2
    database.engine.dispose()


def _app(exc: Exception) -> TestClient:
    app = FastAPI()
    errors.install(app)

    @app.get("/v1/thing")
    @app.get("/orgs/thing")
    def fail():
        raise exc

    return TestClient(app, raise_server_exceptions=False)


def test_an_unavailable_database_is_a_503_in_both_error_shapes():
    client = _app(OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked")))
    platform = client.get("/orgs/thing")
    assert platform.status_code == 503 and platform.json()["code"] == "database_unavailable"
    assert platform.headers["content-type"].startswith("application/problem+json")
    assert platform.headers["retry-after"] == "1"
    model = client.get("/v1/thing")
    assert model.status_code == 503 and model.json()["error"]["code"] == "database_unavailable"


def test_a_value_the_database_cannot_hold_is_a_400():
    client = _app(DataError("SELECT", None, ValueError("PostgreSQL text fields cannot contain NUL (0x00) bytes")))
    answer = client.get("/orgs/thing")
    assert answer.status_code == 400 and answer.json()["code"] == "invalid_value"
    assert "NUL" in answer.json()["detail"]


# ---- PostgreSQL: after an outage, no pooled connection it ended ---------------------------------------------------

@pytest.fixture
def pg():
    """(a fresh database's URL, the gate that closes it to every connection and opens it again)."""
    server = create_engine(PG_SERVER, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 2})
    name = f"db_resilience_{secrets.token_hex(4)}"
    try:
        with server.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError:
        pytest.skip(f"no PostgreSQL server at {PG_SERVER}")
    gate = PostgresGate(PG_SERVER, name)
    yield make_url(PG_SERVER).set(database=name).render_as_string(hide_password=False), gate
    gate.end()
    with server.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    server.dispose()


@pytest.fixture
def pg_database(pg):
    """(the gateway's Database on a fresh PostgreSQL database, its gate)."""
    url, gate = pg
    database = Database(url)
    yield database, gate
    database.dispose()


def _used_connections(database: Database, count: int) -> list:
    """`count` connections checked out at once, each having run a statement (committed)."""
    connections = [database.engine.connect() for _ in range(count)]
    for conn in connections:
        conn.exec_driver_sql("SELECT 1")
        conn.commit()
    return connections


def test_an_outage_met_only_by_connection_attempts_leaves_no_ended_connection_in_the_pool(pg_database):
    database, gate = pg_database
    in_use = _used_connections(database, 2)  # two requests between their statements
    gate.begin()
    with pytest.raises(OperationalError, match="not currently accepting connections"):
        database.ping()  # a third request needs a connection of its own
    for conn in in_use:
        conn.close()  # the two requests end without another statement: their connections go back
    gate.end()
    for _ in range(3):
        database.ping()


def test_a_statement_meeting_an_ended_connection_fails_alone(pg_database):
    database, gate = pg_database
    for conn in _used_connections(database, 3):
        conn.close()
    gate.begin()
    gate.end()  # nothing asked the database meanwhile: every pooled connection is an ended one
    with pytest.raises(OperationalError) as first:
        database.ping()
    assert first.value.connection_invalidated  # answered as 503 database_unavailable
    for _ in range(3):
        database.ping()


def test_the_chat_paths_pool_closes_connections_in_use_when_the_database_went_away(pg):
    url, gate = pg

    async def outage_while_one_is_in_use() -> None:
        store = PgChatStore(SimpleNamespace(url=url, dialect="postgresql"), in_thread=None)
        try:
            async with store._connection() as in_use:
                await in_use.execute("SELECT 1")
                gate.begin()
                with pytest.raises(psycopg.OperationalError, match="not currently accepting connections"):
                    async with store._connection():
                        pass  # none idle: a new connection is refused
            gate.end()
            for _ in range(2):
                async with store._connection() as conn:
                    await conn.execute("SELECT 1")
        finally:
            await store.close()

    asyncio.run(outage_while_one_is_in_use())
