"""Idempotency-Key: the same key and body replay the first response; another body is 422; a race is 409."""
from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Callable

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError

from gateway.errors import ApiError
from gateway.models import IdempotencyRecord, utcnow
from gateway.services.ledger import as_utc

STALE_AFTER = timedelta(seconds=60)  # an in-progress record older than this belonged to a crashed request


def body_hash(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def check_key(key: str) -> None:
    if not 1 <= len(key) <= 200:
        raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key must be 1 to 200 characters.")


def claim(db, scope: str, key: str, digest: str, stale_after: timedelta = STALE_AFTER) -> tuple[int, dict] | None:
    """Take (scope, key) for the request whose body hashes to `digest`: None when it is this request's to run (then
    `complete` or `forget` it); the first request's (status, body) when it finished (a replay). 422 for another
    body, 409 while the first is in progress; a record in progress for longer than `stale_after` belonged to a
    crashed request and is taken over by exactly one retry."""
    check_key(key)
    try:
        with db.transaction() as session:
            session.add(IdempotencyRecord(scope=scope, key=key, request_hash=digest, state="in_progress"))
        return None
    except IntegrityError:
        with db.sessions() as session:
            record = session.get(IdempotencyRecord, (scope, key))
    if record is None:
        raise ApiError(409, "idempotency_conflict", "A request with this Idempotency-Key is being processed.")
    if record.request_hash != digest:
        raise ApiError(422, "idempotency_key_reused",
                       f"Idempotency-Key '{key}' was already used with a different request body.")
    if record.state == "done":
        return record.response_status, record.response_body
    if utcnow() - as_utc(record.created_at) < stale_after:
        raise ApiError(409, "idempotency_conflict",
                       f"A request with Idempotency-Key '{key}' is still being processed; retry later.")
    with db.transaction() as session:  # take over a crashed request's record; only one retry may win it
        taken = session.execute(update(IdempotencyRecord).where(
            IdempotencyRecord.scope == scope, IdempotencyRecord.key == key,
            IdempotencyRecord.state == "in_progress", IdempotencyRecord.created_at == record.created_at)
            .values(created_at=utcnow())).rowcount
    if taken != 1:
        raise ApiError(409, "idempotency_conflict",
                       f"A request with Idempotency-Key '{key}' is being processed; retry later.")
    return None


def run(db, scope: str, key: str | None, body: dict, operation: Callable) -> tuple[int, dict, bool]:
    """Run `operation(session) -> (status, body)` at most once per (scope, key); returns (status, body, replayed)."""
    if key is None:
        with db.transaction() as session:
            status, response = operation(session)
        return status, response, False
    replay = claim(db, scope, key, body_hash(body))
    if replay is not None:
        return *replay, True
    try:
        with db.transaction() as session:
            status, response = operation(session)
            _complete(session, scope, key, status, response)
        return status, response, False
    except ApiError as exc:
        if exc.status >= 500:
            forget(db, scope, key)
        else:
            complete(db, scope, key, exc.status, {"error_code": exc.code, "message": exc.message})
        raise
    except BaseException:
        forget(db, scope, key)
        raise


def replay_error(status: int, body: dict) -> ApiError | None:
    """A stored refusal is replayed as the same error."""
    if status >= 400 and "error_code" in body:
        return ApiError(status, body["error_code"], body["message"])
    return None


def _complete(session, scope, key, status, response) -> None:
    session.execute(update(IdempotencyRecord).where(IdempotencyRecord.scope == scope, IdempotencyRecord.key == key)
                    .values(state="done", response_status=status, response_body=response))


def complete_in(session, scope: str, key: str, status: int, response: dict) -> None:
    """`complete`, inside the caller's transaction (the settlement journal records a chat answer with its charge)."""
    _complete(session, scope, key, status, response)


def complete(db, scope: str, key: str, status: int, response: dict) -> None:
    """Record the answer a claimed key's request gave: retries with the same body replay it."""
    with db.transaction() as session:
        _complete(session, scope, key, status, response)


def forget(db, scope: str, key: str) -> None:
    """Give a claimed key up (its request ended without an answer worth replaying): a retry runs again."""
    with db.transaction() as session:
        session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.scope == scope,
                                                        IdempotencyRecord.key == key))
