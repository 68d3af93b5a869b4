"""The database layer under faults: SQLite locking, and database errors turned into clear answers."""
from __future__ import annotations

import sqlite3
import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DataError, OperationalError

from gateway import errors
from gateway.db import Database


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
