"""Billing for services (S2S token) and platform admins: reservations, balances, minting, reconciliation."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import Field
from sqlalchemy import select

from gateway import audit
from gateway.bodies import RequestBody
from gateway.errors import ApiError
from gateway.models import Account, Org, Reservation
from gateway.principals import Principal, admin, deny, service
from gateway.runtime import Runtime, RuntimeDep
from gateway.services import idempotency, ledger

router = APIRouter()
AUDITED = "audited"  # in a stored refusal: its denial was audited in the operation's own transaction


class NewReservation(RequestBody):
    account_id: str = Field(min_length=1, max_length=64)
    amount_micros: int = Field(gt=0, le=ledger.MAX_MICROS)
    ttl_seconds: float = Field(default=300, gt=0, le=7 * 24 * 3600)


class Finalize(RequestBody):
    actual_micros: int = Field(ge=0, le=ledger.MAX_MICROS)


class Mint(RequestBody):
    account_id: str = Field(min_length=1, max_length=64)
    amount_micros: int = Field(gt=0, le=ledger.MAX_MICROS)
    reason: str = Field(min_length=1, max_length=500)


def _check_anchor(rt: Runtime, principal: Principal, account_id: str, anchor: str | None, action: str) -> None:
    """An anchored account answers only to requests that carry its identity anchor; unknown accounts are 404."""
    with rt.db.sessions() as session:
        account = session.get(Account, account_id)
    if account is None:
        raise deny(rt, 404, "account_not_found", f"Account '{account_id}' does not exist.", actor=principal.actor,
                   action=action, target=f"account:{account_id}")
    if account.identity_anchor is not None and anchor != account.identity_anchor:
        why = "no X-Identity-Anchor header was sent" if anchor is None else "X-Identity-Anchor does not match"
        raise deny(rt, 403, "identity_anchor_mismatch",
                   f"Forbidden: account '{account_id}' is anchored to an identity and {why}.",
                   actor=principal.actor, action=action, target=f"account:{account_id}")


def org_of_account(session, account_id: str) -> str | None:
    return session.scalar(select(Org.slug).where(Org.account_id == account_id))


def _account_of(rt: Runtime, reservation_id: str) -> str | None:
    with rt.db.sessions() as session:
        reservation = session.get(Reservation, reservation_id)
        return reservation.account_id if reservation else None


def _respond(rt: Runtime, principal: Principal, action: str, target: str, status: int, body: dict,
             replayed: bool) -> JSONResponse:
    """The operation's answer; a replay of an earlier answer (Idempotency-Key) is a request too and is audited."""
    error = idempotency.replay_error(status, body)
    if error is not None:
        error.audited = bool(body.get(AUDITED)) and not replayed  # else the caller audits it
        raise error
    if replayed:
        with rt.db.transaction() as session:
            audit.record(session, principal.actor, action, target=target,
                         reason="Idempotency-Key replay: the first response was returned again",
                         details={"replayed": True})
    return JSONResponse(body, status_code=status, headers={"Idempotent-Replayed": "true"} if replayed else None)


def _is_refusal(exc: ApiError) -> bool:
    """A 4xx decided inside the operation or by Idempotency-Key handling (replays included) that has no audit
    event yet: it gets one."""
    return 400 <= exc.status < 500 and not getattr(exc, "audited", False)


def _run_once(rt: Runtime, principal: Principal, action: str, target: str, scope: str, idempotency_key: str | None,
              body: dict, operation) -> JSONResponse:
    """Run a money-moving operation at most once per Idempotency-Key; audit it if it is refused."""
    try:
        status, response, replayed = idempotency.run(rt.db, scope, idempotency_key, body, operation)
        return _respond(rt, principal, action, target, status, response, replayed)
    except ApiError as exc:
        if _is_refusal(exc):
            raise _refuse_and_audit(rt, principal, action, target, exc)
        raise


def _refuse_and_audit(rt: Runtime, principal: Principal, action: str, target: str, exc: ApiError) -> ApiError:
    return deny(rt, exc.status, exc.code, exc.message, actor=principal.actor, action=action, target=target)


@router.post("/billing/reservations", status_code=201)
def create_reservation(body: NewReservation, request: Request, rt: RuntimeDep, principal: Principal = Depends(service),
                       idempotency_key: str | None = Header(default=None),
                       x_identity_anchor: str | None = Header(default=None)):
    _check_anchor(rt, principal, body.account_id, x_identity_anchor, "billing.reserve")

    def operation(session):
        try:
            reservation = ledger.reserve(session, body.account_id, body.amount_micros, body.ttl_seconds,
                                         request_id=request.state.request_id)
        except ledger.Shortfall as short:
            # Refused, with nothing written: the denial is audited in this same transaction (one write-lock turn
            # instead of two on SQLite, which matters when many reservations arrive at once).
            message = (f"Account '{body.account_id}' cannot hold {ledger.usd(body.amount_micros)}: only "
                       f"{ledger.usd(short.account.available_micros)} is available.")
            audit.record(session, principal.actor, "billing.reserve", target=f"account:{body.account_id}",
                         outcome="denied", reason=message, org=org_of_account(session, body.account_id))
            return 402, {"error_code": "insufficient_credit", "message": message, AUDITED: True}
        audit.record(session, principal.actor, "billing.reserve", target=f"reservation:{reservation.id}",
                     org=org_of_account(session, body.account_id),
                     details={"account_id": body.account_id, "amount_micros": body.amount_micros})
        return 201, ledger.reservation_json(reservation)

    return _run_once(rt, principal, "billing.reserve", f"account:{body.account_id}",
                     f"reserve:{principal.actor.id}", idempotency_key, body.model_dump(), operation)


@router.get("/billing/reservations/{reservation_id}")
def get_reservation(reservation_id: str, rt: RuntimeDep, principal: Principal = Depends(service),
                    x_identity_anchor: str | None = Header(default=None)):
    account_id = _account_of(rt, reservation_id)
    if account_id is None:
        raise deny(rt, 404, "reservation_not_found", f"Reservation '{reservation_id}' does not exist.",
                   actor=principal.actor, action="billing.read", target=f"reservation:{reservation_id}")
    _check_anchor(rt, principal, account_id, x_identity_anchor, "billing.read")
    with rt.db.transaction() as session:
        reservation = ledger.load_reservation(session, reservation_id)
        if reservation.status == "pending":
            ledger.expire_one(session, reservation)
        return ledger.reservation_json(reservation)


def _move(rt: Runtime, principal: Principal, reservation_id: str, anchor: str | None, action: str,
          idempotency_key: str | None, body: dict, move) -> JSONResponse:
    account_id = _account_of(rt, reservation_id)
    if account_id is None:
        raise deny(rt, 404, "reservation_not_found", f"Reservation '{reservation_id}' does not exist.",
                   actor=principal.actor, action=action, target=f"reservation:{reservation_id}")
    _check_anchor(rt, principal, account_id, anchor, action)

    def operation(session):
        reservation = move(session)
        audit.record(session, principal.actor, action, target=f"reservation:{reservation_id}",
                     org=org_of_account(session, account_id),
                     details={"account_id": account_id, **body})
        return 200, ledger.reservation_json(reservation)

    return _run_once(rt, principal, action, f"reservation:{reservation_id}", f"{action}:{reservation_id}",
                     idempotency_key, body, operation)


@router.post("/billing/reservations/{reservation_id}/finalize")
def finalize(reservation_id: str, body: Finalize, request: Request, rt: RuntimeDep,
             principal: Principal = Depends(service), idempotency_key: str | None = Header(default=None),
             x_identity_anchor: str | None = Header(default=None)):
    return _move(rt, principal, reservation_id, x_identity_anchor, "billing.finalize", idempotency_key,
                 body.model_dump(),
                 lambda s: ledger.finalize(s, reservation_id, body.actual_micros, request.state.request_id))


@router.post("/billing/reservations/{reservation_id}/release")
def release(reservation_id: str, request: Request, rt: RuntimeDep, principal: Principal = Depends(service),
            idempotency_key: str | None = Header(default=None), x_identity_anchor: str | None = Header(default=None)):
    return _move(rt, principal, reservation_id, x_identity_anchor, "billing.release", idempotency_key, {},
                 lambda s: ledger.release(s, reservation_id, request.state.request_id))


@router.get("/billing/accounts/{account_id}")
def get_account(account_id: str, rt: RuntimeDep, principal: Principal = Depends(service),
                x_identity_anchor: str | None = Header(default=None)):
    _check_anchor(rt, principal, account_id, x_identity_anchor, "billing.read")
    with rt.db.transaction() as session:
        ledger.expire_due(session, account_id=account_id)
        account = ledger.get_account(session, account_id)
        return {"account_id": account.id, **ledger.balances(account).as_json()}


@router.post("/admin/billing/mint", status_code=201)
def mint(body: Mint, request: Request, rt: RuntimeDep, principal: Principal = Depends(admin),
         idempotency_key: str | None = Header(default=None)):
    def operation(session):
        lot = ledger.mint(session, body.account_id, body.amount_micros, body.reason, request.state.request_id)
        audit.record(session, principal.actor, "billing.mint", target=f"account:{body.account_id}",
                     org=org_of_account(session, body.account_id),
                     details={"lot_id": lot.id, "amount_micros": body.amount_micros, "reason": body.reason})
        return 201, {"lot_id": lot.id, "account_id": body.account_id, "amount_micros": body.amount_micros}

    return _run_once(rt, principal, "billing.mint", f"account:{body.account_id}", f"mint:{principal.actor.id}",
                     idempotency_key, body.model_dump(), operation)


@router.get("/admin/billing/reconciliation")
def reconciliation(rt: RuntimeDep, principal: Principal = Depends(admin)):
    with rt.db.transaction() as session:
        ledger.expire_due(session)
    with ledger.snapshot(rt.db) as session:
        return ledger.reconciliation(session)
