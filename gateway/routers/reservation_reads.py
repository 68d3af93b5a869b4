"""Reading one reservation from the tenant's side: a member through the org, or an API key of the org.

A reservation of another org is answered exactly like one that does not exist (404), so ids cannot be probed
across orgs; the attempt is audited as denied.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy import select

from gateway.models import Org, Reservation
from gateway.principals import Principal, api_key, deny, user
from gateway.runtime import Runtime, RuntimeDep
from gateway.services import ledger
from gateway.services.orgs import not_in_org, org_for_member

router = APIRouter()


def _find(rt: Runtime, account_id: str, reservation_id: str) -> dict | None:
    with rt.db.transaction() as session:
        reservation = session.scalar(select(Reservation).where(Reservation.id == reservation_id,
                                                               Reservation.account_id == account_id))
        if reservation is None:
            return None
        if reservation.status == "pending":
            ledger.expire_one(session, reservation)  # a reservation past its TTL reads as expired
        return ledger.reservation_json(reservation)


@router.get("/orgs/{slug}/reservations/{reservation_id}")
def org_reservation(slug: str, reservation_id: str, rt: RuntimeDep, principal: Principal = Depends(user)):
    org, _ = org_for_member(rt, principal, slug, "reservations.read")
    found = _find(rt, org.account_id, reservation_id)
    if found is None:
        raise not_in_org(rt, principal, code="reservation_not_found", action="reservations.read",
                         message=f"Reservation '{reservation_id}' was not found in org '{slug}'.",
                         target=f"reservation:{reservation_id}", org=slug)
    return found


@router.get("/v1/reservations/{reservation_id}")
def key_reservation(reservation_id: str, rt: RuntimeDep, principal: Principal = Depends(api_key)):
    with rt.db.sessions() as session:
        account_id = session.scalar(select(Org.account_id).where(Org.id == principal.org_id))
    found = _find(rt, account_id, reservation_id)
    if found is None:
        raise deny(rt, 404, "reservation_not_found", f"Reservation '{reservation_id}' was not found for this key's "
                   f"org.", actor=principal.actor, action="reservations.read",
                   target=f"reservation:{reservation_id}", org=principal.org_slug)
    return found
