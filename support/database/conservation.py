"""Is money conserved? One account's ledger as the gateway's database holds it, read through reflected tables,
and the checks every fault and load run ends with: no entry lost, none doubled, nothing spent twice.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import func, select

from support.database.reflection import Database

SETTLING_KINDS = {"finalize": "finalized", "release": "released", "expire": "expired"}


@dataclass
class AccountLedger:
    account_id: str
    minted: int
    available: int
    held: int
    spent: int
    entries_by_kind: Counter
    reservations: list[dict]  # {id, status, amount, actual, expires_at, request_id}
    entries_by_reservation: dict[str, list[str]] = field(default_factory=dict)  # reservation id -> entry kinds
    postings: dict[str, int] = field(default_factory=dict)  # bucket -> sum

    @property
    def entries(self) -> int:
        return sum(self.entries_by_kind.values())

    def by_status(self, status: str) -> list[dict]:
        return [r for r in self.reservations if r["status"] == status]

    def spent_by_finalized(self) -> int:
        """What the reservations' charges add up to: each charge (a finalize, or a late charge of an expired or
        released hold) less what was voided of it."""
        return sum((r["actual"] or 0) - (r["voided"] or 0) for r in self.reservations if r["status"] != "pending")

    def reservation_for(self, request_id: str) -> dict | None:
        found = [r for r in self.reservations if r["request_id"] == request_id]
        return found[0] if found else None

    def latest_expiry(self) -> datetime | None:
        pending = [r["expires_at"] for r in self.by_status("pending") if r["expires_at"] is not None]
        return max(pending) if pending else None

    def problems(self) -> list[str]:
        """Everything that breaks conservation on this account, in words; empty when the account is sound."""
        found = []
        if self.minted != self.available + self.held + self.spent:
            found.append(f"minted {self.minted} != available {self.available} + held {self.held} + spent {self.spent}")
        for bucket, balance in (("available", self.available), ("held", self.held), ("spent", self.spent)):
            if self.postings.get(bucket, 0) != balance:
                found.append(f"{bucket} balance {balance} != its ledger postings {self.postings.get(bucket, 0)}")
        if -self.postings.get("issuance", 0) != self.minted:
            found.append(f"minted {self.minted} != ledger issuance {-self.postings.get('issuance', 0)}")
        if self.spent != self.spent_by_finalized():
            found.append(f"spent {self.spent} != what the reservations' charges add up to (finalized or charged "
                         f"late, less what was voided) {self.spent_by_finalized()}")
        held_by_pending = sum(r["amount"] for r in self.by_status("pending"))
        if self.held != held_by_pending:
            found.append(f"held {self.held} != the sum of pending reservations {held_by_pending}")
        for reservation in self.reservations:
            kinds = self.entries_by_reservation.get(reservation["id"], [])
            if kinds.count("reserve") != 1:
                found.append(f"reservation {reservation['id']} has {kinds.count('reserve')} reserve entries, not 1")
            settling = [k for k in kinds if k in SETTLING_KINDS]
            expected = [] if reservation["status"] == "pending" else [
                k for k, s in SETTLING_KINDS.items() if s == reservation["status"]]
            if reservation["status"] == "voided":  # a charge voided in full: settled once, by whichever move
                expected = settling if len(settling) == 1 else ["one settling entry"]
            if settling != expected:
                found.append(f"reservation {reservation['id']} is {reservation['status']} but its settling entries "
                             f"are {settling or 'none'} (expected {expected or 'none'})")
        return found

    def describe(self) -> dict:
        return {"account_id": self.account_id, "minted_micros": self.minted, "available_micros": self.available,
                "held_micros": self.held, "spent_micros": self.spent, "entries_by_kind": dict(self.entries_by_kind),
                "reservations_by_status": dict(Counter(r["status"] for r in self.reservations)),
                "spent_by_finalized_reservations": self.spent_by_finalized()}


def account_ledger(db: Database, account_id: str) -> AccountLedger:
    accounts, entries = db.table("accounts"), db.table("ledger_entries")
    reservations, postings = db.table("reservations"), db.table("ledger_postings")
    with db.snapshot() as conn:
        account = conn.execute(select(accounts).where(accounts.c.id == account_id)).mappings().first()
        if account is None:
            raise AssertionError(f"The gateway's database has no account {account_id!r}")
        kinds = conn.execute(select(entries.c.kind, entries.c.reservation_id)
                             .where(entries.c.account_id == account_id)).all()
        held = conn.execute(select(reservations.c.id, reservations.c.status, reservations.c.amount_micros,
                                   reservations.c.actual_micros, reservations.c.expires_at, reservations.c.request_id,
                                   reservations.c.voided_micros)
                            .where(reservations.c.account_id == account_id)).all()
        sums = dict(conn.execute(select(postings.c.bucket, func.sum(postings.c.amount_micros))
                                 .where(postings.c.account_id == account_id).group_by(postings.c.bucket)).all())
    by_reservation: dict[str, list[str]] = {}
    for kind, reservation_id in kinds:
        if reservation_id:
            by_reservation.setdefault(reservation_id, []).append(kind)
    return AccountLedger(
        account_id, int(account["minted_micros"]), int(account["available_micros"]), int(account["held_micros"]),
        int(account["spent_micros"]), Counter(kind for kind, _ in kinds),
        [{"id": r.id, "status": r.status, "amount": int(r.amount_micros),
          "actual": None if r.actual_micros is None else int(r.actual_micros), "expires_at": _utc(r.expires_at),
          "request_id": r.request_id, "voided": int(r.voided_micros or 0)} for r in held],
        by_reservation, {bucket: int(total or 0) for bucket, total in sums.items()})


def _utc(value):
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value
