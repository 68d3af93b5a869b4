"""OpenAI-compatible model traffic for API keys: reserve the worst case, route, charge the actual usage.

A chat request reads its key, org and model in one statement, holds its worst case on the org's account, calls
the backends, then finalizes (or releases) the hold and audits it as one change. The database work goes through
the runtime's chat store (gateway/services/chat_billing.py): on PostgreSQL three statements on the event loop, on
SQLite the ledger's functions on worker threads. Refusals are audited in a transaction of their own."""
from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from functools import partial

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import select

from gateway import audit
from gateway.errors import ApiError
from gateway.models import Model, Org
from gateway.audit import Actor
from gateway.principals import (NO_API_KEY, Principal, Refusal, api_key, api_key_refusal, api_key_token,
                                 unauthorized)
from gateway.runtime import Runtime, runtime
from gateway.services import ledger
from gateway.security import sha256_hex
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


async def _admit(rt: Runtime, request: Request, raw: bytes, request_id: str) -> Admitted:
    """Who is calling, what they ask, whether they may, and the hold on their budget."""
    token = api_key_token(request)
    if token is None:
        raise await _refused(rt, unauthorized(request, "auth.api_key", NO_API_KEY))
    try:
        body, bad_body = _parse(raw), None
    except ApiError as exc:  # reported once the caller is known: an unknown key is a 401 whatever it sends
        body, bad_body = None, exc
    name = body["model"] if body else ""
    row = await rt.chat_store.lookup(sha256_hex(token), name)
    refusal = api_key_refusal(request, row)
    if refusal is not None:
        raise await _refused(rt, refusal)
    if bad_body is not None:
        raise bad_body
    principal = Principal(Actor("api_key", row.id), org_id=row.org_id, org_slug=row.slug, key_id=row.id)
    refusal = _refusal(rt, principal, row, name)
    if refusal is None:
        max_tokens = body.get("max_tokens") or row.default_max_tokens
        worst = cost_micros(estimate_prompt_tokens(body["messages"]), max_tokens,
                            row.prompt_price_per_1k_micros, row.completion_price_per_1k_micros)
        payload = _encode({**body, "max_tokens": max_tokens})
        ttl = rt.settings.reservation_margin_seconds + worst_case_seconds(
            row.backends, rt.settings.upstream_timeout_seconds, rt.settings.upstream_connect_timeout_seconds)
        reservation_id = await rt.chat_store.hold(row.account_id, worst, ttl, budget_limit=row.budget_limit_micros,
                                                  request_id=request_id)
        if reservation_id is not None:
            return Admitted(principal, row.slug, row.model_name, row.prompt_price_per_1k_micros,
                            row.completion_price_per_1k_micros, list(row.backends or []), max_tokens,
                            body["messages"], payload, reservation_id, worst)
        short = await rt.chat_store.shortfall(row.account_id, worst, row.budget_limit_micros)
        refusal = _shortfall(principal, row, name, short, worst)
    raise await _refused(rt, refusal)


async def _refused(rt: Runtime, refusal: Refusal) -> ApiError:
    return await rt.in_db_thread(refusal.audited, rt)


def _refusal(rt: Runtime, principal: Principal, row, name: str) -> Refusal | None:
    """Why this key may not use this model now (rate limit, unknown or not allowed model), or None.
    `row` is the admission's: the org's limits and the model's columns (None when there is no such model)."""
    refused = partial(Refusal, actor=principal.actor, action="chat.completion", target=f"model:{name}", org=row.slug)
    if row.rate_limit_requests and row.rate_limit_window_seconds:
        retry_after = rt.rate_limiter.check(principal.key_id, row.rate_limit_requests, row.rate_limit_window_seconds)
        if retry_after is not None:
            return refused(429, "rate_limit_exceeded",
                           f"Rate limit exceeded for this key in org '{row.slug}': {row.rate_limit_requests} "
                           f"requests per {row.rate_limit_window_seconds} s; retry after {retry_after} s.",
                           headers={"Retry-After": str(retry_after)})
    if row.model_name is None or (row.allowed_models is not None and row.model_name not in row.allowed_models):
        return refused(404, "model_not_found", f"The model '{name}' does not exist or is not available to org "
                       f"'{row.slug}'.")
    return None


def _shortfall(principal: Principal, row, name: str, short: ledger.Shortfall, worst: int) -> Refusal:
    account, limit = short.account, row.budget_limit_micros
    if short.reason == "budget_exceeded":
        message = (f"Budget exceeded for org '{row.slug}' ({row.org_name}): limit {ledger.usd(limit)}, "
                   f"spent {ledger.usd(account.spent_micros)}, held {ledger.usd(account.held_micros)}; this "
                   f"request needs up to {ledger.usd(worst)}.")
    else:
        message = (f"Insufficient credit for org '{row.slug}' ({row.org_name}): "
                   f"{ledger.usd(account.available_micros)} available; this request needs up to {ledger.usd(worst)}.")
    return Refusal(402, short.reason, message, principal.actor, "chat.completion", target=f"model:{name}",
                   org=row.slug, details={"limit_micros": limit, "spent_micros": account.spent_micros,
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


async def _settle(rt: Runtime, admitted: Admitted, result: RouteResult) -> int | None:
    """Finalize at the actual cost (or release) and audit it, as one change.
    Returns what was charged, or None when the hold could no longer be finalized."""
    target = f"model:{admitted.model}"
    attempts = [a.__dict__ for a in result.attempts]
    audited = {"actor": admitted.principal.actor, "target": target, "org": admitted.org_slug}
    if result.answered and result.status < 400:
        prompt, completion, reported = usage_tokens(result.body, admitted.messages, admitted.max_tokens)
        actual = cost_micros(prompt, completion, admitted.prompt_price, admitted.completion_price)
        charged = min(actual, admitted.held_micros)  # never past the hold, so never past the budget
        details = {"backend": result.backend, "charged_micros": charged,
                   "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "reported": reported},
                   "reservation_id": admitted.reservation_id, "attempts": attempts}
        if await rt.chat_store.settle(admitted.reservation_id, charged, **audited, details=details):
            return charged
    else:
        charged = None
        reason = (f"backend {result.backend} refused the request with {result.status}" if result.answered
                  else "every backend failed: " + ", ".join(f"{a.backend} {a.outcome}" for a in result.attempts))
        if await rt.chat_store.settle(admitted.reservation_id, None, **audited, reason=reason,
                                      outcome="allowed" if result.answered else "failed",
                                      details={"reservation_id": admitted.reservation_id, "attempts": attempts}):
            return 0
    # The hold expired while the backend was answering (or was moved): nothing to charge or release.
    why = await rt.chat_store.why_not_settled(admitted.reservation_id, charged)
    await rt.in_db_thread(_record_unsettled, rt, admitted, why, attempts)
    return None


def _record_unsettled(rt: Runtime, admitted: Admitted, why: str, attempts: list) -> None:
    with rt.db.transaction() as session:
        audit.record(session, admitted.principal.actor, "chat.completion", target=f"model:{admitted.model}",
                     org=admitted.org_slug, outcome="failed", reason=f"the reservation could not be settled: {why}",
                     details={"reservation_id": admitted.reservation_id, "attempts": attempts})


async def _release_quietly(rt: Runtime, admitted: Admitted) -> None:
    """Give the hold back when the request ends before it could be settled (say the client went away)."""
    await rt.chat_store.settle(admitted.reservation_id, None, actor=admitted.principal.actor,
                               target=f"model:{admitted.model}", org=admitted.org_slug, outcome="failed",
                               reason="the request ended before a backend answered",
                               details={"reservation_id": admitted.reservation_id})


def _answer(result: RouteResult) -> Response:
    headers = {"X-Gateway-Backend": result.backend}
    if result.body is not None:  # a JSON object: returned byte for byte, success or refusal
        return Response(result.raw, status_code=result.status, media_type="application/json", headers=headers)
    text = (result.raw or b"").decode("utf-8", "replace")[:500]
    raise ApiError(result.status, "backend_refused", f"Backend '{result.backend}' refused the request with "
                   f"{result.status}: {text or '(no body)'}", headers=headers)


@router.post("/chat/completions")
async def chat_completions(request: Request, rt: Runtime = Depends(runtime)):
    admitted = await _admit(rt, request, await request.body(), request.state.request_id)
    try:
        result = await call_in_order(rt.upstream, admitted.backends, admitted.payload,
                                     default_timeout=rt.settings.upstream_timeout_seconds,
                                     connect_timeout=rt.settings.upstream_connect_timeout_seconds)
    except BaseException:
        await asyncio.shield(_release_quietly(rt, admitted))
        raise
    await _settle(rt, admitted, result)
    if not result.answered:
        tried = "; ".join(f"{a.backend}: {a.outcome}{f' {a.status}' if a.status else ''}" for a in result.attempts)
        raise ApiError(502, "backends_unavailable",
                       f"Every backend for model '{admitted.model}' failed ({tried or 'no backend is routed'}); "
                       f"nothing was charged.")
    return _answer(result)
