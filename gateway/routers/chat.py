"""OpenAI-compatible model traffic for API keys: hold a true upper bound, route, charge what the backend reports.

A chat request reads its key, org and model in one statement, bounds its cost from the request alone
(gateway/services/token_bounds.py) and holds that on the org's account, calls the backends, then finalizes the
hold at the reported usage (beyond it if it must: an overrun) or releases it, and audits it as one change. The
database work goes through the runtime's chat store (gateway/services/chat_billing.py): on PostgreSQL three
statements on the event loop, on SQLite the ledger's functions on worker threads. A streamed request is relayed
chunk by chunk (gateway/services/streaming.py) and settled when its stream ends. With an Idempotency-Key, a retry
of a finished request replays its answer. Refusals are audited in a transaction of their own.

What an answered request owes is journaled (gateway/services/settlements.py) before it is written to the database:
if that write fails (the database away, the hold expired meanwhile), the client still gets its answer and the
journal's worker charges it, exactly once, when it can."""
from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import select

from gateway import audit, errors, metrics
from gateway.audit import Actor
from gateway.errors import ApiError
from gateway.logs import log as log_fields
from gateway.models import Model, Org
from gateway.principals import (NO_API_KEY, Principal, Refusal, api_key, api_key_refusal, api_key_token,
                                 unauthorized)
from gateway.runtime import Runtime, RuntimeDep
from gateway.security import sha256_hex
from gateway.services import idempotency, ledger, settlements, token_bounds
from gateway.services.routing import RouteResult, call_in_order, cost_micros, worst_case_seconds
from gateway.services.streaming import StreamRelay, Tally, error_event

router = APIRouter(prefix="/v1")
log = logging.getLogger("gateway.chat")

MAX_MODEL_NAME = 200
# GATEWAY_MODE=test only: the request's settlement is journaled, then the process dies (SIGKILL) before it is written
# to the database: how the suite shows that a gateway killed between the answer and the commit still charges it.
TEST_FAULT_HEADER = "x-gateway-test-fault"
CRASH_AFTER_JOURNAL = "crash-after-journal"


def _visible_models(session, org: Org) -> list[Model]:
    models = session.scalars(select(Model).order_by(Model.name)).all()
    return [m for m in models if org.allowed_models is None or m.name in org.allowed_models]


@router.get("/models")
def list_models(rt: RuntimeDep, principal: Principal = Depends(api_key)):
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
    token_bounds.validate_shape(body)
    return body


def _encode(payload: dict) -> bytes:
    try:
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "invalid_json", "The request body holds a lone UTF-16 surrogate escape (such as "
                       "\\ud800), which is not text.")


def upstream_body(body: dict, default_max_tokens: int) -> dict:
    """What the backends are sent: the client's body, with the completion limit the hold was priced at made
    explicit, and a streamed request always asking for the usage chunk (so the charge is exact)."""
    out = dict(body)
    given = [field for field in token_bounds.LIMIT_FIELDS if body.get(field) is not None]
    if not given:
        out["max_tokens"] = default_max_tokens
    elif len(given) == 2:  # the smaller wins, whichever of the two a backend reads
        out["max_tokens"] = out["max_completion_tokens"] = token_bounds.completion_limit(body, default_max_tokens)
    if body.get("stream"):
        out["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    return out


@dataclass
class KeyClaim:
    """This request's hold on its Idempotency-Key (`chat:<org id>` scope)."""
    scope: str
    key: str

    async def complete(self, rt: Runtime, status: int, stored: dict) -> None:
        await rt.in_db_thread(idempotency.complete, rt.db, self.scope, self.key, status, stored)

    async def forget(self, rt: Runtime) -> None:
        await rt.in_db_thread(idempotency.forget, rt.db, self.scope, self.key)

    def record(self, status: int, stored: dict) -> dict:
        """The answer to record, as the settlement journal keeps it (it commits with the charge)."""
        return {"scope": self.scope, "key": self.key, "status": status, "stored": stored}


@dataclass
class Admitted:
    principal: Principal
    org_slug: str
    model: str
    prompt_price: int
    completion_price: int
    backends: list
    payload: bytes
    prompt_bound: int  # tokens
    completion_bound: int  # tokens, every choice
    reservation_id: str
    held_micros: int
    stream: bool
    forward_usage: bool
    claim: KeyClaim | None
    started: float
    test_fault: str | None = None  # TEST_FAULT_HEADER, honoured in test mode only

    @property
    def audited(self) -> dict:
        return {"actor": self.principal.actor, "target": f"model:{self.model}", "org": self.org_slug}


async def _admit(rt: Runtime, request: Request, raw: bytes, started: float) -> Admitted | Response:
    """Who is calling, what they ask, whether they may, and the hold on their budget (or, for a retried
    Idempotency-Key, the first answer again)."""
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
    refusal = await _refusal(rt, principal, row, name)
    if refusal is None:
        prompt = token_bounds.prompt_bound(body, row.content_part_tokens, row.model_name)
        completion = token_bounds.completion_limit(body, row.default_max_tokens) * token_bounds.choices(body)
        worst = cost_micros(prompt, completion, row.prompt_price_per_1k_micros, row.completion_price_per_1k_micros)
        payload = _encode(upstream_body(body, row.default_max_tokens))
        ttl = rt.settings.reservation_margin_seconds + worst_case_seconds(
            row.backends, rt.settings.upstream_timeout_seconds, rt.settings.upstream_connect_timeout_seconds)
        claim, replay = await _claim_key(rt, request, principal, row, body, ttl)
        if replay is not None:
            return replay
        try:
            reservation_id = await rt.chat_store.hold(row.account_id, worst, ttl,
                                                      budget_limit=row.budget_limit_micros,
                                                      request_id=request.state.request_id)
        except BaseException:  # say the database is unavailable: the key is not left in progress
            if claim is not None:
                await asyncio.shield(claim.forget(rt))
            raise
        if reservation_id is not None:
            return Admitted(principal, row.slug, row.model_name, row.prompt_price_per_1k_micros,
                            row.completion_price_per_1k_micros, list(row.backends or []), payload, prompt,
                            completion, reservation_id, worst, bool(body.get("stream")),
                            bool((body.get("stream_options") or {}).get("include_usage")), claim, started,
                            request.headers.get(TEST_FAULT_HEADER) if rt.settings.mode == "test" else None)
        if claim is not None:  # refused before anything ran: a retry is judged afresh
            await claim.forget(rt)
        short = await rt.chat_store.shortfall(row.account_id, worst, row.budget_limit_micros)
        refusal = _shortfall(principal, row, name, short, worst)
    raise await _refused(rt, refusal)


async def _refused(rt: Runtime, refusal: Refusal) -> ApiError:
    return await rt.in_db_thread(refusal.audited, rt)


async def _refusal(rt: Runtime, principal: Principal, row, name: str) -> Refusal | None:
    """Why this key may not use this model now (rate limit, unknown or not allowed model), or None.
    `row` is the admission's: the org's limits and the model's columns (None when there is no such model)."""
    refused = partial(Refusal, actor=principal.actor, action="chat.completion", target=f"model:{name}", org=row.slug)
    if row.rate_limit_requests and row.rate_limit_window_seconds:
        wait_ms = await rt.rate_limiter.over_limit(principal.key_id, row.rate_limit_requests,
                                                    row.rate_limit_window_seconds)
        if wait_ms is not None:
            # Retry-After is whole seconds; retry-after-ms, which the OpenAI SDKs read first, is the exact wait.
            retry_after = max(1, math.ceil(wait_ms / 1000))
            return refused(429, "rate_limit_exceeded",
                           f"Rate limit exceeded for this key in org '{row.slug}': {row.rate_limit_requests} "
                           f"requests per {row.rate_limit_window_seconds} s; retry after {retry_after} s.",
                           headers={"Retry-After": str(retry_after), "retry-after-ms": str(wait_ms)})
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


# ---- Idempotency-Key ---------------------------------------------------------------------------------------------

async def _claim_key(rt: Runtime, request: Request, principal: Principal, row, body: dict,
                     ttl: float) -> tuple[KeyClaim | None, Response | None]:
    """(this request's claim on its Idempotency-Key, None), or (None, the first request's answer replayed).
    A request still in progress is 409 until its hold could have expired (`ttl`); another body is 422."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None, None
    claim = KeyClaim(f"chat:{principal.org_id}", key)
    try:
        replay = await rt.in_db_thread(idempotency.claim, rt.db, claim.scope, key, idempotency.body_hash(body),
                                       timedelta(seconds=ttl))
    except ApiError as exc:
        if exc.status in (409, 422):
            raise await _refused(rt, Refusal(exc.status, exc.code, exc.message, principal.actor, "chat.completion",
                                             target=f"model:{row.model_name}", org=row.slug))
        raise
    if replay is None:
        return claim, None
    await rt.in_db_thread(_audit_replay, rt, principal, row)
    return None, _replayed(*replay)


def _audit_replay(rt: Runtime, principal: Principal, row) -> None:
    with rt.db.transaction() as session:
        audit.record(session, principal.actor, "chat.completion", target=f"model:{row.model_name}", org=row.slug,
                     reason="Idempotency-Key replay: the first answer was returned again; no backend was called "
                            "and nothing was charged", details={"replayed": True})


def _replayed(status: int, stored: dict) -> Response:
    headers = {"Idempotent-Replayed": "true", "X-Gateway-Backend": stored.get("backend") or ""}
    if "events" in stored:
        return Response("".join(f"{event}\n\n" for event in stored["events"]).encode("utf-8"), status_code=status,
                        media_type="text/event-stream; charset=utf-8", headers=headers)
    return Response(stored["raw"].encode("utf-8"), status_code=status, media_type="application/json",
                    headers=headers)


# ---- charging ------------------------------------------------------------------------------------------------------

def _count(value) -> int | None:
    return value if type(value) is int and 0 <= value <= 10 ** 9 else None


def reported_usage(usage) -> tuple[int, int] | None:
    """(prompt, completion) tokens from a backend's `usage`, or None when it is missing or malformed."""
    if isinstance(usage, dict):
        prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
        if prompt is not None and completion is not None:
            return prompt, completion
    return None


def usage_tokens(admitted: Admitted, usage, generated_bytes: int) -> tuple[int, int, bool]:
    """(prompt, completion, reported): the backend's usage; without one, the bounds: the request's prompt bound
    and the UTF-8 bytes of the generated text, at most the completion bound."""
    reported = reported_usage(usage)
    if reported is not None:
        return *reported, True
    return admitted.prompt_bound, min(admitted.completion_bound, generated_bytes), False


async def _charge(rt: Runtime, admitted: Admitted, backend: str, usage, generated_bytes: int, details: dict, *,
                  outcome: str = "allowed", reason: str | None = None, answer: tuple[int, dict] | None = None) -> int:
    """Finalize at usage x price (above the hold too: an overrun, audited and counted) and audit it, as one change,
    after journaling it; `answer` (status, stored) is recorded for the request's Idempotency-Key. Returns what is
    charged: now, or by the journal's worker when the database cannot take it now."""
    prompt, completion, reported = usage_tokens(admitted, usage, generated_bytes)
    actual = cost_micros(prompt, completion, admitted.prompt_price, admitted.completion_price)
    details = {"backend": backend, "charged_micros": actual, "held_micros": admitted.held_micros,
               "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "reported": reported},
               "reservation_id": admitted.reservation_id, **details}
    overrun = actual - admitted.held_micros
    if overrun > 0:
        details["overrun_micros"] = overrun
        reason = "; ".join(filter(None, [reason, f"overrun: the backend reported usage costing {ledger.usd(actual)}, "
                                                 f"{ledger.usd(overrun)} more than the {ledger.usd(admitted.held_micros)} "
                                                 f"held; charged in full"]))
        metrics.OVERRUNS.labels(backend).inc()
        metrics.OVERRUN_MICROS.labels(backend).inc(overrun)
        log_fields(log, logging.WARNING, "a backend reported more usage than the hold", backend=backend,
                   reservation_id=admitted.reservation_id, held_micros=admitted.held_micros, charged_micros=actual)
    record = admitted.claim.record(*answer) if admitted.claim is not None and answer is not None else None
    entry = settlements.new_entry(admitted.reservation_id, actual, **admitted.audited, outcome=outcome,
                                  reason=reason, details=details, idempotency_record=record)
    try:
        await rt.settlements.owe(entry)
    except OSError as exc:  # the disk refused: settle all the same, with only the worker's memory to retry it
        log_fields(log, logging.ERROR, "the settlement journal could not be written; settling without it",
                   reservation_id=admitted.reservation_id, charged_micros=actual, error=str(exc))
    if admitted.test_fault == CRASH_AFTER_JOURNAL:
        log_fields(log, logging.WARNING, "test fault: the gateway dies now, its settlement journaled, not written",
                   reservation_id=admitted.reservation_id)
        rt.die_at_once()
    try:
        if not await rt.chat_store.settle(admitted.reservation_id, actual, **admitted.audited, outcome=outcome,
                                          reason=reason, details=details):
            await rt.in_db_thread(settlements.apply, rt.db, entry)  # its hold expired meanwhile: charged late
        elif record is not None:
            await admitted.claim.complete(rt, *answer)
    except Exception as exc:  # the journal's worker writes it once it can; the client is answered meanwhile
        rt.settlements.hand_over(entry, f"{type(exc).__name__}: {str(exc)[:300]}")
    else:
        rt.settlements.settled(entry)
    return actual


async def _release(rt: Runtime, admitted: Admitted, reason: str, details: dict, outcome: str) -> None:
    """Give the hold back (nothing is owed, so nothing is journaled: if the database cannot take it now, the hold
    expires at its TTL to the same effect)."""
    try:
        if not await rt.chat_store.settle(admitted.reservation_id, None, **admitted.audited, outcome=outcome,
                                          reason=reason,
                                          details={"reservation_id": admitted.reservation_id, **details}):
            await _unsettled(rt, admitted, None, details.get("attempts", []))
    except errors.DATABASE_UNAVAILABLE as exc:
        log_fields(log, logging.WARNING, "a hold could not be released now; it expires at its time to live",
                   reservation_id=admitted.reservation_id, error=type(exc).__name__)


async def _unsettled(rt: Runtime, admitted: Admitted, actual: int | None, attempts: list) -> None:
    """The hold expired while the backend was answering (or was moved): nothing to charge or release."""
    why = await rt.chat_store.why_not_settled(admitted.reservation_id, actual)
    await rt.in_db_thread(_record_unsettled, rt, admitted, why, attempts)


def _record_unsettled(rt: Runtime, admitted: Admitted, why: str, attempts: list) -> None:
    with rt.db.transaction() as session:
        audit.record(session, admitted.principal.actor, "chat.completion", target=f"model:{admitted.model}",
                     org=admitted.org_slug, outcome="failed", reason=f"the reservation could not be settled: {why}",
                     details={"reservation_id": admitted.reservation_id, "attempts": attempts})


async def _settle(rt: Runtime, admitted: Admitted, result: RouteResult) -> None:
    """A whole answer (or none): charge it or release the hold, and record it for its Idempotency-Key."""
    attempts = {"attempts": [a.__dict__ for a in result.attempts]}
    if result.answered and result.status < 400:
        usage = result.body.get("usage")
        generated = 0 if reported_usage(usage) else token_bounds.answer_text_len(result.body)
        await _charge(rt, admitted, result.backend, usage, generated, attempts,
                      answer=(result.status, {"raw": result.raw.decode("utf-8", "replace"), "backend": result.backend}))
        return
    if result.answered:
        await _release(rt, admitted, f"backend {result.backend} refused the request with {result.status}", attempts,
                       "allowed")
    else:
        await _release(rt, admitted, "every backend failed: " + ", ".join(f"{a.backend} {a.outcome}"
                                                                          for a in result.attempts), attempts, "failed")
    if admitted.claim is None:
        return
    try:
        if result.answered and result.body is not None:
            await admitted.claim.complete(rt, result.status, {"raw": result.raw.decode("utf-8", "replace"),
                                                              "backend": result.backend})
        else:  # no answer to replay (every backend failed, or a refusal that was not JSON): a retry runs again
            await admitted.claim.forget(rt)
    except errors.DATABASE_UNAVAILABLE:  # the key stays in progress until the hold's TTL; then a retry runs anew
        log_fields(log, logging.WARNING, "an Idempotency-Key could not be recorded now", key=admitted.claim.key)


async def _end_unanswered(rt: Runtime, admitted: Admitted) -> None:
    """Give the hold and the key back when the request ends before a backend answered (say the client went away)."""
    await _release(rt, admitted, "the request ended before a backend answered", {}, "failed")
    if admitted.claim is not None:
        await admitted.claim.forget(rt)


# ---- streaming -----------------------------------------------------------------------------------------------------

STREAM_ENDINGS = {
    "completed": ("allowed", None),
    "backend_failed": ("failed", "backend {backend} failed mid-stream ({detail}); charged for what was delivered"),
    "client_disconnected": ("allowed", "the client went away mid-stream; charged for what was generated up to then, "
                                       "the rest of the hold returned"),
}


def _relay(rt: Runtime, admitted: Admitted, result: RouteResult) -> StreamRelay:
    attempts = [a.__dict__ for a in result.attempts]

    async def finish(tally: Tally) -> None:
        outcome, reason = STREAM_ENDINGS[tally.outcome]
        stream = {"outcome": tally.outcome, "content_chunks": tally.content_chunks,
                  "generated_bytes": tally.generated_bytes}
        answer = None
        if admitted.claim is not None:
            events = tally.events
            if tally.outcome == "client_disconnected":  # what a retry gets: the answer as it was cut
                events.append(error_event("The first request with this Idempotency-Key ended when its client went "
                                          "away; this is what was generated up to then.", "client_disconnected")
                              .decode("utf-8"))
            answer = (200, {"events": events, "backend": result.backend})
        await _charge(rt, admitted, result.backend, tally.usage, tally.generated_bytes,
                      {"attempts": attempts, "stream": stream}, outcome=outcome,
                      reason=reason and reason.format(backend=result.backend, detail=tally.detail), answer=answer)
        metrics.STREAMS.labels(tally.outcome).inc()
        if tally.first_token_at is not None:
            metrics.TIME_TO_FIRST_TOKEN.labels(result.backend).observe(tally.first_token_at - admitted.started)

    return StreamRelay(result.stream, admitted.forward_usage, finish,
                       backend_header={"X-Gateway-Backend": result.backend}, record=admitted.claim is not None)


# ---- the route -----------------------------------------------------------------------------------------------------

def _answer(result: RouteResult) -> Response:
    headers = {"X-Gateway-Backend": result.backend}
    if result.body is not None:  # a JSON object: returned byte for byte, success or refusal
        return Response(result.raw, status_code=result.status, media_type="application/json", headers=headers)
    text = (result.raw or b"").decode("utf-8", "replace")[:500]
    raise ApiError(result.status, "backend_refused", f"Backend '{result.backend}' refused the request with "
                   f"{result.status}: {text or '(no body)'}", headers=headers)


@router.post("/chat/completions")
async def chat_completions(request: Request, rt: RuntimeDep):
    started = time.perf_counter()
    admitted = await _admit(rt, request, await request.body(), started)
    if isinstance(admitted, Response):  # an Idempotency-Key replay
        return admitted
    try:
        result = await call_in_order(rt.upstream, admitted.backends, admitted.payload,
                                     default_timeout=rt.settings.upstream_timeout_seconds,
                                     connect_timeout=rt.settings.upstream_connect_timeout_seconds,
                                     stream=admitted.stream, breakers=rt.breakers, model=admitted.model)
    except BaseException:
        await asyncio.shield(_end_unanswered(rt, admitted))
        raise
    if result.stream is not None:
        return _relay(rt, admitted, result)
    await _settle(rt, admitted, result)
    if not result.answered:
        tried = "; ".join(f"{a.backend}: {a.outcome}{f' {a.status}' if a.status else ''}" for a in result.attempts)
        raise ApiError(502, "backends_unavailable",
                       f"Every backend for model '{admitted.model}' failed ({tried or 'no backend is routed'}); "
                       f"nothing was charged.")
    return _answer(result)
