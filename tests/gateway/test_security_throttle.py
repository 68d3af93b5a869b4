"""Throttles of credential guesses, the client address they count by, and the sampling of anonymous refusals."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from gateway import audit
from gateway.audit import RefusalSampler
from gateway.db import Database
from gateway.migrate import upgrade
from gateway.models import AuditEvent, utcnow
from gateway.settings import Settings
from gateway.throttle import ClientAddresses, FailureWindow, Guards


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_block_until_the_oldest_leaves_the_window():
    clock = Clock()
    window = FailureWindow(3, 60, clock=clock)
    for _ in range(3):
        assert window.blocked_for("login:olive@x.io") is None
        window.failed("login:olive@x.io")
        clock.now += 10
    assert window.blocked_for("login:olive@x.io") == 30  # the first failure leaves the window at 1060
    assert window.blocked_for("login:someone-else@x.io") is None
    clock.now += 30
    assert window.blocked_for("login:olive@x.io") is None


def test_only_the_first_refusal_of_a_burst_is_audited():
    clock = Clock()
    window = FailureWindow(1, 60, clock=clock)
    window.failed("k")
    assert [window.first_refusal_of_burst("k", 60) for _ in range(5)] == [True, False, False, False, False]
    clock.now += 61
    window.failed("k")
    assert window.first_refusal_of_burst("k", 60)  # a new burst


def test_a_flood_of_random_keys_is_forgotten_oldest_first():
    window = FailureWindow(1, 60, max_keys=100)
    for i in range(1000):
        window.failed(f"login:{i}@x.io")
    assert len(window._failures) == 100 and window.blocked_for("login:999@x.io") is not None


def test_a_success_clears_the_account_but_not_the_address():
    clock = Clock()
    settings = Settings(database_url="sqlite://", keys_dir=None, internal_jwt_secret="i" * 64,
                        admin_jwt_secret="a" * 64, config_repo=None, throttle_failures_per_account=2,
                        throttle_failures_per_address=3)
    guards = Guards(settings, clock=clock)
    token = ClientAddresses.set_current("203.0.113.9")
    try:
        guards.failed("login:a")
        guards.failed("login:a")
        assert guards.check("login:a").scope == "account"
        guards.succeeded("login:a")
        assert guards.check("login:a") is None
        guards.failed("login:b")
        throttled = guards.check("login:c")  # three failures from this address, whatever the account
        assert throttled.scope == "address" and throttled.audit and not guards.check("login:c").audit
    finally:
        ClientAddresses.reset_current(token)


def test_forwarded_for_is_believed_only_from_a_trusted_proxy():
    addresses = ClientAddresses(("127.0.0.1", "10.0.0.0/8"))
    assert addresses.resolve("198.51.100.7", "203.0.113.1") == "198.51.100.7"  # not a proxy: its own address
    assert addresses.resolve("127.0.0.1", "203.0.113.1") == "203.0.113.1"
    assert addresses.resolve("127.0.0.1", "203.0.113.1, 10.1.2.3") == "203.0.113.1"  # through two proxies
    assert addresses.resolve("127.0.0.1", "6.6.6.6, 203.0.113.1") == "203.0.113.1"  # a client's own claim ignored
    assert addresses.resolve("127.0.0.1", "not-an-ip") == "127.0.0.1"
    assert addresses.resolve("127.0.0.1", None) == "127.0.0.1"


def test_anonymous_refusals_past_the_budget_are_counted_then_summarised():
    clock = Clock()
    sampler = RefusalSampler(10, per_address=3, per_window=5, clock=clock)
    admitted = [sampler.admit("auth.user_token", "203.0.113.1") for _ in range(10)]
    assert admitted == [True] * 3 + [False] * 7
    assert [sampler.admit("auth.api_key", f"198.51.100.{i}") for i in range(4)] == [True, True, False, False]
    assert sampler.drain() == {("auth.user_token", "203.0.113.1"): 7, ("auth.api_key", "198.51.100.2"): 1,
                               ("auth.api_key", "198.51.100.3"): 1}
    assert sampler.drain() == {}
    clock.now += 10  # a new window, a new budget
    assert sampler.admit("auth.user_token", "203.0.113.1")


def test_the_sampler_says_when_its_window_ends_so_its_summaries_follow_at_once():
    clock = Clock()
    sampler = RefusalSampler(0.5, per_address=3, per_window=5, clock=clock)
    clock.now = 100.375
    assert abs(sampler.until_window_ends() - 0.125) < 1e-9
    clock.now = 100.5
    assert sampler.until_window_ends() == 0.5  # a window just begun


def test_summaries_are_written_and_old_anonymous_events_purged(tmp_path):
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    upgrade(url)
    db = Database(url)
    sampler = RefusalSampler(10, per_address=1, per_window=10)
    with db.transaction() as session:
        audit.record_unrecorded(session, {("auth.user_token", "203.0.113.1"): 41}, sampler)
        audit.record(session, audit.ANONYMOUS, "auth.user_token", outcome="denied", reason="old")
        audit.record(session, audit.Actor("user", "usr_1"), "keys.create", target="key:k")
        session.execute(AuditEvent.__table__.update().where(AuditEvent.reason == "old")
                        .values(at=utcnow() - timedelta(days=40)))
    with db.sessions() as session:
        summary = session.scalar(select(AuditEvent).where(AuditEvent.reason.like("41 more%")))
        assert summary.details == {"unrecorded_refusals": 41, "client_address": "203.0.113.1", "window_seconds": 10}
    with db.transaction() as session:
        assert audit.purge_unauthenticated(session, 30) == 1
    with db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == 2  # the summary and the user's
    db.dispose()


def test_attacker_text_is_cut_before_it_is_stored(tmp_path):
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    upgrade(url)
    db = Database(url)
    with db.transaction() as session:
        audit.record(session, audit.Actor("anonymous", "x" * 5000), "auth.login", target="/" + "p" * 5000,
                     outcome="denied", reason="r" * 100_000)
    with db.sessions() as session:
        event = session.scalar(select(AuditEvent))
    assert (len(event.actor_id), len(event.target), len(event.reason)) == (200, 300, 500)
    db.dispose()
