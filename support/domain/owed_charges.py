"""What an answered chat completion owes, followed through faults (issue 16): the completion sent in the background
while a fault is injected, its hold, its charge once the gateway's settlement journal has written it (exactly one
charging entry, at the usage the backend reported), and the dead letter a charge becomes when the database keeps
refusing it, listed and replayed by a platform admin.

A gateway in test mode honours `X-Gateway-Test-Fault: crash-after-journal` (docs/contract.md, "Resilience"): it
journals the charge and dies before writing it, which is how the suite kills it between the answer and the commit.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Callable

import requests
from sqlalchemy import select, update

from support.client.api import Exchange, GatewayUnreachable
from support.client.assertions import expect_equal, expect_status, expect_true, problem_field
from support.database import account_locks, spend
from support.database.reflection import Database
from support.domain.model_routes import ModelRoutes
from support.domain.platform_api import chat_body
from support.harness.money import usd
from support.harness.waits import wait_until
from support.harness.world import OwedCharge
from support.tokens.signing_keys import KeyMaterial

TEST_FAULT_HEADER = "X-Gateway-Test-Fault"
CRASH_AFTER_JOURNAL = "crash-after-journal"
CHARGING_KINDS = ("finalize", "late_charge")
SLOW_ANSWER_MS = 500  # a backend that "takes a moment" answers after this long: time to inject a fault meanwhile


class OwedCharges:
    def __init__(self, routing: ModelRoutes, db: Database, keys: KeyMaterial, add_cleanup: Callable,
                 timeout: float):
        self.routing, self.db, self.keys, self.add_cleanup, self.timeout = routing, db, keys, add_cleanup, timeout
        self.api, self.world = routing.api, routing.world

    @property
    def owed(self) -> OwedCharge:
        return self.world.owed

    # ---- the completion ------------------------------------------------------------------------------------------

    def slow_backend(self) -> None:
        """The model's backend answers, after a moment."""
        model = self.routing.current()
        self.routing.behave(next(iter(model.backends)), "ok", latency_ms=SLOW_ANSWER_MS)

    def start(self, key: str, *, fault: str | None = None) -> Exchange:
        """A chat completion with the key, sent in the background; returns once its hold is placed."""
        model = self.routing.current()
        body = chat_body(model.served_as)
        headers = {TEST_FAULT_HEADER: fault} if fault else None
        exchange = self.api.prepare("POST", "/v1/chat/completions", token=self.world.key(key).secret,
                                    json_body=body, headers=headers)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="owed-completion")
        session = requests.Session()
        self.owed.exchange, self.owed.org = exchange, self.world.key(key).org
        self.owed.in_flight = pool.submit(self.api.send, exchange, json_body=body, session=session)
        pool.shutdown(wait=False)
        self.add_cleanup(session.close)
        self.add_cleanup(self.owed.in_flight.exception, timeout=self.timeout + 30)  # ends once it is answered
        self.owed.reservation = wait_until(
            f"the gateway to place the hold of request {exchange.request_id}",
            lambda: spend.reservation_of_request(self.db, exchange.request_id),
            lambda row: row is not None or self.owed.in_flight.done(), timeout=self.timeout,
            describe=lambda row: "no reservation for it yet")
        expect_true(self.owed.reservation is not None, f"Expected a hold for request {exchange.request_id}, but the "
                    f"request ended without one", exchange)
        return exchange

    def finish(self, *, expect_answer: bool) -> Exchange:
        """The completion, once it ended: answered (200), or cut off with no answer at all."""
        exchange, in_flight = self.owed.exchange, self.owed.in_flight
        error = in_flight.exception(timeout=self.timeout + 30)
        self.api.record(exchange)
        if expect_answer:
            expect_status(exchange, 200, "the chat completion whose charge is followed")
        else:
            expect_true(isinstance(error, GatewayUnreachable), f"Expected the completion to be cut off with no "
                        f"answer, but it ended: {exchange.status if error is None else type(error).__name__}",
                        exchange)
        return exchange

    def run_out_hold(self) -> None:
        """The hold's time to live runs out (its expiry moved into the past, as time passing would while the gateway
        is down and nothing expires it)."""
        reservations = self.db.table("reservations")
        with self.db.engine.begin() as conn:
            conn.execute(update(reservations).where(reservations.c.id == self.owed.reservation["id"])
                         .values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))

    # ---- its charge ----------------------------------------------------------------------------------------------

    def cost(self) -> tuple[int, dict]:
        """(what the completion must be charged, the usage it is priced by): the usage in the client's answer, or,
        when none came, the usage the backend reported for the request it received."""
        exchange = self.owed.exchange
        if exchange.status == 200:
            usage = exchange.json()["usage"]
        else:
            model = self.routing.current()
            name = next(iter(model.backends))
            calls = self.routing.calls_with_request_id(name, exchange.request_id)
            expect_true(bool(calls) and "usage" in calls[-1], f"Expected the {name} backend to have answered request "
                        f"{exchange.request_id}, but its record of it is {calls[-1] if calls else 'none'}", exchange)
            usage = calls[-1]["usage"]
        return self.routing.cost(usage), usage

    def charges(self) -> list[dict]:
        """The charging entries of the completion's reservation (kind, spent amount), oldest first."""
        entries, postings = self.db.table("ledger_entries"), self.db.table("ledger_postings")
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                select(entries.c.id, entries.c.kind, postings.c.amount_micros)
                .join(postings, (postings.c.entry_id == entries.c.id) & (postings.c.bucket == "spent"))
                .where(entries.c.reservation_id == self.owed.reservation["id"],
                       entries.c.kind.in_(CHARGING_KINDS)).order_by(entries.c.created_at)).all()
        return [{"entry": row.id, "kind": row.kind, "spent_micros": int(row.amount_micros)} for row in rows]

    def expect_charged_once(self, kind: str | None = None) -> None:
        """Exactly one charge for the completion (as `kind`, when said), at its usage; waits for the journal."""
        exchange = self.owed.exchange
        expected, usage = self.cost()
        charges = wait_until(f"the charge of request {exchange.request_id} (reservation "
                             f"{self.owed.reservation['id']}) to be written", self.charges, bool,
                             timeout=self.timeout, describe=lambda seen: f"charging entries {seen}")
        expect_equal([(c["kind"] if kind else "a charge", c["spent_micros"]) for c in charges],
                     [(kind or "a charge", expected)],
                     f"the charges of request {exchange.request_id} (usage {usage} at the model's price is "
                     f"{usd(expected)})", exchange)

    def expect_not_charged(self) -> None:
        exchange = self.owed.exchange
        expect_equal(self.charges(), [], f"the charges of request {exchange.request_id} so far", exchange)

    # ---- the account refusing changes, and dead letters ---------------------------------------------------------

    def lock_account(self, org: str) -> None:
        trigger = account_locks.lock(self.db, self.world.org(org).account_id, self.routing.ns.name(f"lock {org}"))
        self.owed.account_lock = trigger
        self.add_cleanup(account_locks.unlock, self.db, trigger)

    def unlock_account(self) -> None:
        account_locks.unlock(self.db, self.owed.account_lock)

    def dead_letters(self, state: str = "") -> Exchange:
        exchange = self.api.get(f"/admin/billing/dead-letters?state={state}&request_id={self.owed.exchange.request_id}",
                                token=self.keys.admin_token())
        return expect_status(exchange, 200, "a platform admin listing the dead letters")

    def await_dead_letter(self) -> dict:
        exchange = self.owed.exchange
        letters = wait_until(f"the charge of request {exchange.request_id} to become a dead letter",
                             lambda: self.dead_letters("dead").json()["dead_letters"], bool, timeout=self.timeout,
                             describe=lambda seen: f"dead letters for it: {seen}")
        expect_equal(len(letters), 1, f"the dead letters of request {exchange.request_id}", exchange)
        self.owed.dead_letter = letters[0]
        return letters[0]

    def expect_dead_letter_names_the_charge(self) -> None:
        letter, exchange = self.owed.dead_letter, self.owed.exchange
        expected, _ = self.cost()
        seen = {k: letter.get(k) for k in ("request_id", "reservation_id", "amount_micros", "state")}
        expect_equal(seen, {"request_id": exchange.request_id, "reservation_id": self.owed.reservation["id"],
                            "amount_micros": expected, "state": "dead"}, "the dead letter a platform admin sees",
                     exchange)
        expect_true(bool(letter.get("error")), f"Expected the dead letter to say why it failed, but it was {letter}",
                    exchange)

    def replay(self) -> Exchange:
        self.owed.replay = self.api.post(f"/admin/billing/dead-letters/{self.owed.dead_letter['id']}/replay",
                                         token=self.keys.admin_token())
        return self.owed.replay

    def expect_replayed(self, answer: Exchange) -> None:
        expect_status(answer, 200, "a platform admin replaying the dead letter")
        expect_equal(answer.json().get("state"), "replayed", "the dead letter's state after its replay", answer)

    def _audit_of(self, request_id: str) -> tuple[list[dict], Exchange]:
        exchange = expect_status(self.api.get(f"/admin/audit?request_id={request_id}&limit=100",
                                              token=self.keys.admin_token()), 200,
                                 "a platform admin reading the audit log")
        return exchange.json()["events"], exchange

    def expect_replay_audited(self) -> None:
        """The replay left its own event, and the completion has its one event, written with its charge."""
        replay, completion = self.owed.replay, self.owed.exchange
        events, exchange = self._audit_of(replay.request_id)
        seen = [(e["action"], e["actor"]["type"], e["target"], e["outcome"]) for e in events]
        expect_equal(seen, [("billing.dead_letter_replay", "admin", f"reservation:{self.owed.reservation['id']}",
                             "allowed")], f"the audit events of the replay (request {replay.request_id})", exchange)
        events, exchange = self._audit_of(completion.request_id)
        expect_equal([e["action"] for e in events], ["chat.completion"],
                     f"the audit events of the completion (request {completion.request_id})", exchange)

    def expect_replay_refused(self, answer: Exchange) -> None:
        expect_status(answer, 409, "replaying a dead letter a second time")
        expect_equal(problem_field(answer, "code"), "dead_letter_replayed", "the refusal's code", answer)
