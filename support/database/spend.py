"""What an org's money looks like in the gateway's database: its account's balances, the ledger's postings and
entries, and the reservation each chat request made. Read through reflected tables, never through the gateway."""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select

from support.database.reflection import Database


@dataclass(frozen=True)
class Books:
    account_id: str
    minted: int
    available: int
    held: int
    spent: int
    postings: dict = field(default_factory=dict)  # bucket -> sum of the ledger's postings

    def disagreements(self) -> list[str]:
        """Where the account's balance columns and its ledger postings differ (empty when they agree)."""
        found = []
        for bucket in ("available", "held", "spent"):
            if self.postings.get(bucket, 0) != getattr(self, bucket):
                found.append(f"{bucket}: balance {getattr(self, bucket)}, postings {self.postings.get(bucket, 0)}")
        if -self.postings.get("issuance", 0) != self.minted:
            found.append(f"minted: balance {self.minted}, issuance postings {-self.postings.get('issuance', 0)}")
        return found

    def describe(self) -> str:
        return (f"minted {self.minted}, available {self.available}, held {self.held}, spent {self.spent} micro-USD; "
                f"postings by bucket {self.postings}")


def books(db: Database, account_id: str) -> Books:
    accounts, postings = db.table("accounts"), db.table("ledger_postings")
    with db.engine.connect() as conn:
        row = conn.execute(select(accounts).where(accounts.c.id == account_id)).mappings().first()
        if row is None:
            raise AssertionError(f"The gateway's database has no account {account_id!r}")
        sums = {bucket: int(total or 0) for bucket, total in conn.execute(
            select(postings.c.bucket, func.sum(postings.c.amount_micros))
            .where(postings.c.account_id == account_id).group_by(postings.c.bucket))}
    return Books(account_id, row["minted_micros"], row["available_micros"], row["held_micros"], row["spent_micros"],
                 sums)


def entries(db: Database, account_id: str, kind: str | None = None) -> list[dict]:
    """The account's ledger entries (kind, request_id, reservation_id), oldest first."""
    table = db.table("ledger_entries")
    query = select(table).where(table.c.account_id == account_id)
    if kind is not None:
        query = query.where(table.c.kind == kind)
    with db.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query.order_by(table.c.created_at)).mappings()]


def reservation_of_request(db: Database, request_id: str) -> dict | None:
    """The hold the gateway placed for one chat request (by the request id the suite sent)."""
    table = db.table("reservations")
    with db.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(table).where(table.c.request_id == request_id)).mappings()]
    if len(rows) > 1:
        raise AssertionError(f"Expected at most one reservation for request {request_id}, found {len(rows)}: {rows}")
    return rows[0] if rows else None
