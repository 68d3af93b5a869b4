"""Circuit breakers of model backends (gateway/services/circuit_breakers.py): opening, the one half-open probe,
closing, settings from gateway.yaml and a backend entry, and what routing does with an open circuit."""
from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from gateway.config_sync.validation import ConfigError, parse_file
from gateway.services.circuit_breakers import BreakerSettings, Breakers
from gateway.services.routing import Upstream, call_in_order

BACKEND = {"name": "primary", "url": "http://primary", "circuit_breaker": {"failures": 2, "cooldown_seconds": 5}}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breakers(defaults=None):
    clock, changes = Clock(), []
    return Breakers(lambda: defaults, changes.append, clock=clock), clock, changes


def fail(b: Breakers, times: int = 1, outcome: str = "timeout") -> None:
    for _ in range(times):
        b.outcome("m", "primary", BACKEND, outcome, b.admit("m", "primary"))


def test_it_opens_after_failures_in_a_row_and_skips_the_backend():
    b, _, changes = breakers()
    fail(b)
    assert b.admit("m", "primary") == "call"
    fail(b)
    assert b.admit("m", "primary") is None
    assert [(c.before, c.after) for c in changes] == [("closed", "open")]
    assert "2 failures in a row" in changes[0].why


def test_a_success_between_failures_starts_the_count_again():
    b, _, changes = breakers()
    fail(b)
    b.outcome("m", "primary", BACKEND, "client_error", b.admit("m", "primary"))  # a 4xx is an answer
    fail(b)
    assert b.admit("m", "primary") == "call" and not changes


def test_failures_older_than_the_window_do_not_count():
    b, clock, _ = breakers({"window_seconds": 10})
    fail(b)
    clock.now += 11
    fail(b)
    assert b.admit("m", "primary") == "call"


def test_after_the_cool_down_one_probe_goes_through_and_a_success_closes_it():
    b, clock, changes = breakers()
    fail(b, 2)
    clock.now += 5
    assert b.admit("m", "primary") == "probe"
    assert b.admit("m", "primary") is None  # one probe at a time
    b.outcome("m", "primary", BACKEND, "ok", "probe")
    assert b.admit("m", "primary") == "call"
    assert [c.after for c in changes] == ["open", "half_open", "closed"]


def test_a_failed_probe_opens_it_again_for_another_cool_down():
    b, clock, changes = breakers()
    fail(b, 2)
    clock.now += 5
    fail(b)  # the probe
    assert [c.after for c in changes] == ["open", "half_open", "open"]
    assert b.admit("m", "primary") is None
    clock.now += 5
    assert b.admit("m", "primary") == "probe"


def test_a_probe_cut_short_leaves_its_place_to_the_next_request():
    b, clock, _ = breakers()
    fail(b, 2)
    clock.now += 5
    assert b.admit("m", "primary") == "probe"
    b.abandon("m", "primary", "probe")
    assert b.admit("m", "primary") == "probe"


def test_the_snapshot_shows_a_breaker_due_for_its_probe_as_half_open():
    b, clock, _ = breakers()
    fail(b, 2)
    (shown,) = b.snapshot()
    assert (shown["state"], shown["seconds_until_probe"]) == ("open", 5.0)
    clock.now += 5
    assert b.snapshot("m")[0]["state"] == "half_open" and b.snapshot("other") == []


def test_settings_come_from_gateway_yaml_and_a_backend_entry_overrides_them():
    b, _, _ = breakers({"failures": 7, "window_seconds": 60})
    assert b.settings({"name": "x"}) == BreakerSettings(7, 60.0, 10.0)
    assert b.settings(BACKEND) == BreakerSettings(2, 60.0, 5.0)
    assert b.settings({"circuit_breaker": {"failures": 0, "cooldown_seconds": "soon"}}) == BreakerSettings(7, 60.0)


def test_the_config_repository_validates_the_settings():
    _, _, settings = parse_file("gateway.yaml", "circuit_breaker: {failures: 3, window_seconds: 20}\n")
    assert settings["circuit_breaker"] == {"failures": 3, "window_seconds": 20}
    with pytest.raises(ConfigError, match=r"line 3: backends\.0\.circuit_breaker\.cooldown_seconds must be"):
        parse_file("models/m.yaml", "price: {prompt_per_1k_micros: 1, completion_per_1k_micros: 1}\n"
                                    "backends:\n  - {url: 'http://a/', circuit_breaker: {cooldown_seconds: 0}}\n")


def test_routing_skips_an_open_backend_without_calling_it():
    calls = {"primary": 0, "secondary": 0}

    async def scenario():
        app = web.Application()

        async def primary(request):
            calls["primary"] += 1
            return web.Response(status=503)

        async def secondary(request):
            calls["secondary"] += 1
            return web.json_response({"choices": []})
        app.router.add_post("/primary", primary)
        app.router.add_post("/secondary", secondary)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        route = [{"name": "primary", "url": f"http://127.0.0.1:{port}/primary",
                  "circuit_breaker": {"failures": 2}},
                 {"name": "secondary", "url": f"http://127.0.0.1:{port}/secondary"}]
        upstream = Upstream()
        b, _, _ = breakers()
        outcomes = []
        try:
            for _ in range(4):
                result = await call_in_order(upstream, route, b"{}", default_timeout=2, connect_timeout=1,
                                             breakers=b, model="m")
                outcomes.append([(a.backend, a.outcome) for a in result.attempts])
        finally:
            await upstream.close()
            await runner.cleanup()
        return outcomes

    outcomes = asyncio.run(scenario())
    assert calls == {"primary": 2, "secondary": 4}
    assert outcomes[-1] == [("primary", "circuit_open"), ("secondary", "ok")]
