"""Moving money back, and moves the gateway must refuse (issue 16): a platform admin voiding a charge in whole or in
part (with a reason and an Idempotency-Key), releases and finalizes of reservations that can no longer move, and
the audit event each finalize, release, expiry and void leaves. Accounts and reservations are the scenario's own,
seeded through support.domain.billing_api."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import select

from support.client.api import Exchange
from support.client.assertions import expect_equal, expect_status, expect_true, problem_field
from support.domain.billing_api import Billing
from support.harness.money import usd
from support.harness.waits import wait_until
from support.harness.world import Reservation

# Why a void was refused, in the sentence's words -> (HTTP status, problem `code`).
VOID_REFUSALS = {
    "it is more than is left of the charge": (422, "void_exceeds_charge"),
    "nothing has been charged yet": (409, "reservation_not_charged"),
    "the charge was voided in full already": (409, "reservation_voided"),
    "it carries no idempotency key": (428, "idempotency_key_required"),
}
# A move of a reservation, in the sentence's words -> its audit action.
AUDITED_MOVES = {"finalize": "billing.finalize", "release": "billing.release", "expiry": "billing.expire",
                 "void": "billing.void"}


class Reversals:
    def __init__(self, billing: Billing):
        self.billing = billing
        self.api, self.db, self.world = billing.api, billing.db, billing.world

    # ---- voids -------------------------------------------------------------------------------------------------

    def void(self, reservation: Reservation, amount: int | None, reason: str, key: str | None) -> Exchange:
        """A platform admin voids `amount` of the reservation's charge (None: all that is left of it)."""
        body = {"reason": reason} if amount is None else {"reason": reason, "amount_micros": amount}
        headers = {"Idempotency-Key": self.billing.idempotency_key(key)} if key else None
        self.world.last.ledger_entries = self.billing.ledger_entries(reservation.account)
        answer = self.api.post(f"/admin/billing/reservations/{reservation.id}/void", token=self.billing.admin(),
                               json_body=body, headers=headers)
        self.world.moves.voids.append(answer)
        return answer

    def expect_voided(self, answer: Exchange, voided: int, status: str) -> None:
        expect_status(answer, 200, "a platform admin voiding the charge")
        body = answer.json()
        expect_equal((body.get("voided_micros"), body.get("status")), (voided, status),
                     f"the reservation's voided amount and status after the void ({usd(voided)} voided in all)",
                     answer)

    @staticmethod
    def expect_void_refused(answer: Exchange, reason: str) -> None:
        if reason not in VOID_REFUSALS:
            raise AssertionError(f"Unknown refusal {reason!r}; the suite knows: {', '.join(VOID_REFUSALS)}")
        status, code = VOID_REFUSALS[reason]
        expect_status(answer, status, f"a void refused because {reason}")
        expect_equal(problem_field(answer, "code"), code, f"the refusal's code (refused because {reason})", answer)
        expect_equal(problem_field(answer, "request_id"), answer.request_id, "the request id quoted in the refusal",
                     answer)

    # ---- refused moves -----------------------------------------------------------------------------------------

    @staticmethod
    def expect_refused_naming_state(answer: Exchange, state: str) -> None:
        """409 reservation_not_pending, the message naming the state the reservation is in."""
        expect_status(answer, 409, f"moving a reservation that is {state}")
        expect_equal(problem_field(answer, "code"), "reservation_not_pending", "the refusal's code", answer)
        message = problem_field(answer, "detail") or ""
        expect_true(f"it is {state}" in message, f"Expected the refusal to say the reservation is {state} "
                    f"('it is {state}'), but it said: {message!r}", answer)

    def pass_time_to_live(self, reservation: Reservation) -> None:
        """Wait (by the clock, reading nothing through the gateway) until the reservation's time to live is past."""
        table = self.db.table("reservations")
        with self.db.engine.connect() as conn:
            expires = conn.scalar(select(table.c.expires_at).where(table.c.id == reservation.id))
        expires = expires if expires.tzinfo else expires.replace(tzinfo=timezone.utc)
        wait_until(f"the time to live of reservation {reservation.id} to pass ({expires.isoformat()})",
                   lambda: datetime.now(timezone.utc), lambda now: now > expires,
                   timeout=self.billing.poll_timeout, describe=lambda now: now.isoformat(), max_interval=0.02)

    def expect_no_settlement(self, reservation: Reservation, answer: Exchange) -> None:
        kinds = self.billing.entries_for(reservation)
        expect_true("finalize" not in kinds, f"Expected no finalize entry for reservation {reservation.id}, but its "
                    f"ledger entries are {kinds}", answer)

    # ---- the audit log -----------------------------------------------------------------------------------------

    def audited(self, reservation: Reservation, move: str) -> tuple[list[dict], Exchange]:
        exchange = expect_status(self.api.get(f"/admin/audit?action={AUDITED_MOVES[move]}&limit=1000",
                                              token=self.billing.admin()), 200,
                                 "a platform admin reading the audit log")
        return [e for e in exchange.json()["events"] if e.get("target") == f"reservation:{reservation.id}"], exchange

    def expect_audited(self, reservation: Reservation, moves: list[str]) -> None:
        """Each move left exactly one event on the reservation (the expiry's is the gateway's own)."""
        for move in moves:
            events, exchange = wait_until(
                f"the {move} of reservation {reservation.id} to be in the audit log",
                lambda m=move: self.audited(reservation, m), lambda found: bool(found[0]),
                timeout=self.billing.poll_timeout, describe=lambda found: f"{len(found[0])} events")
            expect_equal(len(events), 1, f"the {AUDITED_MOVES[move]} events on reservation {reservation.id}",
                         exchange)
            actor = "system" if move == "expiry" else ("admin" if move == "void" else "service")
            expect_equal((events[0]["actor"]["type"], events[0]["outcome"]), (actor, "allowed"),
                         f"who made the {move} of reservation {reservation.id}, and its outcome", exchange)
