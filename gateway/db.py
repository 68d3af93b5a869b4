"""Engine and sessions. SQLite gets WAL and a busy timeout so concurrent writers queue instead of failing.

DATABASE_BUSY_TIMEOUT_MS (default 30000) bounds how long a request waits for a SQLite database that another
process holds locked before it fails (as a 503 `database_unavailable`, see gateway/errors.py). This process's own
writers take turns, and one waits for its turn at most DATABASE_WRITE_TURN_TIMEOUT_MS (default: the busy timeout):
a queue of this process's writers is load, not an outage. When a writer finds the file locked past the busy timeout,
the writers that were already queued behind it fail at once, as it did, rather than each waiting out the busy
timeout again.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker


READS_ONLY = "gateway_reads_only"


def busy_timeout_ms() -> int:
    raw = os.environ.get("DATABASE_BUSY_TIMEOUT_MS", "")
    return int(raw) if raw.strip().isdigit() else 30_000


def write_turn_timeout_ms() -> int:
    raw = os.environ.get("DATABASE_WRITE_TURN_TIMEOUT_MS", "")
    return int(raw) if raw.strip().isdigit() else busy_timeout_ms()


def _locked(exc: OperationalError) -> bool:
    return "database is locked" in str(exc.orig or exc)


def make_engine(url: str, pool_size: int = 20) -> Engine:
    if url.startswith("sqlite"):
        busy_ms = busy_timeout_ms()
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy_ms / 1000})
        writers = threading.local()  # how many write transactions this thread has open

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            # Let SQLAlchemy own transactions: BEGIN IMMEDIATE takes the write lock up front, so a
            # read-then-write transaction cannot deadlock against another writer.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            # Reads (Database.sessions) begin deferred: under WAL they see one snapshot and never wait for the
            # writer. So does a transaction opened while this thread already holds the write lock (say a key-ring
            # reload inside a login), which would otherwise wait for itself until the busy timeout.
            if conn.get_execution_options().get(READS_ONLY) or getattr(writers, "open", 0):
                conn.exec_driver_sql("BEGIN")
                return
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            conn.info["holds_write_lock"] = True
            writers.open = 1

        @event.listens_for(engine, "commit")
        @event.listens_for(engine, "rollback")
        def _sqlite_end(conn):
            if conn.info.pop("holds_write_lock", False):
                writers.open = 0

        return engine
    # No pre-ping (a round trip on every checkout): the first statement to meet a dropped connection fails as a
    # 503, and the pool's connections are then dropped (drop_pool_when_the_database_goes), so the next checkouts
    # open fresh ones.
    engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size)
    drop_pool_when_the_database_goes(engine)
    return engine


def drop_pool_when_the_database_goes(engine: Engine) -> None:
    """When a statement meets a dropped connection, or a connection cannot be opened, every pooled connection is
    suspect: the idle ones are closed and a fresh pool serves the next checkouts (those in use go back to the old
    pool and are forgotten).

    SQLAlchemy's own invalidation on a disconnect is not enough: it only follows statements, so an outage during
    which the requests met only connection attempts (the pool reconnecting connections it had already invalidated)
    leaves the connections it ended idle in the pool, and the first request to take one after the database is back
    fails."""
    connect_failed = engine.dialect.loaded_dbapi.OperationalError

    @event.listens_for(engine, "handle_error")
    def _drop_pool(context) -> None:
        if context.is_disconnect or (context.connection is None and
                                     isinstance(context.original_exception, connect_failed)):
            engine.dispose()


class Database:
    def __init__(self, url: str, *, pool_size: int = 20):
        self.url = url
        self.engine = make_engine(url, pool_size)  # PostgreSQL: pool_size kept open, as many more at a peak
        self.dialect = self.engine.dialect.name
        # sessions(): for reading (on SQLite they take no write lock); transaction(): for any change.
        self.sessions = sessionmaker(self.engine.execution_options(**{READS_ONLY: True}), expire_on_commit=False)
        self._writers = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time, and its busy handler polls with growing sleeps, so under load a writer
        # can starve past the busy timeout while others get in. This process's writers take turns on a lock
        # instead: the next one starts as soon as the last one ends. (Other processes still meet the busy handler.)
        self._write_turn = threading.RLock() if url.startswith("sqlite") else None
        self._turn_seconds = write_turn_timeout_ms() / 1000
        self._found_locked_at = float("-inf")  # time.monotonic() when a writer last failed on the file's lock

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work commits on success and rolls back on any error."""
        with self._turn():
            with self._writers() as session:
                with session.begin():
                    yield session

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A Core connection for reads (on SQLite a deferred, snapshot transaction that takes no write lock)."""
        with self.engine.connect().execution_options(**{READS_ONLY: True}) as conn:
            yield conn

    @contextmanager
    def _turn(self) -> Iterator[None]:
        if self._write_turn is None:
            yield
            return
        asked = time.monotonic()
        if not self._write_turn.acquire(timeout=self._turn_seconds):
            raise OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError(
                "database is locked: this gateway's other writers held it past the write turn timeout"))
        if self._found_locked_at > asked:
            self._write_turn.release()
            raise OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError(
                "database is locked: the writer before this one found it locked past the busy timeout"))
        try:
            yield
        except OperationalError as exc:
            if _locked(exc):  # only the file's own lock: a writer failed at once above must not restart the clock
                self._found_locked_at = time.monotonic()
            raise
        finally:
            self._write_turn.release()

    def dispose(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        """On SQLite, whether a write could begin now (the probe takes its turn among this process's writers)."""
        with self._turn(), self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
