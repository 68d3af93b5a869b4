"""The chat path's database work: who is calling, the hold on their org's account, and its settlement.

Every chat request reads its key, org and model, holds its worst-case cost and later finalizes or releases the
hold, each move with its ledger entry and postings and the settlement with its audit event. Two ways to do it,
writing the same rows (the billing reconciliation checks either):

* PostgreSQL (`PgChatStore`): three statements per request, run on the event loop with psycopg's asyncio
  connections in autocommit. The hold and the settlement are each ONE statement of chained data-modifying CTEs:
  atomic, one round trip, and every later part conditional on the first UPDATE having matched, so a refused hold
  or an already-moved reservation writes nothing. No worker thread is involved: thread hand-offs were most of what
  the gateway spent on a request once the statements were few. Holds (settlements) that a process asks for while
  its last statement of them runs go together in the next one (`StatementGroup`: HOLD_MANY, SETTLE_MANY): one round
  trip, one commit and one update of each account for all of them, each judged as if alone in turn. Requests of one
  org wait on its account's row one after another, so one statement per request was most of what the database
  spent on a busy org.
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
from sqlalchemy import Integer, String, bindparam, func, literal_column, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.visitors import replacement_traverse
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url

from gateway import audit, context
from gateway.errors import ApiError
from gateway.models import ApiKey, Model, Org, utcnow
from gateway.security import new_id
from gateway.services import billing_counts, ledger

# ---- the statements ------------------------------------------------------------------------------------------------
# SQLite runs the ledger's functions through SQLAlchemy. For PostgreSQL the admission is compiled once, here, to
# psycopg's SQL; the hold and the settlement, written for many at once, take the ledger's rules of a hold from it.

KEYS, ORGS, MODELS = ApiKey.__table__, Org.__table__, Model.__table__

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
# The same for many requests at once (a row of `asked` each, numbered by `ord`), for the lookups grouped on PostgreSQL.
_ASKED = func.unnest(bindparam("ord", type_=ARRAY(Integer)), bindparam("key_hash", type_=ARRAY(String)),
                     bindparam("model", type_=ARRAY(String))).table_valued("ord", "key_hash", "model") \
    .render_derived(name="asked")
ADMISSIONS = (select(_ASKED.c.ord, *ADMISSION.selected_columns)
              .select_from(_ASKED.join(KEYS, KEYS.c.key_hash == _ASKED.c.key_hash)
                           .join(ORGS, ORGS.c.id == KEYS.c.org_id)
                           .outerjoin(MODELS, MODELS.c.name == _ASKED.c.model)))


class PgStatement:
    """A Core statement compiled once for psycopg: `%(name)s` parameters, typed where PostgreSQL needs it, and the
    values of the parameters SQLAlchemy made for the statement's constants."""

    def __init__(self, statement):
        compiled = statement.compile(dialect=postgresql.psycopg.dialect())
        self.sql = str(compiled)
        self.constants = {name: value for name, value in compiled.params.items() if value is not None}

    def params(self, values: dict) -> dict:
        return {**self.constants, **values} if self.constants else values


_PG_ADMISSIONS = PgStatement(ADMISSIONS)

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


def _rule(expression) -> str:
    """One of the ledger's rules of a hold (ledger.HAS_CREDIT, ledger.WITHIN_BUDGET) as SQL about an asked hold `a`
    and the account as the holds before it in the same statement left it, `j`."""
    asked = {"amount": literal_column("a.amount"), "budget_limit": literal_column("a.budget_limit")}
    expression = replacement_traverse(
        expression, {}, lambda e: asked.get(e.key) if isinstance(e, BindParameter) else None)
    sql = str(expression.compile(dialect=postgresql.psycopg.dialect(), compile_kwargs={"literal_binds": True}))
    return f"({sql.replace('accounts.', 'j.')})"


# The hold (ledger.HOLD, then the reservation, its entry and its two postings) for many holds at once, one row of
# `asked` each. Each account's row is locked (in id order), then its holds are judged one after another in the order
# they were asked, each against the account as the ones before it left it (the recursive `judged`): exactly what the
# same holds one statement each would have decided. The account is updated once, by the sum of the holds placed.
HOLD_FIELDS = ("ord", "account", "amount", "budget_limit", "reservation_id", "expires_at", "now", "request_id",
               "entry_id")
_HOLD_TYPES = {"ord": "integer", "amount": "bigint", "budget_limit": "bigint", "expires_at": "timestamptz",
               "now": "timestamptz"}
HOLD_MANY = f"""
WITH RECURSIVE asked AS (
    SELECT a.*, row_number() OVER (PARTITION BY a.account ORDER BY a.ord) AS rn
    FROM unnest({", ".join(f"%({f})s::{_HOLD_TYPES.get(f, 'text')}[]" for f in HOLD_FIELDS)})
        AS a({", ".join(HOLD_FIELDS)})),
locked AS (
    SELECT c.id, c.available_micros, c.held_micros, c.spent_micros FROM accounts AS c
    WHERE c.id IN (SELECT account FROM asked) ORDER BY c.id FOR NO KEY UPDATE OF c),
judged AS (
    SELECT l.id AS account, CAST(0 AS bigint) AS rn, l.available_micros, l.held_micros, l.spent_micros,
        false AS placed
    FROM locked AS l
    UNION ALL
    SELECT j.account, a.rn, j.available_micros - CASE WHEN v.ok THEN a.amount ELSE 0 END,
        j.held_micros + CASE WHEN v.ok THEN a.amount ELSE 0 END, j.spent_micros, v.ok
    FROM judged AS j JOIN asked AS a ON a.account = j.account AND a.rn = j.rn + 1
        CROSS JOIN LATERAL (SELECT {_rule(ledger.HAS_CREDIT)} AND {_rule(ledger.WITHIN_BUDGET)} AS ok) AS v),
placed AS (
    SELECT a.* FROM asked AS a JOIN judged AS j ON j.account = a.account AND j.rn = a.rn WHERE j.placed),
sums AS (SELECT account, sum(amount) AS amount FROM placed GROUP BY account),
held AS (
    UPDATE accounts AS c SET available_micros = c.available_micros - s.amount, held_micros = c.held_micros + s.amount
    FROM sums AS s WHERE c.id = s.account RETURNING c.id),
reservation AS (
    INSERT INTO reservations (id, account_id, amount_micros, status, expires_at, created_at, request_id)
    SELECT reservation_id, account, amount, 'pending', expires_at, now, request_id FROM placed RETURNING id),
entry AS (
    INSERT INTO ledger_entries (id, kind, account_id, reservation_id, request_id, created_at)
    SELECT p.entry_id, 'reserve', p.account, r.id, p.request_id, p.now
    FROM placed AS p JOIN reservation AS r ON r.id = p.reservation_id RETURNING id),
postings AS (
    INSERT INTO ledger_postings (entry_id, account_id, bucket, amount_micros)
    SELECT p.entry_id, p.account, m.bucket, m.amount
    FROM placed AS p JOIN entry AS e ON e.id = p.entry_id
        CROSS JOIN LATERAL (VALUES ('available', -p.amount), ('held', p.amount)) AS m(bucket, amount)
    RETURNING entry_id)
SELECT reservation_id FROM placed
"""
GROUP_MAX = 64  # holds or settlements per statement at most


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
        self._lookups = StatementGroup(self, _PG_ADMISSIONS.sql, ("ord", "key_hash", "model"), None, reads=True)
        self._holds = StatementGroup(self, HOLD_MANY, HOLD_FIELDS, "reservation_id")
        self._settlements = StatementGroup(self, SETTLE_MANY, SETTLE_FIELDS, "reservation")

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

    async def _rows(self, sql: str, params: dict, *, again_if_broken: bool = False) -> list:
        """Run one statement and return its rows. `again_if_broken`: for reads, run it once more on a new connection
        when the pooled one turned out dead (the first request after a database restart)."""
        for last_try in (not again_if_broken, True):
            conn = None  # stays None when no connection could be opened
            try:
                async with self._connection() as conn:
                    cursor = await conn.execute(sql, params)
                    return await cursor.fetchall()
            except psycopg.OperationalError:
                if last_try or conn is None or not conn.broken:
                    raise

    async def _one(self, statement: PgStatement, params: dict, *, again_if_broken: bool = False):
        """Run one statement and return its first row (None: none)."""
        rows = await self._rows(statement.sql, statement.params(params), again_if_broken=again_if_broken)
        return rows[0] if rows else None

    async def _many(self, sql: str, params: dict, *, again_if_broken: bool = False) -> dict:
        """Run one statement; the rows it returns by their first column."""
        return {row[0]: row for row in await self._rows(sql, params, again_if_broken=again_if_broken)}

    async def lookup(self, key_hash: str, model: str):
        return await self._lookups({"key_hash": key_hash, "model": model})

    async def hold(self, account_id: str, amount: int, ttl_seconds: float, *, budget_limit: int | None,
                   request_id: str) -> str | None:
        now = utcnow()
        reservation_id = new_id("res")
        if await self._holds({
                "account": account_id, "amount": amount, "budget_limit": budget_limit,
                "reservation_id": reservation_id, "expires_at": now + timedelta(seconds=ttl_seconds), "now": now,
                "request_id": request_id, "entry_id": new_id("le")}) is None:
            return None
        billing_counts.count("reserve")
        return reservation_id

    async def settle(self, reservation_id: str, actual: int | None, **audited) -> bool:
        if await self._settlements(_settle_params(reservation_id, actual, **audited)) is None:
            return False
        billing_counts.count("release" if actual is None else "finalize")
        return True


class StatementGroup:
    """Lookups (holds, settlements) asked while this process's last statement of them is running wait, and go together
    in the next one, GROUP_MAX at most: one round trip, and for writes one commit and one update of each account for
    all of them. The statement returns a row for each one it found (placed, moved), first column `key` (None: `ord`,
    the asks' positions in the statement); `reads`: run again on a new connection if the pooled one was dead."""

    def __init__(self, store: PgChatStore, sql: str, fields: tuple[str, ...], key: str | None, *,
                 reads: bool = False):
        self.store, self.sql, self.fields, self.key, self.reads = store, sql, fields, key, reads
        self.waiting: list[tuple[dict, asyncio.Future]] = []
        self.task: asyncio.Task | None = None

    async def __call__(self, params: dict):
        """Its row, or None when there is none (refused, not moved); raises what the statement raised."""
        done = asyncio.get_running_loop().create_future()
        self.waiting.append((params, done))
        if self.task is None:
            self.task = asyncio.ensure_future(self._run())
        return await asyncio.shield(done)  # written (or not) whether the request is cancelled meanwhile or not

    async def _run(self) -> None:
        try:
            while self.waiting:
                batch, seen, later = [], set(), []
                for item in self.waiting:  # one asked twice at once: the second waits for the next statement
                    name = id(item) if self.key is None else item[0][self.key]
                    if len(batch) < GROUP_MAX and name not in seen:
                        seen.add(name)
                        batch.append(item)
                    else:
                        later.append(item)
                self.waiting = later
                await self._statement(batch)
        finally:
            self.task = None
            for _, done in self.waiting:  # only when cancelled (the process stopping)
                done.cancel()
            self.waiting = []

    async def _statement(self, batch: list[tuple[dict, asyncio.Future]]) -> None:
        params = {f: [p.get(f) for p, _ in batch] for f in self.fields}
        if "ord" in params:
            params["ord"] = list(range(len(batch)))
        try:
            try:
                rows = await self.store._many(self.sql, params, again_if_broken=self.reads)
            except psycopg.Error as exc:
                if len(batch) == 1 or isinstance(exc, psycopg.OperationalError):
                    raise
                for item in batch:  # one's fault (a constraint): the others are written without it
                    await self._statement([item])
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
        for n, (params_of, done) in enumerate(batch):
            if not done.done():
                done.set_result(rows.get(n if self.key is None else params_of[self.key]))


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
