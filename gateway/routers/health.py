"""Liveness, readiness, metrics and the published signing keys."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from gateway import metrics
from gateway.runtime import RuntimeDep
from gateway.security import public_jwk

router = APIRouter()


@router.get("/healthz")
async def healthz():  # async: nothing here blocks, and a plain def would cost a thread hop per probe
    return {"status": "ok"}


@router.get("/readyz")
def readyz(rt: RuntimeDep):
    checks = {}
    try:
        rt.db.ping()
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means not ready
        checks["database"] = f"unavailable: {type(exc).__name__}"
    checks["config_sync"] = "ok" if rt.first_sync_done else "waiting for the first configuration sync"
    ready = all(v == "ok" for v in checks.values())
    reason = None if ready else "; ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok")
    return JSONResponse({"status": "ready" if ready else "not_ready", "checks": checks, "reason": reason},
                        status_code=200 if ready else 503)


@router.get("/metrics")
def prometheus_metrics(rt: RuntimeDep):
    body, content_type = metrics.render(rt)
    return Response(body, media_type=content_type)


@router.get("/.well-known/jwks.json")
def jwks(rt: RuntimeDep):
    return {"keys": [public_jwk(k.public_pem, k.kid) for k in rt.keyring.published()]}
