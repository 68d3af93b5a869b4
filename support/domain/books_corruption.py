"""The books corrupted on purpose, one kind per account (issue 16), and what the reconciliation says of each.

Every corruption is written in one transaction with its account's credit lots marked as tampered with
(support.domain.billing_api's TAMPERED_REASON), so a scenario running beside it tells the discrepancy apart from a
real one; the account and all it holds is deleted when the scenario ends, as every seeded account is."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sqlalchemy import insert, update

from support.client.assertions import expect_equal, expect_true
from support.domain.billing_api import TAMPERED_REASON, Billing, discrepancy_mentions
from support.harness.money import usd
from support.harness.world import Account

# What the sentence calls a check -> the reconciliation's rule.
RULES = {
    "available balance, against its ledger": "available = ledger available",
    "spent balance, against its ledger": "spent = ledger spent",
    "held balance, against its pending reservations": "held = pending reservations",
    "minted balance, against its credit lots": "minted = sum of credit lots",
}
UNBALANCED_ENTRY = "ledger entry postings sum to zero"


class BooksCorruption:
    def __init__(self, billing: Billing):
        self.billing = billing
        self.db, self.world = billing.db, billing.world

    def _corrupt(self, account: Account, kind: str, *statements) -> None:
        lots = self.db.table("credit_lots")
        with self.db.engine.begin() as conn:
            conn.execute(update(lots).where(lots.c.account_id == account.id).values(reason=TAMPERED_REASON))
            for statement in statements:
                conn.execute(statement)
        self.world.moves.tampered[account.name] = kind

    def move_between_buckets(self, account: Account, amount: int) -> None:
        """Available credit moved to spent in the account's row only: the sum still agrees, the buckets do not."""
        accounts = self.db.table("accounts")
        self._corrupt(account, "moved between buckets", update(accounts).where(accounts.c.id == account.id).values(
            available_micros=accounts.c.available_micros - amount, spent_micros=accounts.c.spent_micros + amount))

    def unbalanced_entries(self, account: Account, amount: int) -> None:
        """Two ledger entries, each with one posting: +amount and -amount to available. Together they cancel out,
        so every balance still agrees with the postings, but neither entry balances."""
        entries, postings = self.db.table("ledger_entries"), self.db.table("ledger_postings")
        now = datetime.now(timezone.utc)
        rows = []
        for sign in (1, -1):
            entry_id = f"le_{uuid.uuid4().hex}"
            rows.append(insert(entries).values(id=entry_id, kind="mint", account_id=account.id, reservation_id=None,
                                               lot_id=None, request_id=None, created_at=now))
            rows.append(insert(postings).values(entry_id=entry_id, account_id=account.id, bucket="available",
                                                amount_micros=sign * amount))
        self._corrupt(account, "unbalanced entries", *rows)

    def raise_reservation(self, account: Account, amount: int) -> None:
        """The scenario's last pending reservation made larger in its row: the held balance no longer matches."""
        reservations = self.db.table("reservations")
        reservation = self.world.reservation()
        self._corrupt(account, "reservation changed", update(reservations).where(
            reservations.c.id == reservation.id).values(amount_micros=reservations.c.amount_micros + amount))

    def raise_lot(self, account: Account, amount: int) -> None:
        lots = self.db.table("credit_lots")
        self._corrupt(account, "credit lot changed", update(lots).where(lots.c.account_id == account.id).values(
            amount_micros=lots.c.amount_micros + amount))

    # ---- what the reconciliation says ------------------------------------------------------------------------

    def expect_found(self, account: Account, check: str, difference: int) -> None:
        """A discrepancy on the account under the check's rule, its balance off by `difference` (balance minus
        what it is checked against)."""
        if check not in RULES:
            raise AssertionError(f"Unknown check {check!r}; the suite knows: {', '.join(RULES)}")
        exchange = self.billing.reconciliation()
        body = exchange.json()
        mine = [d for d in body.get("discrepancies") or [] if discrepancy_mentions(d, account.id)]
        found = [d for d in mine if d.get("rule") == RULES[check]]
        expect_equal(body.get("balanced"), False, "the reconciliation's verdict 'balanced'", exchange)
        expect_equal([d.get("difference_micros") for d in found], [difference],
                     f"the difference the reconciliation reports for the {check} of account {account.id} (rule "
                     f"{RULES[check]!r}, {usd(difference)}); all it reports on the account: {mine}", exchange)

    def expect_unbalanced_entries(self, account: Account, amount: int) -> None:
        exchange = self.billing.reconciliation()
        mine = [d for d in exchange.json().get("discrepancies") or [] if discrepancy_mentions(d, account.id)]
        entries = sorted(d.get("difference_micros") for d in mine if d.get("rule") == UNBALANCED_ENTRY)
        expect_equal(entries, [-amount, amount], f"the differences of the account's ledger entries that do not "
                     f"balance ({usd(amount)} each way); all it reports on the account: {mine}", exchange)
        others = [d for d in mine if d.get("rule") != UNBALANCED_ENTRY]
        expect_true(not others, f"Expected only the unbalanced entries to be reported (the balances still agree), "
                    f"but also: {others}", exchange)
