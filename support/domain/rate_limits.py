"""Per-key rate limits as a scenario sees them: a limit written into the org's row, a key that used up its
window, the 429 with its Retry-After, and, once that time has passed, the request that must be served."""
from __future__ import annotations

import time

from support.client.api import Exchange
from support.client.assertions import expect_equal, expect_status, expect_true, problem_field
from support.database.seeding import seed_org_policy
from support.domain.model_routes import ModelRoutes
from support.harness.waits import wait_until

SLACK_SECONDS = 5  # on top of Retry-After, for a busy machine


class RateLimits:
    def __init__(self, routing: ModelRoutes):
        self.routing, self.world, self.db = routing, routing.world, routing.db

    def limit(self, org: str, requests: int, seconds: int) -> None:
        seed_org_policy(self.db, self.world.org(org).slug, rate_limit=(requests, seconds))

    def use_up(self, key: str, model: str, count: int) -> None:
        for _ in range(count):
            expect_status(self.routing.ask(key, model), 200, f"a chat completion with the key {key!r}, within its "
                          f"rate limit")

    @staticmethod
    def expect_rate_limited(exchange: Exchange) -> int:
        """The refusal, and the whole seconds its Retry-After says to wait."""
        expect_status(exchange, 429, "a chat completion over the key's rate limit")
        expect_equal(problem_field(exchange, "code"), "rate_limit_exceeded", "the error code", exchange)
        retry_after = exchange.response_headers.get("Retry-After")
        expect_true(retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1,
                    f"Expected a Retry-After header of a whole number of seconds, but it was {retry_after!r}", exchange)
        return int(retry_after)

    def expect_served_again(self, key: str, retry_after: int, refusal: Exchange) -> Exchange:
        """The first request sent once Retry-After has passed is served: the time the gateway gave is enough.
        The wait is the behaviour, so it is a wait on the clock (from the start of this step, after the refusal
        came), and then one request; polling from the start would pass a Retry-After too short as well."""
        due = time.monotonic() + retry_after
        wait_until(f"the {retry_after} s of Retry-After to pass", time.monotonic, lambda now: now >= due,
                   timeout=retry_after + SLACK_SECONDS, max_interval=0.05,
                   describe=lambda now: f"{due - now:.2f} s still to wait")
        answer = self.routing.ask(key, self.routing.current().name)
        return expect_status(answer, 200, f"the first chat completion with the key {key!r} once the {retry_after} s "
                             f"its Retry-After asked for had passed (the refusal was request {refusal.request_id})")
