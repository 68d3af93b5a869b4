"""The chat path's database work: who is calling, the hold on their org's account, and its settlement.

Every chat request reads its key, org and model, holds its worst-case cost and later finalizes or releases the
hold, each move with its ledger entry and postings and the settlement with its audit event. Two ways to do it,
writing the same rows (the billing reconciliation checks either):

* PostgreSQL (`PgChatStore`): three statements per request, run on the event loop with psycopg's asyncio
  connections in autocommit. The hold and the settlement are each ONE statement of chained data-modifying CTEs:
  atomic, one round trip, and every later part conditional on the first UPDATE having matched, so a refused hold
  or an already-moved reservation writes nothing. No worker thread is involved: thread hand-offs were most of what
  the gateway spent on a request once the statements were few. Settlements that a process asks for while its last
  one is being written go together in the next statement (group settlement, SETTLE_MANY): one round trip, one
  commit and one update of each account for all of them, each reservation still moved only while it is pending.
  Requests of one org wait on its account's row in turn, so this is most of what the database spends on a busy org.
* Other databases (SQLite, in-process): the ledger's step-by-step functions in one transaction each, on a worker
  thread (`ChatStore`).
"""
from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import AsyncIterator

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import (JSON, BigInteger, String, Values, bindparam, column, func, insert, literal_column, select,
                        true, update, values)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url

from gateway import audit, context
from gateway.errors import ApiError
from gateway.models import ApiKey, Model, Org, utcnow
from gateway.security import new_id
from gateway.services import billing_counts, ledger

# ---- the statements ------------------------------------------------------------------------------------------------
# Each is written once with SQLAlchemy Core. SQLite runs them through SQLAlchemy (the ledger's functions); for
# PostgreSQL they are compiled once, here, to psycopg's SQL, and run on psycopg's asyncio connections.

KEYS, ORGS, MODELS = ApiKey.__table__, Org.__table__, Model.__table__
ACCOUNTS, RESERVATIONS, ENTRIES, POSTINGS = ledger.ACCOUNTS, ledger.RESERVATIONS, ledger.ENTRIES, ledger.POSTINGS
EVENTS = audit.EVENTS

# Who is calling (by key hash), their org, and the model they ask for (None columns when there is no such model).
ADMISSION = (select(KEYS.c.id, KEYS.c.org_id, ORGS.c.slug, KEYS.c.prefix, KEYS.c.revoked_at,
                    ORGS.c.name.label("org_name"), ORGS.c.account_id, ORGS.c.budget_limit_micros,
                    ORGS.c.allowed_models, ORGS.c.rate_limit_requests, ORGS.c.rate_limit_window_seconds,
                    MODELS.c.name.label("model_name"), MODELS.c.prompt_price_per_1k_micros,
                    MODELS.c.completion_price_per_1k_micros, MODELS.c.backends, MODELS.c.default_max_tokens,
                    MODELS.c.content_part_tokens)
             .select_from(KEYS.join(ORGS, ORGS.c.id == KEYS.c.org_id)
                          .outerjoin(MODELS, MODELS.c.name == bindparam("model")))
             .where(KEYS.c.key_hash == bindparam("key_hash")))


def _constant(text: str):
    return literal_column(f"'{text}'")


def _moves(buckets: list) -> Values:
    """A ledger entry's postings as rows (bucket, amount), beside the rows they are computed from."""
    return values(column("bucket", String), column("amount", BigInteger), name="moves").data(
        [(literal_column(f"'{bucket}'"), amount) for bucket, amount in buckets]).lateral()


def _hold_statement():
    """The ledger's HOLD (credit and budget rule), then the reservation, its entry and its two postings, each
    written only when the part before it was."""
    held = ledger.HOLD.returning(ACCOUNTS.c.id).cte("held")
    reservation = insert(RESERVATIONS).from_select(
        ["id", "account_id", "amount_micros", "status", "expires_at", "created_at", "request_id"],
        select(bindparam("reservation_id"), held.c.id, ledger.AMOUNT, _constant("pending"),
               bindparam("expires_at", type_=RESERVATIONS.c.expires_at.type), bindparam("now"),
               bindparam("request_id"))).returning(RESERVATIONS.c.id).cte("reservation")
    entry = insert(ENTRIES).from_select(
        ["id", "kind", "account_id", "reservation_id", "request_id", "created_at"],
        select(bindparam("entry_id"), _constant("reserve"), bindparam("account"), reservation.c.id,
               bindparam("request_id"), bindparam("now", type_=ENTRIES.c.created_at.type))
    ).returning(ENTRIES.c.id).cte("entry")
    moves = _moves([("available", -ledger.AMOUNT), ("held", ledger.AMOUNT)])
    moves = select(entry.c.id, bindparam("account"), moves.c.bucket, moves.c.amount).select_from(
        entry.join(moves, true()))
    return insert(POSTINGS).from_select(["entry_id", "account_id", "bucket", "amount_micros"], moves).returning(
        POSTINGS.c.entry_id)


class PgStatement:
    """A Core statement compiled once for psycopg: `%(name)s` parameters, typed where PostgreSQL needs it, and the
    values of the parameters SQLAlchemy made for the statement's constants."""

    def __init__(self, statement):
        compiled = statement.compile(dialect=postgresql.psycopg.dialect())
        self.sql = str(compiled)
        self.constants = {name: value for name, value in compiled.params.items() if value is not None}

    def params(self, values: dict) -> dict:
        return {**self.constants, **values} if self.constants else values


_PG_ADMISSION = PgStatement(ADMISSION)
_PG_HOLD = PgStatement(_hold_statement())

# The settlement: ledger.MOVE_PENDING, then the account, the entry, its non-zero postings and the audit event, each
# only for a reservation moved; for many settlements at once, one row of `asked` each (arrays, so that one prepared statement
# serves any number): the same rules (ledger.MOVE_PENDING: pending and unexpired at the settlement's own time), and
# the same rows written per reservation moved; each account is updated once, by the sum of its moves, after its row
# is locked in id order (two processes' statements never wait on each other's accounts in a circle).
SETTLE_FIELDS = ("reservation", "actual", "new_status", "kind", "now", "entry_id", "request_id", "actor_type",
                 "actor_id", "target", "outcome", "reason", "trace_id", "org", "details")
_SETTLE_TYPES = {"actual": "bigint", "now": "timestamptz"}
SETTLE_MANY = f"""
WITH asked AS (
    SELECT * FROM unnest({", ".join(f"%({f})s::{_SETTLE_TYPES.get(f, 'text')}[]" for f in SETTLE_FIELDS)})
        AS a({", ".join(SETTLE_FIELDS)})),
moved AS (
    UPDATE reservations AS r SET status = a.new_status, settled_at = a.now, actual_micros = a.actual,
        overrun_micros = CASE WHEN a.actual > r.amount_micros THEN a.actual - r.amount_micros END
    FROM asked AS a
    WHERE r.id = a.reservation AND r.status = 'pending' AND r.expires_at > a.now
    RETURNING r.id, r.account_id, r.amount_micros, coalesce(a.actual, 0) AS spent,
        r.amount_micros - coalesce(a.actual, 0) AS returned, a.kind, a.now, a.entry_id, a.request_id, a.actor_type,
        a.actor_id, a.target, a.outcome, a.reason, a.trace_id, a.org, a.details),
sums AS (
    SELECT account_id, sum(amount_micros) AS held, sum(spent) AS spent, sum(returned) AS returned
    FROM moved GROUP BY account_id),
locked AS (
    SELECT c.id FROM accounts AS c WHERE c.id IN (SELECT account_id FROM sums) ORDER BY c.id FOR UPDATE OF c),
account AS (
    UPDATE accounts AS c SET held_micros = c.held_micros - s.held, spent_micros = c.spent_micros + s.spent,
        available_micros = c.available_micros + s.returned
    FROM sums AS s, locked AS l WHERE c.id = s.account_id AND l.id = c.id RETURNING c.id),
entry AS (
    INSERT INTO ledger_entries (id, kind, account_id, reservation_id, request_id, created_at)
    SELECT entry_id, kind, account_id, id, request_id, now FROM moved RETURNING id),
postings AS (
    INSERT INTO ledger_postings (entry_id, account_id, bucket, amount_micros)
    SELECT m.entry_id, m.account_id, p.bucket, p.amount
    FROM moved AS m JOIN entry AS e ON e.id = m.entry_id
        CROSS JOIN LATERAL (VALUES ('held', -m.amount_micros), ('spent', m.spent), ('available', m.returned))
            AS p(bucket, amount)
    WHERE p.amount <> 0 RETURNING entry_id),
event AS (
    INSERT INTO audit_events (at, actor_type, actor_id, action, target, outcome, reason, request_id, trace_id, org,
                              details)
    SELECT now, actor_type, actor_id, 'chat.completion', target, outcome, reason, request_id, trace_id, org,
        CAST(details AS json)
    FROM moved RETURNING id)
SELECT id FROM moved
"""
SETTLE_BATCH = 64  # settlements per statement at most


def _settle_params(reservation_id: str, actual: int | None, *, actor: audit.Actor, target: str, org: str,
                   outcome: str = "allowed", reason: str | None = None, details: dict | None = None) -> dict:
    return {"new_status": "released" if actual is None else "finalized",
            "kind": "release" if actual is None else "finalize", "actual": actual, "now": utcnow(),
            "reservation": reservation_id, "entry_id": new_id("le"), "request_id": context.current_request_id(),
            "actor_type": actor.type, "actor_id": actor.id, "target": target, "outcome": outcome, "reason": reason,
            "trace_id": context.current_trace_id(), "org": org, "details": json.dumps(details) if details else None}


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
        reason, details), as one change; False when the reservation could no longer move (nothing was written).
        An `actual` above the hold is charged in full, the difference taken from the available credit and recorded
        as the reservation's `overrun_micros`."""
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
    fails at once, as a 503, instead of waiting for a pool to refill) and dropped when a statement broke it. When
    one is found broken or none can be opened, the database went away: the idle ones are closed, and those in use
    are closed when given back (a new generation begins)."""

    def __init__(self, db, in_thread, *, size: int = 16, connect_timeout: int = 5, wait_seconds: float = 30):
        super().__init__(db, in_thread)
        self._wait_seconds = wait_seconds
        self._conninfo = make_url(db.url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._connect_timeout = connect_timeout
        self._idle: list[psycopg.AsyncConnection] = []
        self._generation = 0  # one more each time the database went away
        self._slots = asyncio.Semaphore(size)
        self._to_settle: list[tuple[dict, asyncio.Future]] = []  # asked while a statement was settling others
        self._settler: asyncio.Task | None = None

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
            generation = self._generation
            try:
                conn = self._idle.pop() if self._idle else await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, row_factory=namedtuple_row,
                    connect_timeout=self._connect_timeout, application_name=APPLICATION_NAME)
            except psycopg.OperationalError:
                await self._database_went_away()
                raise
            reusable = False
            try:
                yield conn
                reusable = True
            except psycopg.Error:
                reusable = True  # a refused statement leaves an autocommit connection usable, unless it broke it
                raise
            finally:
                if conn.broken:  # the server went away: the other connections are as dead as this one
                    await self._database_went_away()
                if reusable and generation == self._generation and not conn.broken and not conn.closed and \
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

    async def _database_went_away(self) -> None:
        self._generation += 1
        await self.close()

    async def _one(self, statement: PgStatement, params: dict, *, again_if_broken: bool = False):
        """Run one statement and return its first row. `again_if_broken`: for reads, run it once more on a new
        connection when the pooled one turned out dead (the first request after a database restart)."""
        for last_try in (not again_if_broken, True):
            conn = None  # stays None when no connection could be opened
            try:
                async with self._connection() as conn:
                    cursor = await conn.execute(statement.sql, statement.params(params))
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
            "amount": amount, "budget_limit": budget_limit, "account": account_id,
            "reservation_id": reservation_id, "expires_at": now + timedelta(seconds=ttl_seconds), "now": now,
            "request_id": request_id, "entry_id": new_id("le")})
        if placed is None:
            return None
        billing_counts.count("reserve")
        return reservation_id

    async def settle(self, reservation_id: str, actual: int | None, **audited) -> bool:
        done = asyncio.get_running_loop().create_future()
        self._to_settle.append((_settle_params(reservation_id, actual, **audited), done))
        if self._settler is None:
            self._settler = asyncio.ensure_future(self._settle_waiting())
        if not await asyncio.shield(done):  # written (or not) whether this request is cancelled or not
            return False
        billing_counts.count("release" if actual is None else "finalize")
        return True

    async def _settle_waiting(self) -> None:
        """Settle what is waiting, SETTLE_BATCH at a time, until nothing is (group settlement)."""
        try:
            while self._to_settle:
                batch, seen, later = [], set(), []
                for item in self._to_settle:  # a reservation asked twice: the second waits for the next statement
                    if len(batch) < SETTLE_BATCH and item[0]["reservation"] not in seen:
                        seen.add(item[0]["reservation"])
                        batch.append(item)
                    else:
                        later.append(item)
                self._to_settle = later
                await self._settle_batch(batch)
        finally:
            self._settler = None
            for _, done in self._to_settle:  # only when cancelled (the process stopping)
                done.cancel()
            self._to_settle = []

    async def _settle_batch(self, batch: list[tuple[dict, asyncio.Future]]) -> None:
        try:
            try:
                moved = await self._many(SETTLE_MANY, {f: [params[f] for params, _ in batch] for f in SETTLE_FIELDS})
            except psycopg.Error as exc:
                if len(batch) == 1 or isinstance(exc, psycopg.OperationalError):
                    raise
                for item in batch:  # one settlement's fault (a constraint): the others are written without it
                    await self._settle_batch([item])
                return
        except Exception as exc:
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        except BaseException:  # cancelled: whether it was written is unknown, as for a statement cut short
            for _, done in batch:
                done.cancel()
            raise
        for params, done in batch:
            if not done.done():
                done.set_result(params["reservation"] in moved)

    async def _many(self, sql: str, params: dict) -> set:
        """Run one statement; the first column of every row it returns."""
        async with self._connection() as conn:
            cursor = await conn.execute(sql, params)
            return {row[0] for row in await cursor.fetchall()}


def make_chat_store(db, in_thread, *, connections: int = 16) -> ChatStore:
    return PgChatStore(db, in_thread, size=connections) if db.dialect == "postgresql" else ChatStore(db, in_thread)


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
                ledger.finalize(session, reservation_id, actual, context.current_request_id(), beyond_hold=True)
            audit.record(session, audited.pop("actor"), "chat.completion", **audited)
        return True
    except ApiError:  # not pending (expired, moved) or unknown: the transaction rolled back
        return False


def _why_not_settled_sync(db, reservation_id: str, actual: int | None) -> str:
    with db.sessions() as session:
        try:
            ledger.load_reservation(session, reservation_id)
            return ledger.not_pending(session, reservation_id, "released" if actual is None else "finalized").message
        except ApiError as refusal:
            return refusal.message


def _shortfall_sync(db, account_id: str, amount: int, budget_limit: int | None) -> ledger.Shortfall:
    with db.sessions() as session:
        return ledger.shortfall(session, account_id, amount, budget_limit)
