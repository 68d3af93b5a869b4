"""OpenAI-compatible model traffic for API keys: reserve the worst case, route, charge the actual usage."""
from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import select

from gateway import audit
from gateway.errors import ApiError
from gateway.models import Model, Org
from gateway.principals import Principal, api_key, deny
from gateway.runtime import Runtime, runtime
from gateway.services import ledger
from gateway.services.routing import call_in_order, cost_micros, estimate_prompt_tokens

router = APIRouter(prefix="/v1")

MAX_TOKENS_LIMIT = 100_000


def _visible_models(session, org: Org) -> list[Model]:
    models = session.scalars(select(Model).order_by(Model.name)).all()
    return [m for m in models if org.allowed_models is None or m.name in org.allowed_models]


@router.get("/models")
def list_models(principal: Principal = Depends(api_key), rt: Runtime = Depends(runtime)):
    with rt.db.sessions() as session:
        org = session.get(Org, principal.org_id)
        models = _visible_models(session, org)
    return {"object": "list", "data": [{"id": m.name, "object": "model", "owned_by": "gateway"} for m in models]}


def _parse(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"The request body is not valid JSON: {exc}.")
    except RecursionError:
        raise ApiError(400, "invalid_json", "The request body is nested too deeply to read.")
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "The request body must be a JSON object.")
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "invalid_json", "The request body holds a lone UTF-16 surrogate escape (such as "
                       "\\ud800), which is not text.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise ApiError(400, "invalid_request", "'model' is required and must be a string.", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "invalid_request", "'messages' must be a non-empty array.", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ApiError(400, "invalid_request", f"messages[{i}] must be an object with a string 'role'.",
                           param=f"messages[{i}]")
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (type(max_tokens) is not int or not 1 <= max_tokens <= MAX_TOKENS_LIMIT):
        raise ApiError(400, "invalid_request", f"'max_tokens' must be an integer from 1 to {MAX_TOKENS_LIMIT}.",
                       param="max_tokens")
    if body.get("stream"):
        raise ApiError(400, "unsupported", "Streaming is not supported by this gateway.", param="stream")
    return body


def _admit(rt: Runtime, principal: Principal, body: dict, request_id: str):
    """Check the model and the org's budget, then hold the worst-case cost. Runs in a worker thread."""
    with rt.db.sessions() as session:
        org = session.get(Org, principal.org_id)
        model = session.get(Model, body["model"])
        if model is not None and org.allowed_models is not None and model.name not in org.allowed_models:
            model = None
    if model is None:
        raise deny(rt, 404, "model_not_found", f"The model '{body['model']}' does not exist or is not available "
                   f"to org '{org.slug}'.", actor=principal.actor, action="chat.completion",
                   target=f"model:{body['model']}", org=org.slug)
    max_tokens = body.get("max_tokens") or model.default_max_tokens
    worst = cost_micros(estimate_prompt_tokens(body["messages"]), max_tokens, model.prompt_price_per_1k_micros,
                        model.completion_price_per_1k_micros)
    ttl = rt.settings.upstream_timeout_seconds * max(1, len(model.backends)) + 30
    try:
        with rt.db.transaction() as session:
            reservation = ledger.reserve(session, org.account_id, worst, ttl, budget_limit=org.budget_limit_micros,
                                         request_id=request_id)
    except ledger.Shortfall as short:
        account = short.account
        if short.reason == "budget_exceeded":
            message = (f"Budget exceeded for org '{org.slug}': limit {ledger.usd(org.budget_limit_micros)}, spent "
                       f"{ledger.usd(account.spent_micros)}, held {ledger.usd(account.held_micros)}; this request "
                       f"needs up to {ledger.usd(worst)}.")
        else:
            message = (f"Insufficient credit for org '{org.slug}': {ledger.usd(account.available_micros)} "
                       f"available; this request needs up to {ledger.usd(worst)}.")
        raise deny(rt, 402, short.reason, message, actor=principal.actor, action="chat.completion",
                   target=f"model:{model.name}", org=org.slug,
                   details={"limit_micros": org.budget_limit_micros, "spent_micros": account.spent_micros,
                            "held_micros": account.held_micros, "needed_micros": worst})
    return org, model, reservation, max_tokens


def _settle(rt: Runtime, principal: Principal, org: Org, model: Model, reservation_id: str, result, request_id: str):
    with rt.db.transaction() as session:
        if result.answered and result.status < 400:
            usage = result.body.get("usage") or {}
            actual = cost_micros(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                                 model.prompt_price_per_1k_micros, model.completion_price_per_1k_micros)
            held = ledger.load_reservation(session, reservation_id).amount_micros
            charged = min(actual, held)
            ledger.finalize(session, reservation_id, charged, request_id)
            audit.record(session, principal.actor, "chat.completion", target=f"model:{model.name}", org=org.slug,
                         details={"backend": result.backend, "charged_micros": charged, "usage": usage,
                                  "reservation_id": reservation_id})
            return charged
        ledger.release(session, reservation_id, request_id)
        outcome = "allowed" if result.answered else "failed"
        reason = (f"backend {result.backend} refused the request with {result.status}" if result.answered
                  else "every backend failed: " + ", ".join(f"{a.backend} {a.outcome}" for a in result.attempts))
        audit.record(session, principal.actor, "chat.completion", target=f"model:{model.name}", org=org.slug,
                     outcome=outcome, reason=reason, details={"reservation_id": reservation_id,
                                                              "attempts": [a.__dict__ for a in result.attempts]})
        return 0


@router.post("/chat/completions")
async def chat_completions(request: Request, principal: Principal = Depends(api_key), rt: Runtime = Depends(runtime)):
    body = await run_in_threadpool(_parse, await request.body())  # a large body parses off the event loop
    request_id = request.state.request_id
    with rt.db.sessions() as session:
        org = session.get(Org, principal.org_id)
    if org.rate_limit_requests and org.rate_limit_window_seconds:
        retry_after = rt.rate_limiter.check(principal.key_id, org.rate_limit_requests, org.rate_limit_window_seconds)
        if retry_after is not None:
            raise await run_in_threadpool(
                deny, rt, 429, "rate_limit_exceeded",
                f"Rate limit exceeded for this key in org '{org.slug}': {org.rate_limit_requests} requests per "
                f"{org.rate_limit_window_seconds} s; retry after {retry_after} s.",
                actor=principal.actor, action="chat.completion", target=f"model:{body['model']}", org=org.slug,
                headers={"Retry-After": str(retry_after)})
    org, model, reservation, max_tokens = await run_in_threadpool(_admit, rt, principal, body, request_id)
    payload = {**body, "max_tokens": max_tokens}
    try:
        result = await call_in_order(rt.http, model.backends, payload,
                                     default_timeout=rt.settings.upstream_timeout_seconds,
                                     connect_timeout=rt.settings.upstream_connect_timeout_seconds)
    except BaseException:
        await run_in_threadpool(_release_quietly, rt, reservation.id, request_id)
        raise
    await run_in_threadpool(_settle, rt, principal, org, model, reservation.id, result, request_id)
    if not result.answered:
        tried = "; ".join(f"{a.backend}: {a.outcome}{f' {a.status}' if a.status else ''}" for a in result.attempts)
        raise ApiError(502, "backends_unavailable",
                       f"Every backend for model '{model.name}' failed ({tried}); nothing was charged.")
    return JSONResponse(result.body, status_code=result.status, headers={"X-Gateway-Backend": result.backend})


def _release_quietly(rt: Runtime, reservation_id: str, request_id: str) -> None:
    try:
        with rt.db.transaction() as session:
            ledger.release(session, reservation_id, request_id)
    except ApiError:
        pass  # already moved (expired or released)
