"""The chat path's database work: who is calling, the hold on their org's account, and its settlement.

Every chat request reads its key, org and model, holds its worst-case cost and later finalizes or releases the
hold, each move with its ledger entry and postings and the settlement with its audit event. Two ways to do it,
writing the same rows (the billing reconciliation checks either):

* PostgreSQL (`PgChatStore`): three statements per request, run on the event loop with psycopg's asyncio
  connections in autocommit. The hold and the settlement are each ONE statement of chained data-modifying CTEs:
  atomic, one round trip, and every later part conditional on the first UPDATE having matched, so a refused hold
  or an already-moved reservation writes nothing. No worker thread is involved: thread hand-offs were most of what
  the gateway spent on a request once the statements were few.
* Other databases (SQLite, in-process): the ledger's step-by-step functions in one transaction each, on a worker
  thread (`ChatStore`).
"""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import AsyncIterator

import psycopg
from psycopg.rows import namedtuple_row
from psycopg.types.json import Json
from sqlalchemy import bindparam, select
from sqlalchemy.engine import make_url

from gateway import audit, context
from gateway.errors import ApiError
from gateway.models import ApiKey, Model, Org, utcnow
from gateway.security import new_id
from gateway.services import ledger

# ---- the statements ------------------------------------------------------------------------------------------------

KEYS, ORGS, MODELS = ApiKey.__table__, Org.__table__, Model.__table__
_ADMISSION_COLUMNS = (KEYS.c.id, KEYS.c.org_id, ORGS.c.slug, KEYS.c.prefix, KEYS.c.revoked_at,
                      ORGS.c.name.label("org_name"), ORGS.c.account_id, ORGS.c.budget_limit_micros,
                      ORGS.c.allowed_models, ORGS.c.rate_limit_requests, ORGS.c.rate_limit_window_seconds,
                      MODELS.c.name.label("model_name"), MODELS.c.prompt_price_per_1k_micros,
                      MODELS.c.completion_price_per_1k_micros, MODELS.c.backends, MODELS.c.default_max_tokens)
# Who is calling (by key hash), their org, and the model they ask for (None columns when there is no such model).
ADMISSION = (select(*_ADMISSION_COLUMNS)
             .select_from(KEYS.join(ORGS, ORGS.c.id == KEYS.c.org_id)
                          .outerjoin(MODELS, MODELS.c.name == bindparam("model")))
             .where(KEYS.c.key_hash == bindparam("key_hash")))

_PG_ADMISSION = """
SELECT k.id, k.org_id, o.slug, k.prefix, k.revoked_at, o.name AS org_name, o.account_id, o.budget_limit_micros,
       o.allowed_models, o.rate_limit_requests, o.rate_limit_window_seconds, m.name AS model_name,
       m.prompt_price_per_1k_micros, m.completion_price_per_1k_micros, m.backends, m.default_max_tokens
FROM api_keys k JOIN orgs o ON o.id = k.org_id LEFT OUTER JOIN models m ON m.name = %(model)s
WHERE k.key_hash = %(key_hash)s
"""

_PG_HOLD = """
WITH held AS (
    UPDATE accounts SET available_micros = available_micros - %(amount)s, held_micros = held_micros + %(amount)s
    WHERE id = %(account_id)s AND available_micros >= %(amount)s
      AND (CAST(%(budget_limit)s AS BIGINT) IS NULL OR held_micros + spent_micros + %(amount)s <= %(budget_limit)s)
    RETURNING id
), reservation AS (
    INSERT INTO reservations (id, account_id, amount_micros, status, expires_at, created_at, request_id)
    SELECT %(reservation_id)s, id, %(amount)s, 'pending', %(expires_at)s, %(now)s, %(request_id)s FROM held
    RETURNING id
), entry AS (
    INSERT INTO ledger_entries (id, kind, account_id, reservation_id, request_id, created_at)
    SELECT %(entry_id)s, 'reserve', %(account_id)s, id, %(request_id)s, %(now)s FROM reservation
    RETURNING id
)
INSERT INTO ledger_postings (entry_id, account_id, bucket, amount_micros)
SELECT entry.id, %(account_id)s, moves.bucket, moves.amount
FROM entry CROSS JOIN (VALUES ('available', -CAST(%(amount)s AS BIGINT)), ('held', CAST(%(amount)s AS BIGINT)))
    AS moves (bucket, amount)
RETURNING entry_id
"""

# Finalize (actual is a number) or release (actual is NULL): the reservation moves only while it is pending,
# unexpired and holds at least `actual`; the account, the entry, its non-zero postings and the audit event follow.
_PG_SETTLE = """
WITH moved AS (
    UPDATE reservations SET status = %(status)s, settled_at = %(now)s, actual_micros = CAST(%(actual)s AS BIGINT)
    WHERE id = %(reservation_id)s AND status = 'pending' AND expires_at > %(now)s
      AND amount_micros >= COALESCE(CAST(%(actual)s AS BIGINT), 0)
    RETURNING account_id, amount_micros, amount_micros - COALESCE(CAST(%(actual)s AS BIGINT), 0) AS returned
), account AS (
    UPDATE accounts SET held_micros = accounts.held_micros - moved.amount_micros,
        spent_micros = accounts.spent_micros + COALESCE(CAST(%(actual)s AS BIGINT), 0),
        available_micros = accounts.available_micros + moved.returned
    FROM moved WHERE accounts.id = moved.account_id
    RETURNING accounts.id
), entry AS (
    INSERT INTO ledger_entries (id, kind, account_id, reservation_id, request_id, created_at)
    SELECT %(entry_id)s, %(kind)s, account_id, %(reservation_id)s, %(request_id)s, %(now)s FROM moved
    RETURNING id, account_id
), postings AS (
    INSERT INTO ledger_postings (entry_id, account_id, bucket, amount_micros)
    SELECT entry.id, entry.account_id, moves.bucket, moves.amount
    FROM entry CROSS JOIN moved CROSS JOIN LATERAL (VALUES ('held', -moved.amount_micros),
        ('spent', COALESCE(CAST(%(actual)s AS BIGINT), 0)), ('available', moved.returned)) AS moves (bucket, amount)
    WHERE moves.amount <> 0
    RETURNING entry_id
), event AS (
    INSERT INTO audit_events (at, actor_type, actor_id, action, target, outcome, reason, request_id, trace_id, org,
                              details)
    SELECT %(now)s, %(actor_type)s, %(actor_id)s, 'chat.completion', %(target)s, %(outcome)s, %(reason)s,
           %(request_id)s, %(trace_id)s, %(org)s, %(details)s
    FROM moved
    RETURNING id
)
SELECT account_id FROM moved
"""


def _settle_params(reservation_id: str, actual: int | None, *, actor: audit.Actor, target: str, org: str,
                   outcome: str = "allowed", reason: str | None = None, details: dict | None = None) -> dict:
    return {"status": "released" if actual is None else "finalized",
            "kind": "release" if actual is None else "finalize", "actual": actual, "now": utcnow(),
            "reservation_id": reservation_id, "entry_id": new_id("le"), "request_id": context.current_request_id(),
            "actor_type": actor.type, "actor_id": actor.id, "target": target, "outcome": outcome, "reason": reason,
            "trace_id": context.current_trace_id(), "org": org, "details": Json(details) if details else None}


# ---- the two stores ------------------------------------------------------------------------------------------------

class ChatStore:
    """The chat path's database work as coroutines. This base runs everything on worker threads (`in_thread`) with
    SQLAlchemy; PgChatStore overrides the three statements of every request."""

    def __init__(self, db, in_thread):
        self.db = db
        self._in_thread = in_thread  # async (fn, *args) -> fn(*args) on a worker thread

    async def close(self) -> None:
        pass

    async def lookup(self, key_hash: str, model: str):
        return await self._in_thread(_lookup_sync, self.db, key_hash, model)

    async def hold(self, account_id: str, amount: int, ttl_seconds: float, *, budget_limit: int | None,
                   request_id: str) -> str | None:
        """Hold `amount`; the reservation id, or None when the credit or the budget does not allow it."""
        return await self._in_thread(_hold_sync, self.db, account_id, amount, ttl_seconds, budget_limit, request_id)

    async def settle(self, reservation_id: str, actual: int | None, **audited) -> bool:
        """Finalize at `actual` (or release, when None) and audit it (`audited`: actor, target, org, outcome,
        reason, details), as one change; False when the reservation could no longer move (nothing was written)."""
        return await self._in_thread(_settle_sync, self.db, reservation_id, actual, audited)

    async def shortfall(self, account_id: str, amount: int, budget_limit: int | None) -> ledger.Shortfall:
        """Why a hold of `amount` was refused, from the account's balances as they are now."""
        return await self._in_thread(_shortfall_sync, self.db, account_id, amount, budget_limit)

    async def why_not_settled(self, reservation_id: str, actual: int | None) -> str:
        return await self._in_thread(_why_not_settled_sync, self.db, reservation_id, actual)


APPLICATION_NAME = "gateway-chat"  # how these connections show in pg_stat_activity


class PgChatStore(ChatStore):
    """The three statements of every request on PostgreSQL, on the event loop, over a small pool of asyncio
    autocommit connections. A connection is opened when none is idle (so while the database is down every request
    fails at once, as a 503, instead of waiting for a pool to refill) and dropped when a statement broke it."""

    def __init__(self, db, in_thread, *, size: int = 16, connect_timeout: int = 5, wait_seconds: float = 30):
        super().__init__(db, in_thread)
        self._wait_seconds = wait_seconds
        self._conninfo = make_url(db.url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._connect_timeout = connect_timeout
        self._idle: list[psycopg.AsyncConnection] = []
        self._slots = asyncio.Semaphore(size)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        try:
            if self._slots.locked():  # all in use: wait, but not for ever (wait_for costs a task, so only then)
                await asyncio.wait_for(self._slots.acquire(), self._wait_seconds)
            else:
                await self._slots.acquire()
        except asyncio.TimeoutError:  # answered as 503 database_unavailable, like SQLAlchemy's pool timeout
            raise psycopg.OperationalError(f"no database connection came free within {self._wait_seconds:g} s")
        try:
            conn = self._idle.pop() if self._idle else await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, row_factory=namedtuple_row, connect_timeout=self._connect_timeout,
                application_name=APPLICATION_NAME)
            reusable = False
            try:
                yield conn
                reusable = True
            except psycopg.Error:
                reusable = True  # a refused statement leaves an autocommit connection usable, unless it broke it
                raise
            finally:
                if conn.broken:  # the server went away: the other idle connections are as dead as this one
                    await self.close()
                if reusable and not conn.broken and not conn.closed and \
                        conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                    self._idle.append(conn)
                else:
                    await conn.close()
        finally:
            self._slots.release()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()

    async def _one(self, statement: str, params: dict, *, again_if_broken: bool = False):
        """Run one statement and return its first row. `again_if_broken`: for reads, run it once more on a new
        connection when the pooled one turned out dead (the first request after a database restart)."""
        for last_try in (not again_if_broken, True):
            conn = None  # stays None when no connection could be opened
            try:
                async with self._connection() as conn:
                    cursor = await conn.execute(statement, params)
                    return await cursor.fetchone()
            except psycopg.OperationalError:
                if last_try or conn is None or not conn.broken:
                    raise

    async def lookup(self, key_hash: str, model: str):
        return await self._one(_PG_ADMISSION, {"key_hash": key_hash, "model": model}, again_if_broken=True)

    async def hold(self, account_id: str, amount: int, ttl_seconds: float, *, budget_limit: int | None,
                   request_id: str) -> str | None:
        now = utcnow()
        reservation_id = new_id("res")
        placed = await self._one(_PG_HOLD, {
            "amount": amount, "budget_limit": budget_limit, "account_id": account_id,
            "reservation_id": reservation_id, "expires_at": now + timedelta(seconds=ttl_seconds), "now": now,
            "request_id": request_id, "entry_id": new_id("le")})
        return reservation_id if placed is not None else None

    async def settle(self, reservation_id: str, actual: int | None, **audited) -> bool:
        return await self._one(_PG_SETTLE, _settle_params(reservation_id, actual, **audited)) is not None


def make_chat_store(db, in_thread) -> ChatStore:
    return PgChatStore(db, in_thread) if db.dialect == "postgresql" else ChatStore(db, in_thread)


# ---- the same work with SQLAlchemy, on a worker thread ---------------------------------------------------------------

def _lookup_sync(db, key_hash: str, model: str):
    with db.reading() as conn:
        return conn.execute(ADMISSION, {"key_hash": key_hash, "model": model}).first()


def _hold_sync(db, account_id: str, amount: int, ttl_seconds: float, budget_limit: int | None,
               request_id: str) -> str | None:
    with db.transaction() as session:
        try:
            return ledger.reserve(session, account_id, amount, ttl_seconds, budget_limit=budget_limit,
                                  request_id=request_id).id
        except ledger.Shortfall:  # its conditional UPDATE matched nothing: nothing was written
            return None


def _settle_sync(db, reservation_id: str, actual: int | None, audited: dict) -> bool:
    try:
        with db.transaction() as session:
            if actual is None:
                ledger.release(session, reservation_id, context.current_request_id())
            else:
                ledger.finalize(session, reservation_id, actual, context.current_request_id())
            audit.record(session, audited.pop("actor"), "chat.completion", **audited)
        return True
    except ApiError:  # not pending (expired, moved) or unknown: the transaction rolled back
        return False


def _why_not_settled_sync(db, reservation_id: str, actual: int | None) -> str:
    with db.sessions() as session:
        try:
            reservation = ledger.load_reservation(session, reservation_id)
            if actual is not None and actual > reservation.amount_micros:
                return ledger.actual_exceeds_reserved(reservation, actual).message
            return ledger.not_pending(session, reservation_id, "released" if actual is None else "finalized").message
        except ApiError as refusal:
            return refusal.message


def _shortfall_sync(db, account_id: str, amount: int, budget_limit: int | None) -> ledger.Shortfall:
    with db.sessions() as session:
        account = ledger.get_account(session, account_id)
        if budget_limit is not None and account.held_micros + account.spent_micros + amount > budget_limit:
            return ledger.Shortfall("budget_exceeded", account)
        return ledger.Shortfall("insufficient_credit", account)
