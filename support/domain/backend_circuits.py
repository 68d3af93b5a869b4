"""A model backend's circuit breaker as a scenario drives it (issue 16): the model routed with the breaker's settings
on its primary backend's entry (as a model file of the config repository would say them), the circuit opened by
failures, what a platform admin sees of it (`/admin/routing/circuit-breakers`), and its changes of state in the
platform's audit log. The scenario's model is its own, so its breaker is too: scenarios run beside each other."""
from __future__ import annotations

from support.client.api import Exchange, Request
from support.client.assertions import expect_equal, expect_status, expect_true
from support.database.seeding import set_model_backends
from support.domain.model_routes import ModelRoutes
from support.domain.platform_api import chat_body
from support.harness.waits import wait_until
from support.harness.world import Circuits
from support.tokens.signing_keys import KeyMaterial

PRICES = (1_000_000, 2_000_000)
AUDITED = "routing.circuit_breaker"


class BackendCircuits:
    def __init__(self, routing: ModelRoutes, keys: KeyMaterial, timeout: float):
        self.routing, self.keys, self.timeout = routing, keys, timeout
        self.api, self.world = routing.api, routing.world

    @property
    def circuits(self) -> Circuits:
        return self.world.circuits

    def declare(self, model: str, timeout_seconds: float, failures: int, cooldown: float) -> None:
        """A primary then a secondary backend; the primary given `timeout_seconds`, its circuit opening after
        `failures` failures in a row and probed after `cooldown` seconds."""
        declared = self.routing.declare(model, PRICES, ["primary", "secondary"])
        declared.route[0].update(timeout_seconds=timeout_seconds,
                                 circuit_breaker={"failures": failures, "cooldown_seconds": cooldown})
        declared.backend_timeout = timeout_seconds
        set_model_backends(self.routing.db, declared.served_as, declared.route)
        self.circuits.failures, self.circuits.cooldown = failures, cooldown

    # ---- what a platform admin sees -------------------------------------------------------------------------------

    def read(self, backend: str) -> tuple[dict | None, Exchange]:
        model = self.routing.current().served_as
        exchange = expect_status(self.api.get(f"/admin/routing/circuit-breakers?model={model}",
                                              token=self.keys.admin_token()), 200,
                                 "a platform admin reading the circuit breakers")
        found = [b for b in exchange.json().get("breakers", []) if b.get("backend") == backend]
        return (found[0] if found else None), exchange

    def await_state(self, backend: str, *states: str) -> str:
        """Poll the admin view until the backend's circuit is in one of `states` (a circuit never opened reads
        closed); returns the state seen."""
        def seen() -> str:
            breaker, _ = self.read(backend)
            return (breaker or {"state": "closed"})["state"]
        return wait_until(f"the {backend} backend's circuit to be {' or '.join(states)}", seen,
                          lambda now: now in states, timeout=self.circuits.cooldown + self.timeout,
                          describe=lambda now: f"it is {now}", max_interval=0.05)

    def expect_state(self, backend: str, state: str) -> None:
        breaker, exchange = self.read(backend)
        expect_equal((breaker or {"state": "closed"})["state"], state, f"the {backend} backend's circuit as a "
                     f"platform admin sees it ({breaker})", exchange)

    # ---- driving it ----------------------------------------------------------------------------------------------

    def hang(self, backend: str) -> None:
        self.routing.behave(backend, "hang")

    def failing_requests(self, key: str) -> list[Request]:
        """As many completions as the circuit's failures in a row, to be sent at once while the backend hangs:
        each waits out the backend's time-out together, so the circuit opens after one time-out, not one each."""
        model = self.routing.current()
        self.routing.note_calls_before(model.name)
        return [Request("POST", "/v1/chat/completions", token=self.world.key(key).secret,
                        json_body=chat_body(model.served_as)) for _ in range(self.circuits.failures)]

    def expect_opened(self, backend: str, answers: list[Exchange]) -> None:
        """Each of the failing completions was still answered by the next backend, and the circuit has opened: it
        is open, or already half-open (a circuit gets there only from open) when a short cool-down passed before
        the admin view was read."""
        for answer in answers:
            expect_status(answer, 200, f"a chat completion while the {backend} backend hangs")
            expect_equal(answer.response_headers.get("X-Gateway-Backend"), "secondary", "the backend that answered",
                         answer)
        self.await_state(backend, "open", "half_open")

    def expect_answered_without_waiting(self, answer: Exchange, backend: str) -> None:
        limit = self.routing.current().backend_timeout
        expect_true(answer.elapsed_ms / 1000 < limit, f"Expected the answer in less than the {backend} backend's "
                    f"time-out of {limit:g} s (its circuit open, it is skipped), but it took "
                    f"{answer.elapsed_ms / 1000:.2f} s", answer)

    def expect_one_probe(self, backend: str) -> None:
        """Of the completions sent at once, exactly one reached the backend; every one was answered."""
        answers = self.circuits.answers
        reached = [a.request_id for a in answers if self.routing.calls_with_request_id(backend, a.request_id)]
        expect_equal(len(reached), 1, f"the completions of {[a.request_id for a in answers]} the {backend} backend "
                     f"received (it received {reached})")
        for answer in answers:
            expect_status(answer, 200, "a completion sent at once after the cool-down")

    # ---- the audit log -------------------------------------------------------------------------------------------

    def transitions(self, backend: str) -> tuple[list[str], Exchange]:
        """The states the backend's circuit entered, oldest first, as the platform's audit log says."""
        exchange = expect_status(self.api.get(f"/admin/audit?action={AUDITED}&limit=1000",
                                              token=self.keys.admin_token()), 200,
                                 "a platform admin reading the audit log")
        target = f"backend:{self.routing.current().served_as}/{backend}"
        mine = [e for e in exchange.json()["events"] if e.get("target") == target]
        return [(e.get("details") or {}).get("to") for e in reversed(mine)], exchange

    def expect_transitions(self, backend: str, expected: list[str]) -> None:
        """The circuit's changes of state in the platform's audit log are exactly `expected` (each audited once);
        the log is written just after each change, so it is read until it holds them."""
        wait_until(f"the platform's audit log to hold the {backend} backend's circuit changes {expected}, each once",
                   lambda: self.transitions(backend), lambda found: found[0] == expected, timeout=self.timeout,
                   describe=lambda found: f"the changes {found[0]} (read by request {found[1].request_id})",
                   max_interval=0.05)
