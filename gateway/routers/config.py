"""Declarative configuration: trigger a sync and read the reconciler's status."""
from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from gateway.config_sync import status_json
from gateway.models import ConfigState
from gateway.principals import Principal, admin
from gateway.runtime import Runtime, runtime

router = APIRouter(prefix="/admin/config")


@router.post("/sync")
async def sync_now(principal: Principal = Depends(admin), rt: Runtime = Depends(runtime)):
    """Run one reconcile pass now (after any pass in progress) and answer with the status it left.

    A revision applied by this pass is audited as `config.apply` with the admin as actor and this request's id."""
    return await run_in_threadpool(rt.reconciler.sync, principal.actor)


@router.get("/status")
def config_status(principal: Principal = Depends(admin), rt: Runtime = Depends(runtime)):
    with rt.db.sessions() as session:
        return {**status_json(session.get(ConfigState, 1)), "last_pass_ms": rt.reconciler.last_pass_ms}
