"""Per-key rate limits as a scenario sees them: a limit written into the org's row, a key that used up its
window, the 429 with its Retry-After, and the wait (polled) until the key is served again."""
from __future__ import annotations

import time

from support.domain import model_routes as routing
from support.harness.assertions import expect_equal, expect_status, expect_true, problem_field
from support.database.seeding import seed_org_policy
from support.harness.waits import wait_until

SLACK_SECONDS = 5  # on top of Retry-After, for a busy machine


def limit(context, org: str, requests: int, seconds: int) -> None:
    seed_org_policy(context.db, context.world.org(org).slug, rate_limit=(requests, seconds))


def use_up(context, key: str, model: str, count: int) -> None:
    for _ in range(count):
        expect_status(routing.ask(context, key, model), 200, f"a chat completion with the key {key!r}, within its "
                      f"rate limit")


def expect_rate_limited(context) -> int:
    exchange = context.response
    expect_status(exchange, 429, "a chat completion over the key's rate limit")
    expect_equal(problem_field(exchange, "code"), "rate_limit_exceeded", "the error code", exchange)
    retry_after = exchange.response_headers.get("Retry-After")
    expect_true(retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1,
                f"Expected a Retry-After header of a whole number of seconds, but it was {retry_after!r}", exchange)
    context.retry_after = int(retry_after)
    context.refused_at = time.monotonic()
    return context.retry_after


def expect_served_again(context, key: str) -> None:
    """Polls (the waiting is the behaviour): the key is refused until its window has room again, then served."""
    model = context.chat_model
    deadline = context.retry_after + SLACK_SECONDS
    answer = wait_until(f"the key {key!r} to be served again after Retry-After {context.retry_after} s",
                        lambda: routing.ask(context, key, model), lambda e: e.status != 429,
                        timeout=deadline, describe=lambda e: f"{e.status} [request id {e.request_id}]")
    expect_status(answer, 200, f"a chat completion with the key {key!r} once its Retry-After has passed")
