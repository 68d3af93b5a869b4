"""Billing in business terms: accounts seeded with credit lots, pending reservations and identity anchors (written
straight into the gateway's live schema, with the ledger entries that make them add up), the service's and the
platform admin's billing calls, the reconciliation, and bursts of requests fired at once.

Seeding writes exactly what the gateway itself would write: an account whose balances equal its postings, one
`mint` entry per credit lot, one `reserve` entry per pending reservation. Each seed is one transaction, so a
reconciliation running at the same moment (another scenario's, or chat traffic's) never sees half of it. Cleanup
deletes the account with every row that hangs off it, also in one transaction.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

import requests
from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.exc import DBAPIError
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from support.client import evidence
from support.tokens import service_tokens
from support.client.api import ApiClient, Exchange
from support.harness.assertions import expect_equal, expect_status, expect_true, problem_field
from support.database.reflection import Database
from support.tokens.signing_keys import KeyMaterial
from support.harness.money import usd
from support.harness.namespace import Namespace
from support.harness.waits import wait_until

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


@dataclass
class Account:
    name: str
    id: str
    anchor: str | None = None


@dataclass
class Reservation:
    id: str
    account: Account
    amount_micros: int


@dataclass
class Burst:
    """Requests fired at once, and what the account looked like (read straight from the database) meanwhile."""
    exchanges: list[Exchange]
    samples: list[dict] = field(default_factory=list)
    elapsed_s: float = 0.0

    def statuses(self) -> dict[int | None, int]:
        counts: dict[int | None, int] = {}
        for exchange in self.exchanges:
            counts[exchange.status] = counts.get(exchange.status, 0) + 1
        return counts


def _uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class Billing:
    """One scenario's billing world: its accounts, its reservations, its last answer."""

    def __init__(self, db: Database, api: ApiClient, keys: KeyMaterial, ns: Namespace,
                 add_cleanup: Callable, poll_timeout: float):
        self.db, self.api, self.keys, self.ns = db, api, keys, ns
        self.add_cleanup = add_cleanup
        self.poll_timeout = poll_timeout
        self.accounts: dict[str, Account] = {}
        self.reservations: list[Reservation] = []
        self.idempotency_keys: dict[str, str] = {}
        self.last: Exchange | None = None
        self.entries_before: int | None = None  # ledger entries on the account before the last action
        self.burst: Burst | None = None

    # ---- the scenario's things -----------------------------------------------------------------------------------

    def account(self, name: str = "the account") -> Account:
        if name not in self.accounts:
            raise AssertionError(f"The scenario has no billing account called {name!r}; it knows: "
                                 f"{', '.join(self.accounts) or 'none'}")
        return self.accounts[name]

    def reservation(self) -> Reservation:
        if not self.reservations:
            raise AssertionError("The scenario has no reservation yet: seed one or have the service reserve first")
        return self.reservations[-1]

    def idempotency_key(self, words: str) -> str:
        """A key unique to this scenario of this run ('order-1' -> 'order-1-r1122...'), so runs never share one."""
        return self.idempotency_keys.setdefault(words, self.ns.name(words))

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
        self.accounts[name] = account
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
        self.reservations.append(reservation)
        return reservation

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
        keys = list(self.idempotency_keys.values())
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
        self.entries_before = self.ledger_entries(account)
        self.last = send()
        return self.last

    def reserve(self, account: Account, amount: int, *, ttl_seconds: float = 300, anchor=DEFAULT,
                key: str | None = None, credential: str | None = None) -> Exchange:
        body = {"account_id": account.id, "amount_micros": amount, "ttl_seconds": ttl_seconds}
        exchange = self._act(account, lambda: self.api.post(
            "/billing/reservations", token=self.service(credential), json_body=body,
            headers=self._headers(account, anchor, key)))
        if exchange.status == 201:
            self.reservations.append(Reservation(exchange.json()["id"], account, amount))
        return exchange

    def finalize(self, reservation: Reservation, actual: int, *, key: str | None = None, anchor=DEFAULT) -> Exchange:
        return self._act(reservation.account, lambda: self.api.post(
            f"/billing/reservations/{reservation.id}/finalize", token=self.service(),
            json_body={"actual_micros": actual}, headers=self._headers(reservation.account, anchor, key)))

    def release(self, reservation: Reservation, *, key: str | None = None) -> Exchange:
        return self._act(reservation.account, lambda: self.api.post(
            f"/billing/reservations/{reservation.id}/release", token=self.service(),
            headers=self._headers(reservation.account, DEFAULT, key)))

    def finalize_unknown(self, actual: int) -> Exchange:
        self.last = self.api.post(f"/billing/reservations/{_uid('res')}/finalize", token=self.service(),
                                  json_body={"actual_micros": actual})
        return self.last

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
        for account in self.accounts.values():
            expect_true(account.id in listed, f"Expected the reconciliation to cover the account {account.id}, but "
                        f"it listed {len(body.get('accounts') or [])} accounts without it", exchange)
        discrepancies = body.get("discrepancies") or []
        mine = [d for d in discrepancies if any(discrepancy_mentions(d, a.id) for a in self.accounts.values())]
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
        for account in self.accounts.values():
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

    def wait_for_expiry(self, reservation: Reservation) -> Exchange:
        """Poll the account (never sleep) until the reservation's amount is no longer held."""
        held_before = self.account_row(reservation.account)["held_micros"]
        wait_until(f"the {usd(reservation.amount_micros)} reservation {reservation.id} to expire and leave the "
                   f"held balance of {reservation.account.id}",
                   lambda: self.balances(reservation.account)[0],
                   lambda seen: seen.get("held_micros", held_before) <= held_before - reservation.amount_micros,
                   timeout=self.poll_timeout, describe=lambda seen: _show(seen))
        self.last = self.read_reservation(reservation)
        return self.last

    # ---- requests fired at once ----------------------------------------------------------------------------------

    def fire_at_once(self, account: Account, count: int, build: Callable[[int], tuple[str, str, dict, dict]],
                     what: str) -> Burst:
        """Send `count` requests at the same instant (released together by a barrier), while a watcher reads the
        account's row from the database as fast as it can. Every exchange is recorded as evidence."""
        prepared = []
        for i in range(count):
            method, path, body, headers = build(i)
            request_id = self.api.next_request_id()
            sent = {"X-Request-ID": request_id, "traceparent": f"00-{self.api.trace_id}-{uuid.uuid4().hex[:16]}-01",
                    "Authorization": f"Bearer {self.service()}", **headers}
            prepared.append(Exchange(method, self.api.base_url + path, path, sent, body, request_id))
        barrier = threading.Barrier(count)
        watching = threading.Event()
        samples: list[dict] = []

        accounts = self.db.table("accounts")
        reading = select(accounts.c.minted_micros, accounts.c.available_micros, accounts.c.held_micros,
                         accounts.c.spent_micros).where(accounts.c.id == account.id)

        def watch():
            with self.db.engine.connect() as conn:
                while not watching.wait(0.01):  # a reading every 10 ms until the burst is over
                    row = conn.execute(reading).mappings().first()
                    conn.rollback()  # end the read, so the next one sees newer commits
                    if row:
                        samples.append(dict(row))

        def send(exchange: Exchange) -> Exchange:
            barrier.wait(timeout=30)
            started = time.perf_counter()
            try:
                response = requests.request(exchange.method, exchange.url, json=exchange.request_body,
                                            headers=exchange.request_headers, timeout=self.api.timeout * 2)
                exchange.status, exchange.text = response.status_code, response.text
                exchange.response_headers = response.headers
            except requests.RequestException as exc:
                exchange.error = f"{type(exc).__name__}: {exc}"
            exchange.elapsed_ms = (time.perf_counter() - started) * 1000
            return exchange

        self.entries_before = self.ledger_entries(account)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        started = time.perf_counter()
        try:
            with ThreadPoolExecutor(max_workers=count) as pool:
                exchanges = list(pool.map(send, prepared))
        finally:
            watching.set()
            watcher.join(timeout=10)
        burst = Burst(exchanges, samples, time.perf_counter() - started)
        self.api.exchanges.extend(exchanges)
        evidence.attach_json(f"{count} {what} fired at once: statuses {burst.statuses()} in "
                             f"{burst.elapsed_s:.2f} s, {len(samples)} balance samples",
                             {"exchanges": [e.evidence() for e in exchanges], "balance_samples": samples[:500]})
        self.burst = burst
        return burst


def _show(balances: dict) -> str:
    return "{" + ", ".join(f"{k.removesuffix('_micros')}: {usd(v) if isinstance(v, int) else v}"
                           for k, v in balances.items()) + "}"


def discrepancy_mentions(discrepancy: dict, account_id: str) -> bool:
    return account_id in json.dumps(discrepancy, default=str)
