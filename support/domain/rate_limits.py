"""Per-key rate limits as a scenario sees them: a limit written into the org's row, a key that used up its
window, the 429 with its Retry-After, a request late in the window (still refused), and, once Retry-After has
passed, the request that must be served.

Times are the suite's monotonic clock around its own requests: the gateway counted the window's first request
after it was sent, so a request answered before `first_sent_at + window` was judged inside the window, whatever
the two clocks say."""
from __future__ import annotations

import math
import time

from support.client.api import Exchange
from support.client.assertions import expect_equal, expect_status, expect_true, problem_field
from support.database.seeding import seed_org_policy
from support.domain.model_routes import ModelRoutes
from support.harness.waits import wait_until

SLACK_SECONDS = 5  # on top of Retry-After, for a busy machine
LATE_IN_WINDOW = 0.6  # how far into its window (a fraction) the key is asked again, to be refused


class RateLimits:
    def __init__(self, routing: ModelRoutes):
        self.routing, self.world, self.db = routing, routing.world, routing.db

    @property
    def noted(self):
        return self.world.rate_limit

    def limit(self, org: str, requests: int, seconds: int) -> None:
        seed_org_policy(self.db, self.world.org(org).slug, rate_limit=(requests, seconds))
        self.noted.window_seconds = seconds

    def use_up(self, key: str, model: str, count: int) -> None:
        self.noted.first_sent_at = time.monotonic()
        for _ in range(count):
            expect_status(self.routing.ask(key, model), 200, f"a chat completion with the key {key!r}, within its "
                          f"rate limit")

    def expect_rate_limited(self, exchange: Exchange) -> int:
        """The refusal, and the whole seconds its Retry-After says to wait."""
        self.noted.refused_by = time.monotonic()
        expect_status(exchange, 429, "a chat completion over the key's rate limit")
        expect_equal(problem_field(exchange, "code"), "rate_limit_exceeded", "the error code", exchange)
        retry_after = exchange.response_headers.get("Retry-After")
        expect_true(retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1,
                    f"Expected a Retry-After header of a whole number of seconds, but it was {retry_after!r}", exchange)
        self.noted.retry_after = int(retry_after)
        return int(retry_after)

    def expect_retry_when_window_passes(self, exchange: Exchange) -> None:
        """Retry-After is the rest of the window, rounded up: no sooner (the window's first request was sent at
        `first_sent_at`, so the key may not be served before `first_sent_at + window`) and no later than the whole
        window."""
        retry_after, window = self.expect_rate_limited(exchange), self.noted.window_seconds
        soonest = math.ceil(self.noted.first_sent_at + window - self.noted.refused_by)
        expect_true(soonest <= retry_after <= window, f"Expected Retry-After to be the rest of the key's {window} s "
                    f"window, rounded up: between {soonest} and {window} s (its first request went "
                    f"{self.noted.refused_by - self.noted.first_sent_at:.2f} s before the refusal came), but it was "
                    f"{retry_after} s", exchange)

    def expect_refused_late_in_window(self, key: str) -> Exchange:
        """Asked again most of the way through its window, the key is still refused (and told to retry): a request
        answered before the window can have ended was judged inside it. A gateway that forgets the window's
        requests early serves it."""
        noted = self.noted
        window_ends = noted.first_sent_at + noted.window_seconds
        late = noted.first_sent_at + LATE_IN_WINDOW * noted.window_seconds
        _await_clock(late, f"{LATE_IN_WINDOW:.0%} of the key's {noted.window_seconds} s window to pass")
        answer = self.routing.ask(key, self.routing.current().name)
        answered_at = time.monotonic()
        expect_true(answered_at < window_ends, f"Could not check the key inside its window: the request sent "
                    f"{LATE_IN_WINDOW:.0%} of the way through its {noted.window_seconds} s window was answered only "
                    f"{answered_at - window_ends:.2f} s after the window may have ended (a slow machine?)", answer)
        expect_status(answer, 429, f"a chat completion with the key {key!r}, {answered_at - noted.first_sent_at:.2f} "
                      f"s after the first of its window's requests was sent (its window: {noted.window_seconds} s)")
        return answer

    def expect_served_again(self, key: str, refusal: Exchange) -> Exchange:
        """The first request sent once Retry-After has passed (counted from when the refusal had come) is served:
        the time the gateway gave is enough. The wait is the behaviour, so it is a wait on the clock and then one
        request; polling from the refusal on would pass a Retry-After too short as well."""
        retry_after = self.noted.retry_after
        due = self.noted.refused_by + retry_after
        _await_clock(due, f"the {retry_after} s of Retry-After to pass")
        answer = self.routing.ask(key, self.routing.current().name)
        return expect_status(answer, 200, f"the first chat completion with the key {key!r} once the {retry_after} s "
                             f"its Retry-After asked for had passed (the refusal was request {refusal.request_id})")


def _await_clock(moment: float, awaited: str) -> None:
    """Wait until time.monotonic() reaches `moment`: here the time passing is the behaviour itself."""
    wait_until(awaited, time.monotonic, lambda now: now >= moment, timeout=moment - time.monotonic() + SLACK_SECONDS,
               max_interval=0.05, describe=lambda now: f"{moment - now:.2f} s still to wait")
