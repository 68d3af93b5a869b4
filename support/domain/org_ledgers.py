"""The scenario's orgs' money as the gateway's database holds it (support.database.conservation), and the
platform's own reconciliation: the checks every fault and load run ends with."""
from __future__ import annotations

from datetime import datetime, timezone

from support.client import evidence
from support.client.api import ApiClient, Exchange
from support.client.assertions import expect_equal, expect_status, expect_true
from support.database.conservation import AccountLedger, account_ledger
from support.database.reflection import Database
from support.harness.waits import wait_until
from support.harness.world import World
from support.tokens.signing_keys import KeyMaterial


class OrgLedgers:
    def __init__(self, db: Database, api: ApiClient, keys: KeyMaterial, world: World, poll_timeout: float):
        self.db, self.api, self.keys, self.world = db, api, keys, world
        self.poll_timeout = poll_timeout

    def of(self, org: str) -> AccountLedger:
        return account_ledger(self.db, self.world.org(org).account_id)

    def attached(self, org: str) -> AccountLedger:
        """The org's ledger, attached to the report as evidence."""
        ledger = self.of(org)
        evidence.attach_json(f"ledger of {org}", ledger.describe())
        return ledger

    @staticmethod
    def expect_sound(org: str, ledger: AccountLedger) -> None:
        problems = ledger.problems()
        expect_true(not problems, f"Expected {org!r}'s ledger to be sound, but: {problems}")

    def expect_nothing_held(self, org: str) -> None:
        """Nothing on hold on the org's account, and its ledger sound."""
        ledger = self.of(org)
        expect_equal(ledger.held, 0, f"the amount held on {org!r}'s account ({ledger.describe()})")
        self.expect_sound(org, ledger)

    def await_holds(self, org: str, request_ids: list[str], status: str) -> AccountLedger:
        """Poll until the holds the gateway placed for these requests are all in `status` ('pending' once the
        requests are in flight, 'expired' once their time has run out: then the wait lasts until the latest
        expiry, and the poll timeout after it)."""
        def holds(ledger: AccountLedger) -> list:
            return [ledger.reservation_for(rid) for rid in request_ids]

        wait_seconds = 0.0
        if status == "expired":
            latest = self.of(org).latest_expiry()
            wait_seconds = max(0.0, (latest - datetime.now(timezone.utc)).total_seconds()) if latest else 0.0
        return wait_until(f"the holds of the {len(request_ids)} requests {request_ids[0]}... to be {status}",
                          lambda: self.of(org), lambda ledger: all((h or {}).get("status") == status
                                                                   for h in holds(ledger)),
                          timeout=wait_seconds + self.poll_timeout, describe=lambda ledger: str(holds(ledger)))

    def reconciliation(self) -> Exchange:
        """The platform's own reconciliation report (platform admin)."""
        return expect_status(self.api.get("/admin/billing/reconciliation", token=self.keys.admin_token()), 200,
                             "the reconciliation report")

    def expect_reconciliation_balances(self) -> Exchange:
        """Balanced, and no discrepancy on an account of the scenario's orgs."""
        exchange = self.reconciliation()
        body = exchange.json()
        mine = {org.account_id for org in self.world.orgs.values()}
        ours = [d for d in body.get("discrepancies", []) if d.get("account_id") in mine]
        expect_true(body.get("balanced") is True and not ours,
                    f"Expected the reconciliation to balance, but it reported {body.get('discrepancies')}", exchange)
        return exchange
