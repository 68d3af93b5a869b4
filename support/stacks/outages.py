"""Taking a stack's database away and giving it back, as the resilience features do to the stacks that own
their database (the embedded one): a SQLite file lock, or closing a PostgreSQL database the stack created.

SQLite: the suite holds an exclusive transaction on the file, so every gateway transaction waits out its busy
timeout and fails. PostgreSQL: the stack's own database stops accepting connections (`ALLOW_CONNECTIONS false`)
and its open connections are ended; the shared server stays up.
"""
from __future__ import annotations

import sqlite3

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


class FaultUnavailable(Exception):
    """This stack cannot take the fault; the message says why (the scenario is skipped with it)."""


class SqliteLock:
    """Holds the SQLite file's write lock from the suite, as a stuck writer would."""

    def __init__(self, path: str):
        self.path = path
        self.how = f"an exclusive transaction held on {path.rsplit('/', 1)[-1]}"
        self._conn: sqlite3.Connection | None = None

    def begin(self) -> None:
        # Waits for the gateway's writers in flight to finish, then keeps everyone else out.
        self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._conn.execute("BEGIN EXCLUSIVE")

    def end(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute("ROLLBACK")
            finally:
                self._conn.close()
                self._conn = None


class PostgresGate:
    """Closes the stack's own PostgreSQL database to every connection, and opens it again."""

    def __init__(self, server_url: str, database: str):
        self.server_url = server_url
        self.database = database
        self.how = f"database {database} refusing connections, its sessions ended"

    def _run(self, *statements: str) -> None:
        engine = create_engine(self.server_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                for statement in statements:
                    conn.execute(text(statement), {"db": self.database})
        finally:
            engine.dispose()

    def begin(self) -> None:
        self._run(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS false',
                  "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :db "
                  "AND pid <> pg_backend_pid()")

    def end(self) -> None:
        self._run(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS true')


def database_outage(database_url: str, server_url: str | None, created_database: str | None):
    """The way to take this stack's database away: a SQLite file lock, or closing a PostgreSQL database the stack
    created itself (never a database it was merely given)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            raise FaultUnavailable("the gateway's SQLite database is in memory: there is no file to lock")
        return SqliteLock(url.database)
    if url.get_backend_name() == "postgresql" and server_url and created_database:
        return PostgresGate(server_url, created_database)
    raise FaultUnavailable(f"the stack does not own a database it may take away ({url.get_backend_name()})")
