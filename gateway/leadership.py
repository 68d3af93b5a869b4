"""Which gateway process leads: the one that runs the expiry sweeper and the configuration reconciler.

On PostgreSQL a process leads while it holds a session-level advisory lock (`pg_try_advisory_lock`) on a
connection of its own. Every process tries for the lock every LEADER_RETRY_SECONDS; the leader, on the same beat,
checks that its connection still answers and steps down the moment it does not (an outage, a restarted server).
When the leader dies its connection closes and PostgreSQL lets go of the lock, so another process leads within
one beat (a host that vanishes without closing the connection is noticed by TCP keepalives, within about
KEEPALIVE_SECONDS more). Leading is about not doing the work N times, not about correctness: expiry and the
reconciler's pass are conditional statements and row locks in the database, so two processes that both believe
they lead for a moment still expire a hold once and apply a revision once.

Every process keeps that connection, leader or not, so each notices within a beat when the database ends its
sessions (an outage, a restart): it then drops its pools' idle connections (`on_connection_lost`), which the outage
ended too, instead of letting the next request meet one of them.

On SQLite there is one process, and it always leads.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

import psycopg
from prometheus_client import Gauge
from sqlalchemy.engine import make_url

from gateway.metrics import REGISTRY

log = logging.getLogger("gateway.leadership")

# The advisory lock's key: the bytes of "gwleader" as a bigint. Advisory locks are per database, so gateways on
# other databases of one server never meet.
LOCK_KEY = int.from_bytes(b"gwleader", "big") - 2 ** 63
KEEPALIVE_SECONDS = 10
APPLICATION_NAME = "gateway-leadership"  # how the connection shows in pg_stat_activity

LEADS = Gauge("gateway_leader", "1 while this process leads (runs the expiry sweeper and the reconciler); summed "
              "over the live processes of one host it reads 1", registry=REGISTRY, multiprocess_mode="livesum")


def process_name() -> str:
    """This process as logs and the test-mode X-Gateway-Process header name it: host (a container's id) and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Leadership:
    def __init__(self, database_url: str, retry_seconds: float, on_connection_lost=None):
        self.retry_seconds = retry_seconds
        self._on_connection_lost = on_connection_lost  # async () -> None
        self.shared = database_url.startswith("postgresql")
        self.leads = not self.shared
        self._conninfo = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False) \
            if self.shared else None
        self._conn: psycopg.AsyncConnection | None = None
        self._task: asyncio.Task | None = None
        self._trouble: str | None = None  # why the last try failed (logged once per new reason)
        LEADS.set(1 if self.leads else 0)

    async def start(self) -> None:
        """Try once now (so one process leads from the start), then on every beat."""
        if not self.shared:
            return
        await self.try_to_lead()
        self._task = asyncio.create_task(self._beat())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close()  # the lock goes with the connection
        self._change(False, "the process is stopping")

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.retry_seconds)
            await self.try_to_lead()

    async def try_to_lead(self) -> None:
        """Lead if nobody does; if this process leads, check that its lock's connection still answers."""
        try:
            await asyncio.wait_for(self._try(), timeout=max(self.retry_seconds, 1.0) * 2)
        except (psycopg.Error, OSError, asyncio.TimeoutError) as exc:
            why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'no detail'}"
            if why != self._trouble:
                log.warning("leadership: the database did not answer (%s); trying again every %g s", why,
                            self.retry_seconds)
            self._trouble = why
            lost = self._conn is not None  # a connection that worked until now
            await self._close()
            self._change(False, f"its connection to the database failed ({why})")
            if lost and self._on_connection_lost is not None:
                await self._on_connection_lost()

    async def _try(self) -> None:
        if self._conn is None or self._conn.closed or self._conn.broken:
            await self._close()
            self._conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, connect_timeout=5, application_name=APPLICATION_NAME,
                keepalives=1, keepalives_idle=KEEPALIVE_SECONDS // 2, keepalives_interval=1, keepalives_count=3)
        if self.leads:
            await self._conn.execute("SELECT 1")
        else:
            cursor = await self._conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
            row = await cursor.fetchone()
            self._change(bool(row and row[0]), "it took the leader's lock")
        self._trouble = None

    def _change(self, leads: bool, why: str) -> None:
        if leads == self.leads:
            return
        self.leads = leads
        LEADS.set(1 if leads else 0)
        if leads:
            log.info("this process (%s) now leads: it runs the expiry sweeper and the reconciler (%s)",
                     process_name(), why)
        else:
            log.warning("this process (%s) no longer leads: %s", process_name(), why)

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
