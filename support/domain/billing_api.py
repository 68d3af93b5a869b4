"""Billing in business terms: accounts seeded with credit lots, pending reservations and identity anchors (written
straight into the gateway's live schema, with the ledger entries that make them add up), the service's and the
platform admin's billing calls, and the reconciliation.

Seeding writes exactly what the gateway itself would write: an account whose balances equal its postings, one
`mint` entry per credit lot, one `reserve` entry per pending reservation. Each seed is one transaction, so a
reconciliation running at the same moment (another scenario's, or chat traffic's) never sees half of it. Cleanup
deletes the account with every row that hangs off it, also in one transaction.
"""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Callable

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.exc import DBAPIError
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from support.client import evidence
from support.tokens import service_tokens
from support.client.api import ApiClient, Exchange, Request
from support.client.assertions import expect_equal, expect_status, expect_true, problem_field
from support.database.reflection import Database
from support.tokens.signing_keys import KeyMaterial
from support.harness.money import usd
from support.harness.namespace import Namespace
from support.harness.waits import wait_until
from support.harness.world import Account, OrgRecord, Reservation, World

if TYPE_CHECKING:  # bursts are sent by support.stress, above this package; only their results are read here
    from support.stress.burst import Burst

# Written on the credit lot of an account the suite corrupts on purpose, in the same transaction as the
# corruption, so that a scenario running in parallel can tell that discrepancy from a real one.
TAMPERED_REASON = "tampered with on purpose by the acceptance suite"
SEED_REASON = "seeded by the acceptance suite"
DEFAULT = object()  # "send the identity anchor the account is anchored to" (a caller acting for its owner)

# Why a request was refused, in the sentence's words -> (HTTP status, problem `code`).
REFUSALS = {
    "the reservation is no longer pending": (409, "reservation_not_pending"),
    "the amount is above what was reserved": (422, "actual_exceeds_reserved"),
    "the reservation does not exist": (404, "reservation_not_found"),
    "the account lacks available credit": (402, "insufficient_credit"),
    "the key was already used for another request": (422, "idempotency_key_reused"),
    "the identity does not match the account's anchor": (403, "identity_anchor_mismatch"),
    "no identity was named for the anchored account": (403, "identity_anchor_mismatch"),
    "the caller is not authenticated": (401, "unauthorized"),
}
# A reservation's status as an answer shows it -> (HTTP status, what answered).
RESERVATION_ANSWERS = {"pending": (201, "the reservation"), "finalized": (200, "the finalization"),
                       "released": (200, "the release"), "expired": (200, "reading the reservation")}


def _uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


STATE_HOLD_MICROS = 10_000  # a reservation made only to be in some state
# The ledger entry that settles a reservation, by the status it was settled to.
SETTLING_ENTRIES = {"finalized": "finalize", "released": "release"}


class Billing:
    """The billing service's and the platform admin's calls, on accounts seeded into the database; the accounts
    and reservations are kept in the scenario's world."""

    def __init__(self, db: Database, api: ApiClient, keys: KeyMaterial, ns: Namespace, world: World,
                 add_cleanup: Callable, poll_timeout: float):
        self.db, self.api, self.keys, self.ns, self.world = db, api, keys, ns, world
        self.add_cleanup = add_cleanup
        self.poll_timeout = poll_timeout

    def idempotency_key(self, words: str) -> str:
        """A key unique to this scenario of this run ('order-1' -> 'order-1-r1122...'), so runs never share one."""
        return self.world.idempotency_keys.setdefault(words, self.ns.name(words))

    # ---- seeding, straight into the live schema ------------------------------------------------------------------

    def seed_account(self, lots: list[int], name: str = "the account") -> Account:
        """An account funded by credit lots, each with its mint entry: minted = available = sum of the lots."""
        account = Account(name, self.ns.name(f"acct {name.removeprefix('the ')}"))
        self.add_cleanup(self.delete_account, account)
        t = self._tables("accounts", "credit_lots", "ledger_entries", "ledger_postings")
        now = datetime.now(timezone.utc)
        total = sum(lots)
        with self.db.engine.begin() as conn:
            conn.execute(insert(t["accounts"]).values(
                id=account.id, identity_anchor=None, minted_micros=total, available_micros=total, held_micros=0,
                spent_micros=0, created_at=now))
            for amount in lots:
                lot_id, entry_id = _uid("lot"), _uid("le")
                conn.execute(insert(t["credit_lots"]).values(id=lot_id, account_id=account.id, amount_micros=amount,
                                                             reason=SEED_REASON, created_at=now))
                self._post(conn, t, entry_id, "mint", account.id, {"issuance": -amount, "available": amount},
                           lot_id=lot_id, at=now)
        self.world.accounts[name] = account
        return account

    def seed_reservation(self, account: Account, amount: int, ttl_seconds: float = 300) -> Reservation:
        """A pending hold on the account, as the gateway would have placed it (conditional on available credit)."""
        t = self._tables("accounts", "reservations", "ledger_entries", "ledger_postings")
        accounts = t["accounts"]
        now = datetime.now(timezone.utc)
        reservation = Reservation(_uid("res"), account, amount)
        with self.db.engine.begin() as conn:
            moved = conn.execute(update(accounts).where(accounts.c.id == account.id,
                                                        accounts.c.available_micros >= amount)
                                 .values(available_micros=accounts.c.available_micros - amount,
                                         held_micros=accounts.c.held_micros + amount)).rowcount
            if moved != 1:
                raise AssertionError(f"Cannot seed a reservation of {usd(amount)} on {account.id}: not enough "
                                     f"available credit")
            conn.execute(insert(t["reservations"]).values(
                id=reservation.id, account_id=account.id, amount_micros=amount, actual_micros=None, status="pending",
                expires_at=now + timedelta(seconds=ttl_seconds), created_at=now, settled_at=None, request_id=None))
            self._post(conn, t, _uid("le"), "reserve", account.id, {"available": -amount, "held": amount},
                       reservation_id=reservation.id, at=now)
        self.world.reservations.append(reservation)
        return reservation

    def org_account(self, org: OrgRecord) -> Account:
        """The account the gateway opened with an org (made through the API, not seeded: nothing to clean up here)."""
        name = f"the account of {org.name}"
        return self.world.accounts.setdefault(name, Account(name, org.account_id))

    def anchor(self, account: Account, identity: str) -> None:
        accounts = self.db.table("accounts")
        with self.db.engine.begin() as conn:
            conn.execute(update(accounts).where(accounts.c.id == account.id).values(identity_anchor=identity))
        account.anchor = identity

    def tamper(self, account: Account, available_delta: int) -> None:
        """Change the account's available balance behind the ledger's back (and mark the account as tampered)."""
        accounts, lots = self.db.table("accounts"), self.db.table("credit_lots")
        with self.db.engine.begin() as conn:
            conn.execute(update(lots).where(lots.c.account_id == account.id).values(reason=TAMPERED_REASON))
            conn.execute(update(accounts).where(accounts.c.id == account.id)
                         .values(available_micros=accounts.c.available_micros + available_delta))

    def delete_account(self, account: Account) -> None:
        """The account and everything hanging off it, in one transaction; retried if the database picks it as
        a deadlock victim (the gateway's expiry sweeper may be settling one of its reservations)."""
        t = self._tables("accounts", "credit_lots", "reservations", "ledger_entries", "ledger_postings",
                         "idempotency_records")
        entries = select(t["ledger_entries"].c.id).where(t["ledger_entries"].c.account_id == account.id)
        keys = list(self.world.idempotency_keys.values())
        for attempt in Retrying(stop=stop_after_attempt(5), wait=wait_exponential(multiplier=0.05, max=0.5),
                                retry=retry_if_exception_type(DBAPIError), reraise=True):
            with attempt, self.db.engine.begin() as conn:
                # Reservations first: once they are gone the sweeper has nothing of this account to settle.
                conn.execute(delete(t["reservations"]).where(t["reservations"].c.account_id == account.id))
                postings = t["ledger_postings"]
                conn.execute(delete(postings).where(or_(postings.c.account_id == account.id,
                                                        postings.c.entry_id.in_(entries))))
                conn.execute(delete(t["ledger_entries"]).where(t["ledger_entries"].c.account_id == account.id))
                conn.execute(delete(t["credit_lots"]).where(t["credit_lots"].c.account_id == account.id))
                conn.execute(delete(t["accounts"]).where(t["accounts"].c.id == account.id))
                if keys:
                    conn.execute(delete(t["idempotency_records"]).where(t["idempotency_records"].c.key.in_(keys)))

    def _tables(self, *names: str) -> dict:
        return {name: self.db.table(name) for name in names}

    @staticmethod
    def _post(conn, t, entry_id, kind, account_id, moves: dict[str, int], *, at, lot_id=None,
              reservation_id=None) -> None:
        conn.execute(insert(t["ledger_entries"]).values(id=entry_id, kind=kind, account_id=account_id,
                                                        reservation_id=reservation_id, lot_id=lot_id,
                                                        request_id=None, created_at=at))
        conn.execute(insert(t["ledger_postings"]), [
            {"entry_id": entry_id, "account_id": account_id, "bucket": bucket, "amount_micros": amount}
            for bucket, amount in moves.items()])

    # ---- reading the database ------------------------------------------------------------------------------------

    def ledger_entries(self, account: Account) -> int:
        entries = self.db.table("ledger_entries")
        with self.db.engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(entries).where(entries.c.account_id == account.id))

    def holds(self, account: Account) -> dict:
        """How many reservations the account has, and how many ledger entries concern a reservation of it."""
        reservations, entries = self.db.table("reservations"), self.db.table("ledger_entries")
        with self.db.engine.connect() as conn:
            return {
                "reservations": conn.scalar(select(func.count()).select_from(reservations)
                                            .where(reservations.c.account_id == account.id)),
                "reservation entries": conn.scalar(select(func.count()).select_from(entries)
                                                   .where(entries.c.account_id == account.id,
                                                          entries.c.reservation_id.is_not(None))),
            }

    def entries_for(self, reservation: Reservation) -> list[str]:
        entries = self.db.table("ledger_entries")
        with self.db.engine.connect() as conn:
            return list(conn.scalars(select(entries.c.kind).where(entries.c.reservation_id == reservation.id)
                                     .order_by(entries.c.created_at)))

    def expect_held_and_settled_once(self, reservation: Reservation, exchange: Exchange) -> None:
        """One reserve entry, then one entry of the kind that settles it as the database says it was settled."""
        kinds = self.entries_for(reservation)
        reservations = self.db.table("reservations")
        with self.db.engine.connect() as conn:
            status = conn.scalar(select(reservations.c.status).where(reservations.c.id == reservation.id))
        settling = SETTLING_ENTRIES.get(status)
        expect_true(settling is not None, f"Expected reservation {reservation.id} to be settled (finalized or "
                    f"released), but it is {status}", exchange)
        expect_equal(kinds, ["reserve", settling], f"the ledger entries of reservation {reservation.id} (held once, "
                     f"then {status} once)", exchange)

    def account_row(self, account: Account) -> dict | None:
        accounts = self.db.table("accounts")
        with self.db.engine.connect() as conn:
            row = conn.execute(select(accounts).where(accounts.c.id == account.id)).mappings().first()
        return dict(row) if row else None

    def own_books(self, account: Account) -> list[str]:
        """The suite's own check of the account, from the rows: balances add up, postings match each bucket and
        every entry's postings sum to zero. Returns what does not hold."""
        postings, entries = self.db.table("ledger_postings"), self.db.table("ledger_entries")
        with self.db.engine.connect() as conn, conn.begin():
            row = conn.execute(select(self.db.table("accounts")).where(
                self.db.table("accounts").c.id == account.id)).mappings().first()
            buckets = dict(conn.execute(select(postings.c.bucket, func.sum(postings.c.amount_micros))
                                        .where(postings.c.account_id == account.id).group_by(postings.c.bucket)).all())
            unbalanced = conn.execute(
                select(postings.c.entry_id, func.sum(postings.c.amount_micros))
                .where(postings.c.entry_id.in_(select(entries.c.id).where(entries.c.account_id == account.id)))
                .group_by(postings.c.entry_id).having(func.sum(postings.c.amount_micros) != 0)).all()
        if row is None:
            return [f"the account {account.id} is not in the database"]
        problems = []
        if row["minted_micros"] != row["available_micros"] + row["held_micros"] + row["spent_micros"]:
            problems.append(f"minted {row['minted_micros']} != available {row['available_micros']} + held "
                            f"{row['held_micros']} + spent {row['spent_micros']}")
        for bucket, balance in (("available", row["available_micros"]), ("held", row["held_micros"]),
                                ("spent", row["spent_micros"]), ("issuance", -row["minted_micros"])):
            if int(buckets.get(bucket) or 0) != balance:
                problems.append(f"postings to {bucket} sum to {int(buckets.get(bucket) or 0)}, the balance says "
                                f"{balance}")
        problems += [f"entry {entry_id} postings sum to {total}" for entry_id, total in unbalanced]
        return problems

    def tampered_accounts(self) -> set[str]:
        lots = self.db.table("credit_lots")
        with self.db.engine.connect() as conn:
            return set(conn.scalars(select(lots.c.account_id).where(lots.c.reason == TAMPERED_REASON)))

    def existing_accounts(self, ids: set[str]) -> set[str]:
        accounts = self.db.table("accounts")
        with self.db.engine.connect() as conn:
            return set(conn.scalars(select(accounts.c.id).where(accounts.c.id.in_(ids)))) if ids else set()

    # ---- the service's and the admin's calls ---------------------------------------------------------------------

    def service(self, credential: str | None = None) -> str | None:
        return service_tokens.from_words(self.keys, credential or "a valid service token").token

    def admin(self, credential: str | None = None) -> str | None:
        return service_tokens.from_words(self.keys, credential or "a valid admin token").token

    def _headers(self, account: Account, anchor, key: str | None) -> dict:
        headers = {}
        anchor = account.anchor if anchor is DEFAULT else anchor
        if anchor is not None:
            headers["X-Identity-Anchor"] = anchor
        if key is not None:
            headers["Idempotency-Key"] = self.idempotency_key(key)
        return headers

    def _act(self, account: Account, send: Callable[[], Exchange]) -> Exchange:
        # Counted only where the database can be read: a billing round trip needs just the API (the smoke run).
        self.world.last.ledger_entries = self.ledger_entries(account) if self.db.url else None
        return send()

    def reserve(self, account: Account, amount: int, *, ttl_seconds: float = 300, anchor=DEFAULT,
                key: str | None = None, credential: str | None = None) -> Exchange:
        body = {"account_id": account.id, "amount_micros": amount, "ttl_seconds": ttl_seconds}
        exchange = self._act(account, lambda: self.api.post(
            "/billing/reservations", token=self.service(credential), json_body=body,
            headers=self._headers(account, anchor, key)))
        if exchange.status == 201:
            self.world.reservations.append(Reservation(exchange.json()["id"], account, amount))
        return exchange

    def reservation_request(self, account: Account, amount: int, *, key: str | None = None) -> Request:
        """A reservation described, not sent (to send many at once)."""
        return Request("POST", "/billing/reservations", token=self.service(),
                       json_body={"account_id": account.id, "amount_micros": amount, "ttl_seconds": 300},
                       headers=self._headers(account, None, key))

    def finalize(self, reservation: Reservation, actual: int, *, key: str | None = None, anchor=DEFAULT) -> Exchange:
        return self._act(reservation.account, lambda: self.api.post(
            f"/billing/reservations/{reservation.id}/finalize", token=self.service(),
            json_body={"actual_micros": actual}, headers=self._headers(reservation.account, anchor, key)))

    def release(self, reservation: Reservation, *, key: str | None = None) -> Exchange:
        return self._act(reservation.account, lambda: self.api.post(
            f"/billing/reservations/{reservation.id}/release", token=self.service(),
            headers=self._headers(reservation.account, DEFAULT, key)))

    def finalize_unknown(self, actual: int) -> Exchange:
        return self.api.post(f"/billing/reservations/{_uid('res')}/finalize", token=self.service(),
                             json_body={"actual_micros": actual})

    def read_account(self, account: Account, *, anchor=DEFAULT, credential: str | None = None) -> Exchange:
        return self.api.get(f"/billing/accounts/{account.id}", token=self.service(credential),
                            headers=self._headers(account, anchor, None))

    def read_reservation(self, reservation: Reservation) -> Exchange:
        return self.api.get(f"/billing/reservations/{reservation.id}", token=self.service(),
                            headers=self._headers(reservation.account, DEFAULT, None))

    def balances(self, account: Account) -> tuple[dict, Exchange]:
        exchange = expect_status(self.read_account(account), 200, f"the service reading the balances of {account.id}")
        return exchange.json(), exchange

    def mint(self, account: Account, amount: int, *, key: str | None = None, credential: str | None = None,
             reason: str = "acceptance top-up") -> Exchange:
        return self._act(account, lambda: self.api.post(
            "/admin/billing/mint", token=self.admin(credential),
            json_body={"account_id": account.id, "amount_micros": amount, "reason": reason},
            headers=self._headers(account, None, key)))

    def lot_amount(self, lot_id: str) -> int | None:
        lots = self.db.table("credit_lots")
        with self.db.engine.connect() as conn:
            return conn.scalar(select(lots.c.amount_micros).where(lots.c.id == lot_id))

    def reconciliation(self) -> Exchange:
        return expect_status(self.api.get("/admin/billing/reconciliation", token=self.admin()), 200,
                             "a platform admin reading the reconciliation")

    def audit_for(self, request_id: str) -> tuple[list[dict], Exchange]:
        exchange = self.api.get(f"/admin/audit?request_id={request_id}&limit=100", token=self.admin())
        expect_status(exchange, 200, f"a platform admin reading the audit log for request {request_id}")
        return exchange.json()["events"], exchange

    # ---- expectations shared by several steps --------------------------------------------------------------------

    def expect_refused(self, exchange: Exchange, reason: str) -> None:
        if reason not in REFUSALS:
            raise AssertionError(f"Unknown refusal {reason!r}; the suite knows: {', '.join(REFUSALS)}")
        status, code = REFUSALS[reason]
        expect_true(exchange.status == status, f"Expected {exchange.method} {exchange.path} to be refused with "
                    f"{status} because {reason}, but it answered {exchange.status}.", exchange)
        expect_equal(problem_field(exchange, "code"), code, f"the refusal's code (refused because {reason})", exchange)
        if exchange.path.startswith("/v1/"):  # OpenAI's error shape has no request id: the answer's header says it
            expect_equal(exchange.served_request_id, exchange.request_id, "the request id the refusal carries "
                         "(X-Request-ID)", exchange)
        else:
            expect_equal(problem_field(exchange, "request_id"), exchange.request_id,
                         "the request id quoted in the refusal", exchange)

    def expect_balances(self, account: Account, expected: dict[str, int]) -> None:
        seen, exchange = self.balances(account)
        actual = {name: seen.get(name) for name in expected}
        expect_true(actual == expected,
                    "Expected the account's balances to be " + _show(expected) + ", but they were " + _show(actual),
                    exchange)

    def expect_books_balanced(self) -> None:
        """The reconciliation covers the scenario's accounts and finds nothing wrong, and the suite's own reading of
        the rows agrees. Discrepancies on accounts another scenario corrupts on purpose (marked so in the same
        transaction as the corruption, or already deleted by its cleanup) are the only ones tolerated."""
        exchange = self.reconciliation()
        body = exchange.json()
        listed = json.dumps(body.get("accounts"), default=str)
        for account in self.world.accounts.values():
            expect_true(account.id in listed, f"Expected the reconciliation to cover the account {account.id}, but "
                        f"it listed {len(body.get('accounts') or [])} accounts without it", exchange)
        discrepancies = body.get("discrepancies") or []
        mine = [d for d in discrepancies if any(discrepancy_mentions(d, a.id) for a in self.world.accounts.values())]
        expect_true(not mine, f"Expected no discrepancy on this scenario's accounts, but the reconciliation "
                    f"reported {mine}", exchange)
        others = [d for d in discrepancies if d not in mine]
        if others:
            named = {str(d.get("account_id")) for d in others}
            excused = self.tampered_accounts() | (named - self.existing_accounts(named))
            real = [d for d in others if str(d.get("account_id")) not in excused]
            expect_true(not real, f"Expected the books to balance, but the reconciliation reported discrepancies "
                        f"that no scenario caused on purpose: {real}", exchange)
            evidence.attach_json("Discrepancies excused: other scenarios corrupt these accounts on purpose", others)
        else:
            expect_equal(body.get("balanced"), True, "the reconciliation's verdict 'balanced'", exchange)
        for account in self.world.accounts.values():
            problems = self.own_books(account)
            expect_true(not problems, f"The reconciliation said balanced, but the suite's own reading of account "
                        f"{account.id} in the database finds: {'; '.join(problems)}", exchange)

    def expect_discrepancy(self, account: Account, amount: int) -> None:
        exchange = self.reconciliation()
        body = exchange.json()
        expect_equal(body.get("balanced"), False, "the reconciliation's verdict 'balanced'", exchange)
        mine = [d for d in body.get("discrepancies") or [] if discrepancy_mentions(d, account.id)]
        expect_true(bool(mine), f"Expected a discrepancy naming the account {account.id}, but the discrepancies "
                    f"were {body.get('discrepancies')}", exchange)
        sized = [d for d in mine if any(isinstance(v, int) and abs(v) == amount for v in d.values())]
        expect_true(bool(sized), f"Expected a discrepancy on {account.id} of {usd(amount)} ({amount} micro-USD), "
                    f"but those naming it were {mine}", exchange)

    def expect_reservation_status(self, answer: Exchange, status: str) -> None:
        """The answer shows the reservation in that status (a new one created, a settled one, an expired one read)."""
        http_status, doing = RESERVATION_ANSWERS[status]
        expect_status(answer, http_status, doing)
        expect_equal(answer.json().get("status"), status,
                     "the new reservation's status" if status == "pending" else "the reservation's status", answer)

    def expect_refusal_audited(self, refused: Exchange) -> None:
        """The refusal left a denied event under the request id the suite sent, without the token presented."""
        events, exchange = self.audit_for(refused.request_id)
        denied = [e for e in events if e.get("outcome") == "denied" and e.get("request_id") == refused.request_id]
        expect_true(bool(denied), f"Expected a denied audit event with request id {refused.request_id} (the refused "
                    f"{refused.method} {refused.path}), but the audit log held {events}", exchange)
        token = (refused.request_headers.get("Authorization") or "").removeprefix("Bearer ")
        leaked = [e for e in denied if token and token in str(e)]
        expect_true(not leaked, "Expected the audit event not to contain the presented token, but it does", exchange)

    # ---- reservations fired at once ------------------------------------------------------------------------------

    @staticmethod
    def expect_burst_fits_credit(burst: Burst, accepted: int, refused: int) -> None:
        ok = burst.answered(201)
        short = [e for e in burst.answered(402) if e.json().get("code") == "insufficient_credit"]
        other = [e for e in burst.exchanges if e not in ok and e not in short]
        expect_true(len(ok) == accepted and len(short) == refused and not other,
                    f"Expected {accepted} reservations accepted (201) and {refused} refused with 402 "
                    f"insufficient_credit, but saw {len(ok)} accepted, {len(short)} refused for credit and "
                    f"{len(other)} other answers {burst.statuses()}; first other: "
                    f"{other[0].summary() if other else 'none'}")
        expect_equal(len({e.json()["id"] for e in ok}), accepted, "the number of distinct reservation ids accepted")

    @staticmethod
    def expect_never_overheld(burst: Burst) -> None:
        samples = burst.samples
        expect_true(len(samples) > 0, "Expected the watcher to read the account at least once during the burst")
        bad = [s for s in samples if s["held_micros"] > s["minted_micros"] or s["available_micros"] < 0
               or s["available_micros"] + s["held_micros"] + s["spent_micros"] != s["minted_micros"]]
        expect_true(not bad, f"Expected held never to exceed the funds (and available never below zero) in any of "
                    f"the {len(samples)} readings taken during the burst, but {len(bad)} broke it, first: "
                    f"{bad[0] if bad else ''}")

    @staticmethod
    def expect_one_reservation_or_retry(burst: Burst) -> None:
        created = burst.answered(201)
        busy = [e for e in burst.answered(409) if e.json().get("code") == "idempotency_conflict"]
        other = [e for e in burst.exchanges if e not in created and e not in busy]
        expect_true(created and not other, f"Expected every answer to be 201 with the one reservation or 409 "
                    f"idempotency_conflict, but saw {burst.statuses()}; first other: "
                    f"{other[0].summary() if other else 'none'}")
        ids = {e.json()["id"] for e in created}
        expect_equal(len(ids), 1, f"the number of distinct reservations in the 201 answers ({sorted(ids)})")

    def hold_in_each_state(self, account: Account, states: list[str]) -> None:
        """One small reservation on the account in each of `states`, moved there through the service's API."""
        for status in states:
            answer = self.reserve(account, STATE_HOLD_MICROS, ttl_seconds=0.2 if status == "expired" else 300)
            self.expect_reservation_status(answer, "pending")
            reservation = self.world.reservation()
            if status == "finalized":
                answer = self.finalize(reservation, STATE_HOLD_MICROS)
            elif status == "released":
                answer = self.release(reservation)
            elif status == "expired":
                answer = self.wait_for_expiry(reservation)
            elif status != "pending":
                raise AssertionError(f"The suite cannot put a reservation in the state {status!r}")
            self.expect_reservation_status(answer, status)

    def wait_for_expiry(self, reservation: Reservation) -> Exchange:
        """Poll the account (never sleep) until the reservation's amount is no longer held."""
        held_before = self.account_row(reservation.account)["held_micros"]
        wait_until(f"the {usd(reservation.amount_micros)} reservation {reservation.id} to expire and leave the "
                   f"held balance of {reservation.account.id}",
                   lambda: self.balances(reservation.account),
                   lambda seen: seen[0].get("held_micros", held_before) <= held_before - reservation.amount_micros,
                   timeout=self.poll_timeout, max_interval=0.05,
                   describe=lambda seen: f"{_show(seen[0])} [request id {seen[1].request_id}]")
        return self.read_reservation(reservation)

    def balance_sampler(self, account: Account) -> Callable[[], dict | None]:
        """A reading of the account's balances straight from the database, on a connection of its own, for a
        watcher to call as fast as it can (each reading its own transaction, so it sees the newest commits)."""
        accounts = self.db.table("accounts")
        reading = select(accounts.c.minted_micros, accounts.c.available_micros, accounts.c.held_micros,
                         accounts.c.spent_micros).where(accounts.c.id == account.id)
        conn = self.db.engine.connect()
        self.add_cleanup(conn.close)

        def sample() -> dict | None:
            row = conn.execute(reading).mappings().first()
            conn.rollback()
            return dict(row) if row else None
        return sample


def _show(balances: dict) -> str:
    return "{" + ", ".join(f"{k.removesuffix('_micros')}: {usd(v) if isinstance(v, int) else v}"
                           for k, v in balances.items()) + "}"


def discrepancy_mentions(discrepancy: dict, account_id: str) -> bool:
    return account_id in json.dumps(discrepancy, default=str)
