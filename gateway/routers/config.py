"""Declarative configuration: trigger a sync and read the reconciler's status."""
from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from gateway import audit, context
from gateway.config_sync import status_json
from gateway.models import AuditEvent, ConfigState
from gateway.principals import Principal, admin
from gateway.runtime import Runtime, RuntimeDep

router = APIRouter(prefix="/admin/config")


@router.post("/sync")
async def sync_now(rt: RuntimeDep, principal: Principal = Depends(admin)):
    """Run one reconcile pass now (after any pass in progress) and answer with the status it left.

    A revision applied by this pass is audited as `config.apply` with the admin as actor and this request's id."""
    result = await run_in_threadpool(rt.reconciler.sync, principal.actor)
    await run_in_threadpool(_audit_quiet_pass, rt, principal, result)
    return result


def _audit_quiet_pass(rt: Runtime, principal: Principal, result: dict) -> None:
    """A pass that applied, pruned and corrected nothing still leaves this request's one event (config.sync)."""
    request_id = context.current_request_id()
    with rt.db.transaction() as session:
        if session.scalar(select(AuditEvent.id).where(AuditEvent.request_id == request_id).limit(1)) is not None:
            return
        audit.record(session, principal.actor, "config.sync", target=f"revision:{result.get('revision')}",
                     reason=(f"nothing applied: {result['error']}" if result.get("error")
                             else "nothing to change: the applied revision is in force"),
                     details={"status": result.get("status"), "target_revision": result.get("target_revision")})


@router.get("/status")
def config_status(rt: RuntimeDep, principal: Principal = Depends(admin)):
    with rt.db.sessions() as session:
        return {**status_json(session.get(ConfigState, 1)), "last_pass_ms": rt.reconciler.last_pass_ms}
