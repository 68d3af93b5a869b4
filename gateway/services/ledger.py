"""The billing ledger: credit lots, two-phase reservations and double-entry postings.

Every balance change is one conditional UPDATE (so two concurrent requests can never both pass a check that
only one of them may pass) plus a ledger entry whose postings sum to zero. For an account:
minted = available + held + spent, and the postings per bucket equal the balance columns.

Reservations are written and moved with plain SQL statements on the tables (no ORM unit of work): every chat
request reserves and settles, and the ORM's flush bookkeeping was most of what the gateway added to a request.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterator

from sqlalchemy import BigInteger, bindparam, case, func, insert, literal_column, or_, select, update
from sqlalchemy.orm import Session

from gateway.audit import EVENTS, SYSTEM
from gateway.errors import ApiError
from gateway.models import Account, CreditLot, LedgerEntry, LedgerPosting, Org, Reservation, utcnow
from gateway.security import new_id
from gateway.services.billing_counts import note

MAX_MICROS = 10 ** 15  # one billion USD: a sanity bound on any single amount

ACCOUNTS = Account.__table__
RESERVATIONS = Reservation.__table__
ENTRIES = LedgerEntry.__table__
POSTINGS = LedgerPosting.__table__

# The statements of every reservation, built once (building and keying a statement per call cost more than
# running it on SQLite). Bind names differ from column names, which SQLAlchemy reserves for SET values.
# The chat path's PostgreSQL statements (gateway/services/chat_billing.py) are built from the same pieces.
AMOUNT = bindparam("amount", type_=BigInteger)
BUDGET_LIMIT = bindparam("budget_limit", type_=BigInteger)  # None: the account has no budget limit
ACTUAL = bindparam("actual", type_=BigInteger)  # None: a release
# The two rules of a hold, written once: the credit covers the amount, and what the account holds and has spent,
# plus the amount, stays within the budget limit.
HAS_CREDIT = ACCOUNTS.c.available_micros >= AMOUNT
WITHIN_BUDGET = or_(BUDGET_LIMIT.is_(None),
                    ACCOUNTS.c.held_micros + ACCOUNTS.c.spent_micros + AMOUNT <= BUDGET_LIMIT)
HOLD = update(ACCOUNTS).where(ACCOUNTS.c.id == bindparam("account"), HAS_CREDIT, WITHIN_BUDGET).values(
    available_micros=ACCOUNTS.c.available_micros - AMOUNT, held_micros=ACCOUNTS.c.held_micros + AMOUNT)
# Why a hold was refused: the account as it is now, judged by the same rules.
SHORTFALL = select(*ACCOUNTS.c, HAS_CREDIT.label("has_credit"), WITHIN_BUDGET.label("within_budget")).where(
    ACCOUNTS.c.id == bindparam("account"))
PENDING = literal_column("'pending'")  # a constant in the SQL, not a parameter
# A pending, unexpired reservation holding at least `at_least` moves; a charge above its amount is its overrun.
MOVE_PENDING = update(RESERVATIONS).where(
    RESERVATIONS.c.id == bindparam("reservation"), RESERVATIONS.c.status == PENDING,
    RESERVATIONS.c.expires_at > bindparam("now"), RESERVATIONS.c.amount_micros >= bindparam("at_least")).values(
    status=bindparam("new_status"), settled_at=bindparam("now"), actual_micros=ACTUAL,
    overrun_micros=case((ACTUAL > RESERVATIONS.c.amount_micros, ACTUAL - RESERVATIONS.c.amount_micros)))
_MOVE_PENDING = MOVE_PENDING.returning(*RESERVATIONS.c)
_SETTLE_ACCOUNT = update(ACCOUNTS).where(ACCOUNTS.c.id == bindparam("account")).values(
    held_micros=ACCOUNTS.c.held_micros - bindparam("held"), spent_micros=ACCOUNTS.c.spent_micros + bindparam("spent"),
    available_micros=ACCOUNTS.c.available_micros + bindparam("returned"))
_NEW_RESERVATION, _NEW_ENTRY, _NEW_POSTINGS = insert(RESERVATIONS), insert(ENTRIES), insert(POSTINGS)
# A charge made after the hold was given back (the settlement journal applying an answer whose hold expired, or was
# released, meanwhile): once per reservation, recorded as its actual_micros.
CHARGEABLE_LATE = ("expired", "released")
_CHARGE_LATE = update(RESERVATIONS).where(
    RESERVATIONS.c.id == bindparam("reservation"), RESERVATIONS.c.status.in_(CHARGEABLE_LATE),
    RESERVATIONS.c.actual_micros.is_(None)).values(actual_micros=ACTUAL).returning(*RESERVATIONS.c)
# Part of a charge given back: never more than is left of it, so voids racing each other cannot pass the charge.
VOIDABLE = ("finalized", "expired", "released", "voided")
_VOIDED_BEFORE = func.coalesce(RESERVATIONS.c.voided_micros, literal_column("0"))
_VOID = update(RESERVATIONS).where(
    RESERVATIONS.c.id == bindparam("reservation"), RESERVATIONS.c.actual_micros.is_not(None),
    RESERVATIONS.c.status.in_(VOIDABLE), _VOIDED_BEFORE + AMOUNT <= RESERVATIONS.c.actual_micros).values(
    voided_micros=_VOIDED_BEFORE + AMOUNT,
    status=case((_VOIDED_BEFORE + AMOUNT == RESERVATIONS.c.actual_micros, literal_column("'voided'")),
                else_=RESERVATIONS.c.status)).returning(*RESERVATIONS.c)


def as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def usd(micros: int | None) -> str:
    """Micros as dollars for messages: 2 decimals, more only when the amount needs them."""
    if micros is None:
        return "no limit"
    whole, frac = divmod(abs(micros), 1_000_000)
    decimals = f"{frac:06d}".rstrip("0").ljust(2, "0")
    return f"{'-' if micros < 0 else ''}{whole}.{decimals} USD"


@dataclass(frozen=True)
class Balances:
    minted_micros: int
    available_micros: int
    held_micros: int
    spent_micros: int

    def as_json(self) -> dict:
        return {"minted_micros": self.minted_micros, "available_micros": self.available_micros,
                "held_micros": self.held_micros, "spent_micros": self.spent_micros}


def balances(account: Account) -> Balances:
    return Balances(account.minted_micros, account.available_micros, account.held_micros, account.spent_micros)


def _post(session: Session, kind: str, account_id: str, moves: dict[str, int], *, reservation_id=None,
          lot_id=None, request_id=None) -> None:
    assert sum(moves.values()) == 0, f"unbalanced entry {moves}"
    entry_id = new_id("le")
    conn = session.connection()
    conn.execute(_NEW_ENTRY, {"id": entry_id, "kind": kind, "account_id": account_id,
                              "reservation_id": reservation_id, "lot_id": lot_id, "request_id": request_id,
                              "created_at": utcnow()})
    conn.execute(_NEW_POSTINGS, [{"entry_id": entry_id, "account_id": account_id, "bucket": bucket,
                                  "amount_micros": amount} for bucket, amount in moves.items() if amount])


def create_account(session: Session, *, account_id: str | None = None, identity_anchor: str | None = None) -> Account:
    account = Account(id=account_id or new_id("acct"), identity_anchor=identity_anchor, minted_micros=0,
                      available_micros=0, held_micros=0, spent_micros=0)
    session.add(account)
    session.flush()
    return account


def get_account(session: Session, account_id: str) -> Account:
    account = session.get(Account, account_id)
    if account is None:
        raise ApiError(404, "account_not_found", f"Account '{account_id}' does not exist.")
    return account


def mint(session: Session, account_id: str, amount: int, reason: str, request_id: str | None = None) -> CreditLot:
    get_account(session, account_id)
    lot = CreditLot(id=new_id("lot"), account_id=account_id, amount_micros=amount, reason=reason)
    session.add(lot)
    session.execute(update(Account).where(Account.id == account_id).values(
        minted_micros=Account.minted_micros + amount, available_micros=Account.available_micros + amount))
    _post(session, "mint", account_id, {"issuance": -amount, "available": amount}, lot_id=lot.id,
          request_id=request_id)
    return lot


class Shortfall(Exception):
    """A hold could not be placed; `reason` is 'insufficient_credit' or 'budget_exceeded'."""

    def __init__(self, reason: str, account):
        super().__init__(reason)
        self.reason = reason
        self.account = balances(account)  # a snapshot: the session's rollback would expire (detach) the row


def shortfall(session: Session, account_id: str, amount: int, budget_limit: int | None) -> Shortfall:
    """Why a hold of `amount` is refused, from the account's balances as they are now (404 for no account)."""
    account = session.connection().execute(SHORTFALL, {"account": account_id, "amount": amount,
                                                      "budget_limit": budget_limit}).first()
    if account is None:
        get_account(session, account_id)  # raises the 404
    # Both rules may pass by now (holds settled since the refusal, returning what they did not spend): the refusal
    # is then put down to the budget when there is one, since that is what concurrent requests of an org use up.
    within = account.within_budget and not (account.has_credit and budget_limit is not None)
    return Shortfall("insufficient_credit" if within else "budget_exceeded", account)


def reserve(session: Session, account_id: str, amount: int, ttl_seconds: float, *,
            budget_limit: int | None = None, request_id: str | None = None) -> Reservation:
    """Hold `amount` on the account, atomically checking credit and (optionally) the budget limit.
    Returns the new reservation as a detached object (it is written with a plain INSERT)."""
    conn = session.connection()
    result = conn.execute(HOLD, {"account": account_id, "amount": amount, "budget_limit": budget_limit})
    if result.rowcount != 1:
        raise shortfall(session, account_id, amount, budget_limit)
    now = utcnow()
    fields = {"id": new_id("res"), "account_id": account_id, "amount_micros": amount, "actual_micros": None,
              "status": "pending", "expires_at": now + timedelta(seconds=ttl_seconds), "created_at": now,
              "settled_at": None, "request_id": request_id}
    conn.execute(_NEW_RESERVATION, fields)
    _post(session, "reserve", account_id, {"available": -amount, "held": amount}, reservation_id=fields["id"],
          request_id=request_id)
    note(session, "reserve")
    return Reservation(**fields)


def not_pending(session: Session, reservation_id: str, verb: str) -> ApiError:
    reservation = session.get(Reservation, reservation_id)
    if reservation is None:
        return ApiError(404, "reservation_not_found", f"Reservation '{reservation_id}' does not exist.")
    session.refresh(reservation)
    # Still pending means past its TTL: it is expired, and the sweeper (or the next read) returns its amount.
    # Expiring it here would be rolled back with the refusal, so it is only reported.
    status = "expired (past its TTL)" if reservation.status == "pending" else reservation.status
    return ApiError(409, "reservation_not_pending",
                    f"Reservation '{reservation_id}' cannot be {verb}: it is {status}; only a pending "
                    f"reservation can move.")


def actual_exceeds_reserved(reservation: Reservation, actual: int) -> ApiError:
    return ApiError(422, "actual_exceeds_reserved",
                    f"actual_micros {actual} is above the {reservation.amount_micros} reserved by "
                    f"'{reservation.id}'; nothing was posted.", param="actual_micros")


def load_reservation(session: Session, reservation_id: str) -> Reservation:
    reservation = session.get(Reservation, reservation_id)
    if reservation is None:
        raise ApiError(404, "reservation_not_found", f"Reservation '{reservation_id}' does not exist.")
    return reservation


def _move_pending(session: Session, reservation_id: str, new_status: str, actual: int | None = None,
                  at_least: int = 0):
    """Move a pending, unexpired reservation (holding at least `at_least`) to `new_status`, in one conditional
    UPDATE; its row as it is now, or None when it did not qualify."""
    return session.connection().execute(_MOVE_PENDING, {
        "reservation": reservation_id, "now": utcnow(), "at_least": at_least, "new_status": new_status,
        "actual": actual}).first()


def finalize(session: Session, reservation_id: str, actual: int, request_id: str | None = None, *,
             beyond_hold: bool = False) -> Reservation:
    """Charge `actual` and return the rest of the hold. Above the amount held it is refused (422), unless
    `beyond_hold` (the chat path: a backend reported more than the bound), when the difference is taken from the
    available credit (even below zero: usage is never charged less) and recorded as the reservation's overrun."""
    row = _move_pending(session, reservation_id, "finalized", actual, at_least=0 if beyond_hold else actual)
    if row is None:  # find out why, for the message: unknown, more than was held, or no longer pending
        reservation = load_reservation(session, reservation_id)
        if actual > reservation.amount_micros and not beyond_hold:
            raise actual_exceeds_reserved(reservation, actual)
        raise not_pending(session, reservation_id, "finalized")
    amount = row.amount_micros
    session.connection().execute(_SETTLE_ACCOUNT, {"account": row.account_id, "held": amount, "spent": actual,
                                                   "returned": amount - actual})
    _post(session, "finalize", row.account_id,
          {"held": -amount, "spent": actual, "available": amount - actual}, reservation_id=reservation_id,
          request_id=request_id)
    note(session, "finalize")
    return Reservation(**row._mapping)


def release(session: Session, reservation_id: str, request_id: str | None = None) -> Reservation:
    row = _move_pending(session, reservation_id, "released")
    if row is None:
        load_reservation(session, reservation_id)
        raise not_pending(session, reservation_id, "released")
    _return_hold(session, row.account_id, row.id, row.amount_micros, "release", request_id)
    return Reservation(**row._mapping)


def _return_hold(session: Session, account_id: str, reservation_id: str, amount: int, kind: str,
                 request_id: str | None) -> None:
    session.connection().execute(_SETTLE_ACCOUNT, {"account": account_id, "held": amount, "spent": 0,
                                                   "returned": amount})
    _post(session, kind, account_id, {"held": -amount, "available": amount}, reservation_id=reservation_id,
          request_id=request_id)
    note(session, kind)


def expire_one(session: Session, reservation: Reservation) -> bool:
    """Expire a reservation if it is still pending past its TTL; False when it was not (someone moved it)."""
    now = utcnow()
    moved = session.execute(update(RESERVATIONS).where(
        RESERVATIONS.c.id == reservation.id, RESERVATIONS.c.status == "pending",
        RESERVATIONS.c.expires_at <= now).values(status="expired", settled_at=now))
    if moved.rowcount != 1:
        return False
    _return_hold(session, reservation.account_id, reservation.id, reservation.amount_micros, "expire", None)
    session.refresh(reservation)
    _audit_expiry(session, reservation, now)
    return True


def org_of_account(session: Session, account_id: str) -> str | None:
    return session.scalar(select(Org.slug).where(Org.account_id == account_id))


def _audit_expiry(session: Session, reservation: Reservation, now: datetime) -> None:
    """The expiry's own event, by the gateway (actor system): no request of anyone's made it, even when a read
    found it due, so it carries no request id."""
    session.connection().execute(insert(EVENTS), {
        "at": now, "actor_type": SYSTEM.type, "actor_id": SYSTEM.id, "action": "billing.expire",
        "target": f"reservation:{reservation.id}", "outcome": "allowed",
        "reason": f"the reservation passed its time to live unsettled; its {usd(reservation.amount_micros)} returned "
                  f"to the available credit",
        "org": org_of_account(session, reservation.account_id), "request_id": None, "trace_id": None,
        "details": {"account_id": reservation.account_id, "amount_micros": reservation.amount_micros,
                    "expires_at": as_utc(reservation.expires_at).isoformat()}})


def charge_late(session: Session, reservation_id: str, actual: int, request_id: str | None = None
                ) -> Reservation | None:
    """Charge `actual` for a reservation whose hold already went back (expired or released) before its answer was
    settled: taken from the available credit (even below zero, like an overrun), once; None when it was charged
    already (or is not expired or released)."""
    row = session.connection().execute(_CHARGE_LATE, {"reservation": reservation_id, "actual": actual}).first()
    if row is None:
        return None
    session.connection().execute(_SETTLE_ACCOUNT, {"account": row.account_id, "held": 0, "spent": actual,
                                                   "returned": -actual})
    _post(session, "late_charge", row.account_id, {"available": -actual, "spent": actual},
          reservation_id=reservation_id, request_id=request_id)
    note(session, "late_charge")
    return Reservation(**row._mapping)


def charged(reservation: Reservation) -> int | None:
    """What the reservation's charge was (None: it was never charged)."""
    return reservation.actual_micros if reservation.status in VOIDABLE else None


def void(session: Session, reservation_id: str, amount: int | None,
         request_id: str | None = None) -> tuple[Reservation, int]:
    """Give back `amount` of a charge (None: all that is left of it) from spent to available; (the reservation, the
    amount given back). Refused: an unknown reservation (404), one that was never charged or is voided in full
    (409), more than is left of the charge (422)."""
    reservation = load_reservation(session, reservation_id)
    session.refresh(reservation)
    charge, voided = charged(reservation), reservation.voided_micros or 0
    if charge is None:
        never = "still pending: nothing has been charged yet" if reservation.status == "pending" else \
            f"{reservation.status} and was never charged"
        raise ApiError(409, "reservation_not_charged", f"Reservation '{reservation_id}' cannot be voided: it is "
                       f"{never}; only a charge can be voided.")
    if voided >= charge:
        raise ApiError(409, "reservation_voided", f"Reservation '{reservation_id}' cannot be voided: its charge of "
                       f"{usd(charge)} was voided in full already.")
    amount = charge - voided if amount is None else amount
    row = session.connection().execute(_VOID, {"reservation": reservation_id, "amount": amount}).first()
    if row is None:
        raise ApiError(422, "void_exceeds_charge", f"Voiding {usd(amount)} of reservation '{reservation_id}' is "
                       f"more than is left of its charge: {usd(charge)} charged, {usd(voided)} voided already, "
                       f"{usd(charge - voided)} left.", param="amount_micros")
    session.connection().execute(_SETTLE_ACCOUNT, {"account": row.account_id, "held": 0, "spent": -amount,
                                                   "returned": amount})
    _post(session, "void", row.account_id, {"spent": -amount, "available": amount}, reservation_id=reservation_id,
          request_id=request_id)
    note(session, "void")
    return Reservation(**row._mapping), amount


def expire_due(session: Session, *, account_id: str | None = None, limit: int = 500) -> int:
    """Expire pending reservations past their TTL; returns how many moved."""
    query = select(Reservation).where(Reservation.status == "pending", Reservation.expires_at <= utcnow())
    if account_id is not None:
        query = query.where(Reservation.account_id == account_id)
    moved = 0
    for reservation in session.scalars(query.limit(limit)).all():
        moved += expire_one(session, reservation)
    return moved


def reservation_json(reservation: Reservation) -> dict:
    return {"id": reservation.id, "account_id": reservation.account_id, "status": reservation.status,
            "amount_micros": reservation.amount_micros, "actual_micros": reservation.actual_micros,
            "overrun_micros": reservation.overrun_micros, "voided_micros": reservation.voided_micros,
            "expires_at": as_utc(reservation.expires_at).isoformat(),
            "created_at": as_utc(reservation.created_at).isoformat() if reservation.created_at else None}


@contextmanager
def snapshot(db) -> Iterator[Session]:
    """A read-only session that sees one consistent state of the whole database.

    Reconciliation reads accounts, lots, postings and reservations in several statements; under READ COMMITTED
    (PostgreSQL's default) each statement would see other transactions' newer commits, and a reservation posted
    between two reads would show as a false discrepancy. PostgreSQL gets REPEATABLE READ READ ONLY; SQLite's
    transaction (BEGIN IMMEDIATE in the gateway) already reads one snapshot.
    """
    with db.sessions() as session, session.begin():
        if session.get_bind().dialect.name == "postgresql":  # before the first statement: it starts the transaction
            session.connection(execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True})
        yield session


def reconciliation(session: Session) -> dict:
    """Check every account: minted = available + held + spent, and ledger postings agree with the balances.

    Call it inside `snapshot(db)` so that every read sees the same moment.
    """
    postings = {}
    for account_id, bucket, total in session.execute(
            select(LedgerPosting.account_id, LedgerPosting.bucket, func.sum(LedgerPosting.amount_micros))
            .group_by(LedgerPosting.account_id, LedgerPosting.bucket)):
        postings.setdefault(account_id, {})[bucket] = int(total or 0)
    unbalanced_entries = session.execute(
        select(LedgerPosting.entry_id, func.min(LedgerPosting.account_id), func.sum(LedgerPosting.amount_micros))
        .group_by(LedgerPosting.entry_id).having(func.sum(LedgerPosting.amount_micros) != 0)).all()
    lots = dict(session.execute(select(CreditLot.account_id, func.sum(CreditLot.amount_micros))
                                .group_by(CreditLot.account_id)).all())
    pending = dict(session.execute(select(Reservation.account_id, func.sum(Reservation.amount_micros))
                                   .where(Reservation.status == "pending").group_by(Reservation.account_id)).all())
    accounts, discrepancies = [], []
    for account in session.scalars(select(Account).order_by(Account.id)):
        b = balances(account)
        p = postings.get(account.id, {})
        accounts.append({"account_id": account.id, **b.as_json()})
        checks = [
            ("minted = available + held + spent", b.minted_micros,
             b.available_micros + b.held_micros + b.spent_micros),
            ("minted = sum of credit lots", b.minted_micros, int(lots.get(account.id) or 0)),
            ("minted = ledger issuance", b.minted_micros, -p.get("issuance", 0)),
            ("available = ledger available", b.available_micros, p.get("available", 0)),
            ("held = ledger held", b.held_micros, p.get("held", 0)),
            ("spent = ledger spent", b.spent_micros, p.get("spent", 0)),
            ("held = pending reservations", b.held_micros, int(pending.get(account.id) or 0)),
        ]
        for rule, balance, expected in checks:
            if balance != expected:
                discrepancies.append({"account_id": account.id, "rule": rule, "balance_micros": balance,
                                      "expected_micros": expected, "difference_micros": balance - expected})
    for entry_id, account_id, total in unbalanced_entries:
        discrepancies.append({"account_id": account_id, "entry_id": entry_id,
                              "rule": "ledger entry postings sum to zero", "balance_micros": int(total),
                              "expected_micros": 0, "difference_micros": int(total)})
    return {"balanced": not discrepancies, "accounts": accounts, "discrepancies": discrepancies,
            "checked_accounts": len(accounts)}
