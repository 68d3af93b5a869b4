"""A platform admin's hand on money that went wrong (issue 16): charges voided (refunds), settlements that became
dead letters listed and replayed, and the model backends' circuit breakers shown.

Voids move money, so they need an Idempotency-Key (a retried void gives back once) and a reason, and are audited
(`billing.void`); refusals are audited as denied. A dead letter's replay applies its settlement exactly once
(gateway/services/settlements.py) and is audited (`billing.dead_letter_replay`); the chat request's own event is
written with the charge, under that request's id. Reads are not audited, as everywhere."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import Field
from sqlalchemy import select

from gateway import audit
from gateway.bodies import RequestBody
from gateway.errors import ApiError
from gateway.models import Reservation, SettlementDeadLetter
from gateway.principals import Principal, admin, deny
from gateway.routers.billing import _run_once
from gateway.runtime import RuntimeDep
from gateway.services import ledger, settlements

router = APIRouter()
DEAD_LETTER_STATES = ("dead", "replayed")


class Void(RequestBody):
    amount_micros: int | None = Field(default=None, gt=0, le=ledger.MAX_MICROS)  # None: all that is left
    reason: str = Field(min_length=1, max_length=500)


@router.post("/admin/billing/reservations/{reservation_id}/void")
def void_charge(reservation_id: str, body: Void, request: Request, rt: RuntimeDep,
                principal: Principal = Depends(admin), idempotency_key: str | None = Header(default=None)):
    target = f"reservation:{reservation_id}"
    if idempotency_key is None:
        raise deny(rt, 428, "idempotency_key_required", "A void moves money: send an Idempotency-Key, so that a "
                   "retried void gives back once.", actor=principal.actor, action="billing.void", target=target)

    def operation(session):
        reservation, given = ledger.void(session, reservation_id, body.amount_micros, request.state.request_id)
        audit.record(session, principal.actor, "billing.void", target=target,
                     org=ledger.org_of_account(session, reservation.account_id), reason=body.reason,
                     details={"account_id": reservation.account_id, "amount_micros": given,
                              "charged_micros": reservation.actual_micros,
                              "voided_micros": reservation.voided_micros})
        return 200, ledger.reservation_json(reservation)

    return _run_once(rt, principal, "billing.void", target, f"void:{reservation_id}", idempotency_key,
                     body.model_dump(), operation)


@router.get("/admin/billing/dead-letters")
def list_dead_letters(rt: RuntimeDep, principal: Principal = Depends(admin),
                      state: str | None = Query(default="dead", description="dead, replayed, or empty for both"),
                      org: str | None = None, request_id: str | None = None,
                      limit: int = Query(default=100, ge=1, le=1000)):
    if state and state not in DEAD_LETTER_STATES:
        raise ApiError(422, "invalid_request", f"state must be one of {', '.join(DEAD_LETTER_STATES)} (or empty for "
                       f"both), not {state!r}.", param="state")
    query = select(SettlementDeadLetter).order_by(SettlementDeadLetter.created_at, SettlementDeadLetter.id)
    for column, value in ((SettlementDeadLetter.state, state), (SettlementDeadLetter.org, org),
                          (SettlementDeadLetter.request_id, request_id)):
        if value:
            query = query.where(column == value)
    with rt.db.sessions() as session:
        letters = session.scalars(query.limit(limit)).all()
    return {"dead_letters": [settlements.dead_letter_json(letter) for letter in letters]}


@router.post("/admin/billing/dead-letters/{dead_letter_id}/replay")
def replay_dead_letter(dead_letter_id: str, rt: RuntimeDep, principal: Principal = Depends(admin)):
    try:
        letter, outcome = settlements.replay(rt.db, dead_letter_id, principal.actor)
    except ApiError as refusal:
        raise deny(rt, refusal.status, refusal.code, refusal.message, actor=principal.actor,
                   action="billing.dead_letter_replay", target=f"dead_letter:{dead_letter_id}")
    with rt.db.transaction() as session:
        reservation = session.get(Reservation, letter.reservation_id)
        audit.record(session, principal.actor, "billing.dead_letter_replay",
                     target=f"reservation:{letter.reservation_id}", org=letter.org,
                     reason=f"dead letter {letter.id} replayed: {outcome.replace('_', ' ')}",
                     details={"dead_letter_id": letter.id, "outcome": outcome, "amount_micros": letter.amount_micros,
                              "request_id": letter.request_id,
                              "reservation_status": reservation.status if reservation else None})
    return {**settlements.dead_letter_json(letter), "outcome": outcome}


@router.get("/admin/routing/circuit-breakers")
def circuit_breakers(rt: RuntimeDep, principal: Principal = Depends(admin), model: str | None = None):
    """This process's breakers (each gateway process keeps its own)."""
    return {"breakers": rt.breakers.snapshot(model)}
