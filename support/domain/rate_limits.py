"""Per-key rate limits as a scenario sees them: a limit written into the org's row, a key that used up its
window, the 429 with the time it tells the key to wait, a request late in the window (still refused), and, once
that time has passed, the request that must be served.

The time told is `retry-after-ms` when the gateway sends it (the exact wait, which the OpenAI SDKs read first), else
`Retry-After` (whole seconds, which every gateway sends).

Times are the suite's monotonic clock around its own requests: the gateway counted the window's first request
after it was sent, so a request answered before `first_sent_at + window` was judged inside the window, and a wait
told before the refusal came cannot rightly end before then either, whatever the two clocks say."""
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
        """The refusal, and the whole seconds its Retry-After says to wait. The time told (retry-after-ms, else
        Retry-After) may not end before the window can have: a gateway telling the key to come back too soon fails
        here, before anyone waits."""
        noted = self.noted
        noted.refused_by = time.monotonic()
        expect_status(exchange, 429, "a chat completion over the key's rate limit")
        expect_equal(problem_field(exchange, "code"), "rate_limit_exceeded", "the error code", exchange)
        retry_after = exchange.response_headers.get("Retry-After")
        expect_true(retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1,
                    f"Expected a Retry-After header of a whole number of seconds, but it was {retry_after!r}", exchange)
        noted.retry_after = int(retry_after)
        told = told_seconds(exchange)
        if "retry-after-ms" in exchange.response_headers:
            expect_equal(noted.retry_after, max(1, math.ceil(told)), f"Retry-After, the {told * 1000:g} ms of "
                         f"retry-after-ms rounded up to whole seconds (at least 1)", exchange)
        if noted.first_sent_at is not None and noted.window_seconds:
            soonest = noted.first_sent_at + noted.window_seconds - noted.refused_by
            expect_true(told >= soonest, f"Expected to be told to wait at least {soonest:.3f} s (the rest of the "
                        f"key's {noted.window_seconds} s window: its first request went "
                        f"{noted.refused_by - noted.first_sent_at:.3f} s before the refusal came), but it was told "
                        f"{told:.3f} s", exchange)
        return noted.retry_after

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
        """The first request sent once the time told has passed (counted from when the refusal had come) is served:
        the time the gateway gave is enough. The wait is the behaviour, so it is a wait on the clock and then one
        request; polling from the refusal on would pass a time told too short as well."""
        told, header = told_seconds(refusal), told_by(refusal)
        _await_clock(self.noted.refused_by + told, f"the {told:.3f} s its {header} asked for to pass")
        answer = self.routing.ask(key, self.routing.current().name)
        return expect_status(answer, 200, f"the first chat completion with the key {key!r} once the {told:.3f} s "
                             f"its {header} asked for had passed (the refusal was request {refusal.request_id})")


def told_by(refusal: Exchange) -> str:
    """The header whose wait a client honours: retry-after-ms when sent (as the OpenAI SDKs do), else Retry-After."""
    return "retry-after-ms" if "retry-after-ms" in refusal.response_headers else "Retry-After"


def told_seconds(refusal: Exchange) -> float:
    """The wait the refusal tells, in seconds (retry-after-ms, else Retry-After)."""
    header = told_by(refusal)
    raw = refusal.response_headers.get(header) or ""
    try:
        told = float(raw) / (1000 if header == "retry-after-ms" else 1)
    except ValueError:
        told = math.nan
    expect_true(told > 0, f"Expected {header} to be a number above 0, but it was {raw!r}", refusal)
    return told


def _await_clock(moment: float, awaited: str) -> None:
    """Wait until time.monotonic() reaches `moment`: here the time passing is the behaviour itself."""
    wait_until(awaited, time.monotonic, lambda now: now >= moment, timeout=moment - time.monotonic() + SLACK_SECONDS,
               max_interval=0.05, describe=lambda now: f"{moment - now:.2f} s still to wait")
