"""Circuit breakers: a model's backend that keeps failing is skipped at once, instead of costing every caller its
time-out before the fallback answers.

One breaker per backend of a model's route (the model's name and the backend's name), kept in the gateway process:
closed -> open once `failures` tries in a row have failed (5xx, time-out, connection error) within `window_seconds`;
open: requests skip the backend (attempt outcome `circuit_open`) -> half_open after `cooldown_seconds`: the next
request is let through as the one probe, the others still skip -> closed when the probe succeeds (any answer,
a 4xx too), open again when it fails. A breaker is made at a backend's first failure, so backends that never fail
cost nothing. Each change of state is logged and audited once (`routing.circuit_breaker`, actor system, target
`backend:<model>/<backend>`) and shows in `gateway_circuit_breaker_state{model, backend, state}`.

Settings: `circuit_breaker: {failures, window_seconds, cooldown_seconds}` in the config repository's gateway.yaml
(defaults 5, 30, 10), and the same mapping on one backend entry of a model's route, which overrides the global
values for that backend.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable

from prometheus_client import Counter, Gauge

from gateway import audit
from gateway.logs import log as log_fields
from gateway.metrics import REGISTRY

log = logging.getLogger("gateway.routing")

STATES = ("closed", "open", "half_open")
FAILURES = ("server_error", "timeout", "connection_error")  # attempt outcomes that count against a backend
STATE = Gauge("gateway_circuit_breaker_state", "Circuit breakers of model backends: 1 for the state each is in",
              ["model", "backend", "state"], registry=REGISTRY)
TRANSITIONS = Counter("gateway_circuit_breaker_transitions_total", "Circuit breaker changes of state, by the state "
                      "entered", ["model", "backend", "to"], registry=REGISTRY)
LIMITS = {"failures": (int, 1, 1000), "window_seconds": (float, 0.1, 86400.0),
          "cooldown_seconds": (float, 0.1, 86400.0)}


@dataclass(frozen=True)
class BreakerSettings:
    failures: int = 5
    window_seconds: float = 30.0
    cooldown_seconds: float = 10.0

    def overridden(self, raw) -> BreakerSettings:
        """These settings with a `circuit_breaker` mapping's valid values over them (invalid ones are ignored here;
        the config repository's validation refuses them before they get this far)."""
        if not isinstance(raw, dict):
            return self
        changes = {}
        for name, (kind, low, high) in LIMITS.items():
            value = raw.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high \
                    and (kind is float or isinstance(value, int)):
                changes[name] = kind(value)
        return replace(self, **changes) if changes else self


@dataclass
class Breaker:
    model: str
    backend: str
    state: str = "closed"
    failures: deque = field(default_factory=deque)  # monotonic times of the failures in a row
    opened_at: float | None = None
    probing: bool = False  # the half-open probe is in flight
    last_failure: str | None = None
    settings: BreakerSettings = field(default_factory=BreakerSettings)


@dataclass(frozen=True)
class Change:
    model: str
    backend: str
    before: str
    after: str
    why: str
    settings: BreakerSettings


class Breakers:
    """Every breaker of this process. `on_change(Change)` is called once per change of state, outside the lock."""

    def __init__(self, defaults: Callable[[], dict | None], on_change: Callable[[Change], None], *,
                 clock: Callable[[], float] = time.monotonic):
        self._defaults = defaults  # the applied gateway.yaml's `circuit_breaker`, or None
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers: dict[tuple[str, str], Breaker] = {}

    def settings(self, backend: dict) -> BreakerSettings:
        base = BreakerSettings().overridden(self._defaults())
        return base.overridden(backend.get("circuit_breaker")) if isinstance(backend, dict) else base

    def admit(self, model: str, name: str) -> str | None:
        """'call' (closed), 'probe' (the half-open try) or None: skip the backend, its circuit is open."""
        changes: list[Change] = []
        with self._lock:
            breaker = self._breakers.get((model, name))
            if breaker is None or breaker.state == "closed":
                return "call"
            self._due(breaker, changes)
            if breaker.state == "half_open" and not breaker.probing:
                breaker.probing = True
                verdict = "probe"
            else:
                verdict = None
        self._tell(changes)
        return verdict

    def outcome(self, model: str, name: str, backend: dict, outcome: str, admitted: str) -> None:
        """What one try of the backend came to (an Attempt's outcome); `admitted` is what admit() said."""
        if outcome not in FAILURES and outcome not in ("ok", "client_error"):
            self.abandon(model, name, admitted)  # misconfigured: says nothing about the backend's health
            return
        changes: list[Change] = []
        with self._lock:
            breaker = self._breakers.get((model, name))
            if outcome not in FAILURES:
                if breaker is not None:
                    breaker.failures.clear()
                    if breaker.state != "closed":
                        self._move(breaker, "closed", "the probe succeeded", changes)
            else:
                if breaker is None:
                    breaker = self._breakers[(model, name)] = Breaker(model, name)
                self._failed(breaker, self.settings(backend), outcome, admitted == "probe", changes)
        self._tell(changes)

    def abandon(self, model: str, name: str, admitted: str | None) -> None:
        """A try that ended without a verdict (the request was cancelled): a probe's place goes to the next request."""
        if admitted != "probe":
            return
        with self._lock:
            breaker = self._breakers.get((model, name))
            if breaker is not None:
                breaker.probing = False

    def _failed(self, breaker: Breaker, settings: BreakerSettings, outcome: str, probe: bool,
                changes: list[Change]) -> None:
        now = self._clock()
        breaker.settings, breaker.last_failure = settings, outcome
        if probe or breaker.state == "half_open":
            breaker.opened_at = now
            self._move(breaker, "open", f"the probe failed ({outcome})", changes)
            return
        breaker.failures.append(now)
        while breaker.failures and breaker.failures[0] < now - settings.window_seconds:
            breaker.failures.popleft()
        if breaker.state == "closed" and len(breaker.failures) >= settings.failures:
            breaker.opened_at = now
            self._move(breaker, "open", f"{len(breaker.failures)} failures in a row within "
                                        f"{settings.window_seconds:g} s (the last: {outcome})", changes)

    def _due(self, breaker: Breaker, changes: list[Change]) -> None:
        if breaker.state == "open" and self._clock() >= breaker.opened_at + breaker.settings.cooldown_seconds:
            self._move(breaker, "half_open", f"its cool-down of {breaker.settings.cooldown_seconds:g} s has passed; "
                                             f"the next request probes it", changes)

    def _move(self, breaker: Breaker, state: str, why: str, changes: list[Change]) -> None:
        before, breaker.state, breaker.probing = breaker.state, state, False
        if state == "closed":
            breaker.failures.clear()
            breaker.opened_at = None
        changes.append(Change(breaker.model, breaker.backend, before, state, why, breaker.settings))

    def _tell(self, changes: list[Change]) -> None:
        for change in changes:
            for state in STATES:
                STATE.labels(change.model, change.backend, state).set(1 if state == change.after else 0)
            TRANSITIONS.labels(change.model, change.backend, change.after).inc()
            self._on_change(change)

    def snapshot(self, model: str | None = None) -> list[dict]:
        """Each breaker as it is now (an open one past its cool-down turns half-open on the way)."""
        changes: list[Change] = []
        with self._lock:
            now = self._clock()
            shown = []
            for breaker in self._breakers.values():
                if model is not None and breaker.model != model:
                    continue
                self._due(breaker, changes)
                retry = None if breaker.opened_at is None else breaker.opened_at + breaker.settings.cooldown_seconds
                shown.append({"model": breaker.model, "backend": breaker.backend, "state": breaker.state,
                              "failures_in_a_row": len(breaker.failures), "last_failure": breaker.last_failure,
                              "probe_in_flight": breaker.probing,
                              "seconds_until_probe": None if retry is None or breaker.state != "open"
                              else round(max(0.0, retry - now), 3),
                              "settings": breaker.settings.__dict__})
        self._tell(changes)
        return sorted(shown, key=lambda b: (b["model"], b["backend"]))


def for_runtime(rt) -> Breakers:
    """The gateway's breakers: settings from the applied gateway.yaml, each change logged and audited (on a
    database thread; the request that caused it does not wait for it)."""

    def record(change: Change) -> None:
        try:
            with rt.db.transaction() as session:
                audit.record(session, audit.SYSTEM, "routing.circuit_breaker",
                             target=f"backend:{change.model}/{change.backend}", outcome="allowed",
                             reason=f"the circuit of backend {change.backend!r} of model {change.model!r} went from "
                                    f"{change.before} to {change.after}: {change.why}",
                             details={"model": change.model, "backend": change.backend, "from": change.before,
                                      "to": change.after, "settings": change.settings.__dict__})
        except Exception as exc:  # the log line below still says it
            log.warning("could not audit a circuit breaker change (%s)", type(exc).__name__)

    def changed(change: Change) -> None:
        log_fields(log, logging.WARNING, f"circuit {change.after}", model=change.model, backend=change.backend,
                   before=change.before, why=change.why)
        try:
            rt.db_threads.submit(record, change)
        except RuntimeError:  # the gateway is shutting down: the log line above says it
            pass

    return Breakers(lambda: rt.reconciler.applied_settings.get("circuit_breaker") if rt.reconciler else None,
                    changed)
