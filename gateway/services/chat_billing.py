"""The chat path's hold and settlement on the billing ledger, with as few database round trips as the database
allows.

Every chat request places a hold on its org's account and later finalizes or releases it, each with its ledger
entry, postings and (for the settlement) its audit event. On PostgreSQL each of the two is ONE statement, chained
data-modifying CTEs run in autocommit: atomic, one round trip, and every later part is conditional on the first
UPDATE having matched (so a refused hold or an already-moved reservation writes nothing). Other databases (SQLite,
in-process, where a round trip costs nothing) run the ledger's step-by-step functions in one transaction. Both
write the same rows; the billing reconciliation checks either.
"""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import JSON, BigInteger, bindparam, text

from gateway import audit, context
from gateway.models import utcnow
from gateway.security import new_id
from gateway.services import ledger

_STAMP = ledger.RESERVATIONS.c.expires_at.type

_PG_HOLD = text("""
WITH held AS (
    UPDATE accounts SET available_micros = available_micros - :amount, held_micros = held_micros + :amount
    WHERE id = :account_id AND available_micros >= :amount
      AND (CAST(:budget_limit AS BIGINT) IS NULL OR held_micros + spent_micros + :amount <= :budget_limit)
    RETURNING id
), reservation AS (
    INSERT INTO reservations (id, account_id, amount_micros, status, expires_at, created_at, request_id)
    SELECT :reservation_id, id, :amount, 'pending', :expires_at, :now, :request_id FROM held
    RETURNING id
), entry AS (
    INSERT INTO ledger_entries (id, kind, account_id, reservation_id, request_id, created_at)
    SELECT :entry_id, 'reserve', :account_id, id, :request_id, :now FROM reservation
    RETURNING id
)
INSERT INTO ledger_postings (entry_id, account_id, bucket, amount_micros)
SELECT entry.id, :account_id, moves.bucket, moves.amount
FROM entry CROSS JOIN (VALUES ('available', -CAST(:amount AS BIGINT)), ('held', CAST(:amount AS BIGINT)))
    AS moves (bucket, amount)
RETURNING entry_id
""").bindparams(bindparam("amount", type_=BigInteger), bindparam("budget_limit", type_=BigInteger),
                bindparam("expires_at", type_=_STAMP), bindparam("now", type_=_STAMP))

# Finalize (actual is a number) or release (actual is NULL): the reservation moves only while it is pending,
# unexpired and holds at least `actual`; the account, the entry, its non-zero postings and the audit event follow.
_PG_SETTLE = text("""
WITH moved AS (
    UPDATE reservations SET status = :status, settled_at = :now, actual_micros = :actual
    WHERE id = :reservation_id AND status = 'pending' AND expires_at > :now
      AND amount_micros >= COALESCE(CAST(:actual AS BIGINT), 0)
    RETURNING account_id, amount_micros, amount_micros - COALESCE(CAST(:actual AS BIGINT), 0) AS returned
), account AS (
    UPDATE accounts SET held_micros = accounts.held_micros - moved.amount_micros,
        spent_micros = accounts.spent_micros + COALESCE(CAST(:actual AS BIGINT), 0),
        available_micros = accounts.available_micros + moved.returned
    FROM moved WHERE accounts.id = moved.account_id
    RETURNING accounts.id
), entry AS (
    INSERT INTO ledger_entries (id, kind, account_id, reservation_id, request_id, created_at)
    SELECT :entry_id, :kind, account_id, :reservation_id, :request_id, :now FROM moved
    RETURNING id, account_id
), postings AS (
    INSERT INTO ledger_postings (entry_id, account_id, bucket, amount_micros)
    SELECT entry.id, entry.account_id, moves.bucket, moves.amount
    FROM entry CROSS JOIN moved CROSS JOIN LATERAL (VALUES ('held', -moved.amount_micros),
        ('spent', COALESCE(CAST(:actual AS BIGINT), 0)), ('available', moved.returned)) AS moves (bucket, amount)
    WHERE moves.amount <> 0
    RETURNING entry_id
), event AS (
    INSERT INTO audit_events (at, actor_type, actor_id, action, target, outcome, reason, request_id, trace_id, org,
                              details)
    SELECT :now, :actor_type, :actor_id, :action, :target, :outcome, :reason, :request_id, :trace_id, :org, :details
    FROM moved
    RETURNING id
)
SELECT account_id FROM moved
""").bindparams(bindparam("actual", type_=BigInteger), bindparam("now", type_=_STAMP),
                bindparam("details", type_=JSON))


def hold(db, account_id: str, amount: int, ttl_seconds: float, *, budget_limit: int | None,
         request_id: str) -> str:
    """Hold `amount` for one chat request; returns the reservation id, or raises ledger.Shortfall."""
    if db.dialect != "postgresql":
        with db.transaction() as session:
            return ledger.reserve(session, account_id, amount, ttl_seconds, budget_limit=budget_limit,
                                  request_id=request_id).id
    now = utcnow()
    reservation_id = new_id("res")
    with db.autocommit() as conn:
        placed = conn.execute(_PG_HOLD, {
            "amount": amount, "budget_limit": budget_limit, "account_id": account_id,
            "reservation_id": reservation_id, "expires_at": now + timedelta(seconds=ttl_seconds), "now": now,
            "request_id": request_id, "entry_id": new_id("le")}).first()
    if placed is None:  # refused: say why from the balances as they are now (nothing was written)
        with db.sessions() as session:
            account = ledger.get_account(session, account_id)
            if budget_limit is not None and account.held_micros + account.spent_micros + amount > budget_limit:
                raise ledger.Shortfall("budget_exceeded", account)
            raise ledger.Shortfall("insufficient_credit", account)
    return reservation_id


def settle(db, reservation_id: str, actual: int | None, *, actor: audit.Actor, target: str, org: str,
           outcome: str = "allowed", reason: str | None = None, details: dict | None = None) -> None:
    """Finalize at `actual` (or release, when it is None) and audit it as one change.

    Raises the ledger's ApiError (409 not pending, 404, 422) when the reservation could not move; then nothing was
    written."""
    if db.dialect != "postgresql":
        with db.transaction() as session:
            if actual is None:
                ledger.release(session, reservation_id, context.current_request_id())
            else:
                ledger.finalize(session, reservation_id, actual, context.current_request_id())
            audit.record(session, actor, "chat.completion", target=target, org=org, outcome=outcome,
                         reason=reason, details=details)
        return
    with db.autocommit() as conn:
        moved = conn.execute(_PG_SETTLE, {
            "status": "released" if actual is None else "finalized", "kind": "release" if actual is None
            else "finalize", "actual": actual, "now": utcnow(), "reservation_id": reservation_id,
            "entry_id": new_id("le"), "request_id": context.current_request_id(), "actor_type": actor.type,
            "actor_id": actor.id, "action": "chat.completion", "target": target, "outcome": outcome,
            "reason": reason, "trace_id": context.current_trace_id(), "org": org, "details": details}).first()
    if moved is None:  # say why, in the ledger's words
        with db.sessions() as session:
            if actual is None:
                ledger.load_reservation(session, reservation_id)
                raise ledger.not_pending(session, reservation_id, "released")
            reservation = ledger.load_reservation(session, reservation_id)
            if actual > reservation.amount_micros:
                raise ledger.actual_exceeds_reserved(reservation, actual)
            raise ledger.not_pending(session, reservation_id, "finalized")
