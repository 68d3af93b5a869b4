"""OpenAI-compatible model traffic for API keys: reserve the worst case, route, charge the actual usage.

A chat request makes two trips to a worker thread: one to admit it (the key, the body, the rate limit, the model,
and the hold on the org's account, in one transaction) and one to settle it (the finalize or the release and its
audit event, in one transaction). Between them the backends are called on the event loop."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy import select

from gateway import audit
from gateway.errors import ApiError
from gateway.models import Model, Org
from gateway.principals import Principal, api_key, deny
from gateway.runtime import Runtime, runtime
from gateway.services import ledger
from gateway.services.routing import (RouteResult, call_in_order, cost_micros, estimate_prompt_tokens,
                                      worst_case_seconds)

router = APIRouter(prefix="/v1")

MAX_TOKENS_LIMIT = 100_000
MAX_MODEL_NAME = 200


def _visible_models(session, org: Org) -> list[Model]:
    models = session.scalars(select(Model).order_by(Model.name)).all()
    return [m for m in models if org.allowed_models is None or m.name in org.allowed_models]


@router.get("/models")
def list_models(principal: Principal = Depends(api_key), rt: Runtime = Depends(runtime)):
    with rt.db.sessions() as session:
        org = session.get(Org, principal.org_id)
        models = _visible_models(session, org)
    return {"object": "list", "data": [{"id": m.name, "object": "model", "owned_by": "gateway"} for m in models]}


def _no_constants(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _parse(raw: bytes) -> dict:
    try:
        body = json.loads(raw, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"The request body is not valid JSON: {exc}.")
    except RecursionError:
        raise ApiError(400, "invalid_json", "The request body is nested too deeply to read.")
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "invalid_request", "'model' is required and must be a string.", param="model")
    if len(model) > MAX_MODEL_NAME or not model.isprintable():
        raise ApiError(400, "invalid_request", f"'model' must be at most {MAX_MODEL_NAME} printable characters.",
                       param="model")
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


def _encode(payload: dict) -> bytes:
    try:
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "invalid_json", "The request body holds a lone UTF-16 surrogate escape (such as "
                       "\\ud800), which is not text.")


@dataclass
class Admitted:
    principal: Principal
    org_slug: str
    model: str
    prompt_price: int
    completion_price: int
    backends: list
    max_tokens: int
    messages: list
    payload: bytes
    reservation_id: str
    held_micros: int


def _admit(rt: Runtime, request: Request, raw: bytes, request_id: str) -> Admitted:
    """Who is calling, what they ask, whether they may, and the hold on their budget. Runs in a worker thread."""
    principal = api_key(request, rt)
    body = _parse(raw)
    name = body["model"]
    refusal = admitted = None
    try:
        with rt.db.transaction() as session:
            row = session.execute(select(Org, Model).select_from(Org).outerjoin(Model, Model.name == name)
                                  .where(Org.id == principal.org_id)).first()
            if row is None:
                raise ApiError(401, "unauthorized", "Authentication failed: the API key's org no longer exists.")
            org, model = row
            org_slug, org_name, limit = org.slug, org.name, org.budget_limit_micros  # a rollback expires the row
            refusal = _refusal(rt, principal, org, model, name)
            if refusal is None:
                max_tokens = body.get("max_tokens") or model.default_max_tokens
                worst = cost_micros(estimate_prompt_tokens(body["messages"]), max_tokens,
                                    model.prompt_price_per_1k_micros, model.completion_price_per_1k_micros)
                payload = _encode({**body, "max_tokens": max_tokens})
                ttl = rt.settings.reservation_margin_seconds + worst_case_seconds(
                    model.backends, rt.settings.upstream_timeout_seconds, rt.settings.upstream_connect_timeout_seconds)
                reservation = ledger.reserve(session, org.account_id, worst, ttl,
                                             budget_limit=org.budget_limit_micros, request_id=request_id)
                admitted = Admitted(principal, org.slug, model.name, model.prompt_price_per_1k_micros,
                                    model.completion_price_per_1k_micros, list(model.backends or []), max_tokens,
                                    body["messages"], payload, reservation.id, worst)
    except ledger.Shortfall as short:  # the transaction has rolled back: nothing is held
        refusal = _shortfall(org_slug, org_name, limit, short, worst)
    if refusal is not None:  # audited in a transaction of its own, once the admission's has ended
        status, code, message, headers, details = refusal
        raise deny(rt, status, code, message, actor=principal.actor, action="chat.completion",
                   target=f"model:{name}", org=org_slug, headers=headers, details=details)
    return admitted


def _refusal(rt: Runtime, principal: Principal, org: Org, model: Model | None, name: str) -> tuple | None:
    """Why this key may not use this model now (rate limit, unknown or not allowed model), or None."""
    if org.rate_limit_requests and org.rate_limit_window_seconds:
        retry_after = rt.rate_limiter.check(principal.key_id, org.rate_limit_requests, org.rate_limit_window_seconds)
        if retry_after is not None:
            return (429, "rate_limit_exceeded",
                    f"Rate limit exceeded for this key in org '{org.slug}': {org.rate_limit_requests} requests per "
                    f"{org.rate_limit_window_seconds} s; retry after {retry_after} s.",
                    {"Retry-After": str(retry_after)}, None)
    if model is None or (org.allowed_models is not None and model.name not in org.allowed_models):
        return (404, "model_not_found", f"The model '{name}' does not exist or is not available to org "
                f"'{org.slug}'.", None, None)
    return None


def _shortfall(slug: str, name: str, limit: int | None, short: ledger.Shortfall, worst: int) -> tuple:
    account = short.account
    if short.reason == "budget_exceeded":
        message = (f"Budget exceeded for org '{slug}' ({name}): limit {ledger.usd(limit)}, "
                   f"spent {ledger.usd(account.spent_micros)}, held {ledger.usd(account.held_micros)}; this "
                   f"request needs up to {ledger.usd(worst)}.")
    else:
        message = (f"Insufficient credit for org '{slug}' ({name}): {ledger.usd(account.available_micros)} "
                   f"available; this request needs up to {ledger.usd(worst)}.")
    return (402, short.reason, message, None,
            {"limit_micros": limit, "spent_micros": account.spent_micros,
             "held_micros": account.held_micros, "needed_micros": worst})


def _count(value) -> int | None:
    return value if type(value) is int and 0 <= value <= 10 ** 9 else None


def usage_tokens(answer: dict, messages: list, max_tokens: int) -> tuple[int, int, bool]:
    """(prompt, completion, reported): the backend's usage, or an estimate when it is missing or malformed
    (prompt from the request, completion from the answer's text, at most max_tokens)."""
    usage = answer.get("usage")
    if isinstance(usage, dict):
        prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
        if prompt is not None and completion is not None:
            return prompt, completion, True
    chars = 0
    choices = answer.get("choices")
    for choice in choices if isinstance(choices, list) else []:
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
    return estimate_prompt_tokens(messages), min(max_tokens, math.ceil(chars / 4)), False


def _settle(rt: Runtime, admitted: Admitted, result: RouteResult, request_id: str) -> int | None:
    """Finalize at the actual cost (or release) and audit it, in one transaction. Runs in a worker thread.
    Returns what was charged, or None when the hold could no longer be finalized."""
    target = f"model:{admitted.model}"
    attempts = [a.__dict__ for a in result.attempts]
    try:
        with rt.db.transaction() as session:
            if result.answered and result.status < 400:
                prompt, completion, reported = usage_tokens(result.body, admitted.messages, admitted.max_tokens)
                actual = cost_micros(prompt, completion, admitted.prompt_price, admitted.completion_price)
                charged = min(actual, admitted.held_micros)  # never past the hold, so never past the budget
                ledger.finalize(session, admitted.reservation_id, charged, request_id)
                audit.record(session, admitted.principal.actor, "chat.completion", target=target,
                             org=admitted.org_slug,
                             details={"backend": result.backend, "charged_micros": charged,
                                      "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                                "reported": reported},
                                      "reservation_id": admitted.reservation_id, "attempts": attempts})
                return charged
            ledger.release(session, admitted.reservation_id, request_id)
            outcome = "allowed" if result.answered else "failed"
            reason = (f"backend {result.backend} refused the request with {result.status}" if result.answered
                      else "every backend failed: " + ", ".join(f"{a.backend} {a.outcome}" for a in result.attempts))
            audit.record(session, admitted.principal.actor, "chat.completion", target=target, org=admitted.org_slug,
                         outcome=outcome, reason=reason,
                         details={"reservation_id": admitted.reservation_id, "attempts": attempts})
            return 0
    except ApiError as exc:  # the hold expired while the backend was answering: nothing to charge or release
        with rt.db.transaction() as session:
            audit.record(session, admitted.principal.actor, "chat.completion", target=target, org=admitted.org_slug,
                         outcome="failed", reason=f"the reservation could not be settled: {exc.message}",
                         details={"reservation_id": admitted.reservation_id, "attempts": attempts})
        return None


def _release_quietly(rt: Runtime, reservation_id: str, request_id: str) -> None:
    try:
        with rt.db.transaction() as session:
            ledger.release(session, reservation_id, request_id)
    except ApiError:
        pass  # already moved (expired or released)


def _answer(result: RouteResult) -> Response:
    headers = {"X-Gateway-Backend": result.backend}
    if result.body is not None:  # a JSON object: returned byte for byte, success or refusal
        return Response(result.raw, status_code=result.status, media_type="application/json", headers=headers)
    text = (result.raw or b"").decode("utf-8", "replace")[:500]
    raise ApiError(result.status, "backend_refused", f"Backend '{result.backend}' refused the request with "
                   f"{result.status}: {text or '(no body)'}", headers=headers)


@router.post("/chat/completions")
async def chat_completions(request: Request, rt: Runtime = Depends(runtime)):
    request_id = request.state.request_id
    admitted = await run_in_threadpool(_admit, rt, request, await request.body(), request_id)
    try:
        result = await call_in_order(rt.upstream, admitted.backends, admitted.payload,
                                     default_timeout=rt.settings.upstream_timeout_seconds,
                                     connect_timeout=rt.settings.upstream_connect_timeout_seconds)
    except BaseException:
        await run_in_threadpool(_release_quietly, rt, admitted.reservation_id, request_id)
        raise
    await run_in_threadpool(_settle, rt, admitted, result, request_id)
    if not result.answered:
        tried = "; ".join(f"{a.backend}: {a.outcome}{f' {a.status}' if a.status else ''}" for a in result.attempts)
        raise ApiError(502, "backends_unavailable",
                       f"Every backend for model '{admitted.model}' failed ({tried or 'no backend is routed'}); "
                       f"nothing was charged.")
    return _answer(result)
