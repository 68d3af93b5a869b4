"""Chat traffic as a scenario sees it: models routed to this scenario's stub backends, requests sent with a key,
and what the backends saw of them (through the stub's record of calls, compared before and after a request)."""
from __future__ import annotations

import json
from typing import Callable

from support.client.api import Exchange
from support.client.assertions import expect_equal, expect_status, expect_true, problem_field
from support.database.reflection import Database
from support.database.seeding import remove_model, seed_model, seed_org_policy, set_model_backends
from support.domain.model_backends import UNREACHABLE_URL, ModelBackends
from support.domain.platform_api import CONTENT, Platform
from support.harness.money import cost_micros
from support.harness.world import Backend, Model

SHORT_TIMEOUT_SECONDS = 0.15  # a backend that "does not answer in time" (it hangs) is given this long
# What the primary says when it refuses a request in the refusal scenario: it must reach the caller unchanged.
REFUSAL = {"error": {"message": "This model's maximum context length is 8 tokens; the messages hold 9.",
                     "type": "invalid_request_error", "code": "context_length_exceeded", "param": "messages"}}


class ModelRoutes:
    def __init__(self, platform: Platform, db: Database, backends: ModelBackends, add_cleanup: Callable):
        self.platform = platform
        self.api, self.ns, self.world = platform.api, platform.ns, platform.world
        self.db, self.backends = db, backends
        self.add_cleanup = add_cleanup
        self.allowed: dict[str, list[str]] = {}  # org -> the only models it may use (as served), when restricted

    # ---- models and backends -----------------------------------------------------------------------------------

    def declare(self, model: str, prices: tuple[int, int], backend_names: list[str],
                timeout_seconds: float | None = None) -> Model:
        """A model only this scenario uses, seeded into the database and routed to this scenario's stub
        namespaces in the given order (each backend given `timeout_seconds`, when said)."""
        routed = self._backends(model, backend_names)
        route = [{"name": b.name, "url": b.chat_url(self.backends.backend_base_url)} for b in routed.values()]
        if timeout_seconds is not None:
            for entry in route:
                entry["timeout_seconds"] = timeout_seconds
        declared = Model(model, self.ns.name(model), prices, routed, route, timeout_seconds)
        seed_model(self.db, declared.served_as, prompt_price_per_1k=prices[0], completion_price_per_1k=prices[1],
                   backends=route)
        self.add_cleanup(remove_model, self.db, declared.served_as)
        return self._keep(declared)

    def adopt(self, model: str, backend_names: list[str], prices: tuple[int, int]) -> Model:
        """A model this scenario declared in git (the gateway seeds it): known here so chat steps can use it."""
        return self._keep(Model(model, self.ns.name(model), prices, self._backends(model, backend_names)))

    def _backends(self, model: str, names: list[str]) -> dict[str, Backend]:
        routed = {name: Backend(name, self.ns.name(f"{model}-{name}")) for name in names}
        for backend in routed.values():
            self.add_cleanup(self.backends.reset, backend)
        return routed

    def _keep(self, model: Model) -> Model:
        self.world.models[model.name] = model
        self.world.chat.model = model.name
        return model

    def served_as(self, model: str) -> str:
        """The name the gateway knows a model by (a name the scenario did not declare is sent as it is)."""
        return self.world.models[model].served_as if model in self.world.models else model

    def current(self) -> Model:
        """The model being asked (or declared last)."""
        if self.world.chat.model is None:
            raise AssertionError("The scenario has declared no model yet")
        return self.world.model(self.world.chat.model)

    def backend(self, name: str) -> Backend:
        return self._model_of(name).backends[name]

    def _model_of(self, backend_name: str) -> Model:
        """The model a backend name refers to: the model being asked, else the one declared last with it."""
        current = self.world.models.get(self.world.chat.model or "")
        if current is not None and backend_name in current.backends:
            return current
        for model in reversed(list(self.world.models.values())):
            if backend_name in model.backends:
                return model
        raise AssertionError(f"The scenario has no backend called {backend_name!r}; its models route to: "
                             f"{ {m.name: list(m.backends) for m in self.world.models.values()} }")

    def behave(self, backend_name: str, mode: str, **settings) -> None:
        """Make a backend answer, fail, hang or drop (see the stub's control API)."""
        self.backends.behave(self.backend(backend_name), mode, **settings)

    def calls(self, backend_name: str) -> list[dict]:
        return self.backends.calls(self.backend(backend_name))

    def _reroute(self, backend_name: str, **changes) -> None:
        model = self._model_of(backend_name)
        for entry in model.route or []:
            if entry["name"] == backend_name:
                entry.update(changes)
        set_model_backends(self.db, model.served_as, model.route)

    def give_short_timeout(self, backend_name: str) -> None:
        self._reroute(backend_name, timeout_seconds=SHORT_TIMEOUT_SECONDS)

    def stop(self, backend_name: str) -> None:
        """The backend's process is gone: nothing listens where the route points any more."""
        self._reroute(backend_name, url=UNREACHABLE_URL)
        self.world.chat.stopped.add(backend_name)

    def _live_backends(self, model: str) -> dict[str, Backend]:
        routed = self.world.models[model].backends if model in self.world.models else {}
        return {n: b for n, b in routed.items() if n not in self.world.chat.stopped}

    def allow_only(self, org: str, models: list[str]) -> None:
        """The org may use these models and no other (written straight into its row)."""
        self.allowed[org] = [self.served_as(m) for m in models]
        seed_org_policy(self.db, self.world.org(org).slug, allowed_models=self.allowed[org])

    # ---- keys and requests -----------------------------------------------------------------------------------------

    def issue_key(self, org: str, key: str) -> None:
        owner = self.platform.owner_of(org)
        expect_status(self.platform.issue_key(owner, org, key), 201, f"{owner} issuing the API key {key!r}")

    def ask(self, key: str, model: str, **body) -> Exchange:
        """A chat completion with the key; remembers how many calls each backend had seen before it."""
        self.note_calls_before(model)
        return self.platform.chat(key, self.served_as(model), **body)

    def note_calls_before(self, model: str) -> None:
        """The model becomes the one being asked; how many calls each of its backends has seen is noted."""
        self.world.chat.model = model
        self.world.chat.calls_before = {n: len(self.backends.calls(b)) for n, b in self._live_backends(model).items()}

    def ask_answered(self, key: str, model: str) -> Exchange:
        """A chat completion that must be answered; what it cost is noted against the key's org."""
        exchange = expect_status(self.ask(key, model), 200, f"a chat completion with the key {key!r}")
        org = self.world.key(key).org
        cost = self.cost(exchange.json()["usage"], model)
        self.world.chat.charges.setdefault(org, []).append(cost)
        self.world.chat.answered += 1
        return exchange

    def cost(self, usage: dict, model: str | None = None) -> int:
        """What a completion with this usage costs at the model's price (the model asked, unless named)."""
        return cost_micros(usage, *self.world.model(model or self.current().name).prices)

    def calls_with_request_id(self, backend_name: str, request_id: str) -> list[dict]:
        return [c for c in self.calls(backend_name)
                if {k.lower(): v for k, v in c["headers"].items()}.get("x-request-id") == request_id]

    def new_calls(self, backend_name: str) -> list[dict]:
        before = self.world.chat.calls_before.get(backend_name, 0)
        return self.calls(backend_name)[before:]

    # ---- what the backends saw -------------------------------------------------------------------------------------

    def expect_no_new_calls(self, backend_name: str, answer: Exchange) -> None:
        calls = self.new_calls(backend_name)
        expect_true(not calls, f"Expected the {backend_name} backend to receive no request for this one, but it "
                    f"received {len(calls)}: {[c.get('headers', {}).get('x-request-id') for c in calls]}", answer)

    def expect_trace_forwarded(self, backend_name: str, answer: Exchange) -> None:
        calls = self.new_calls(backend_name)
        expect_true(bool(calls), f"Expected the {backend_name} backend to receive the request, but it saw none",
                    answer)
        expect_equal([_trace_id(c) for c in calls], [self.api.trace_id] * len(calls),
                     f"the trace id in the traceparent the {backend_name} backend received (the suite sent "
                     f"{self.api.trace_id})", answer)

    def expect_tried_before_answer(self, backend_name: str, answer: Exchange) -> None:
        """The failing backend saw this request (by its trace), before the backend that answered did."""
        answered_by = answer.response_headers.get("X-Gateway-Backend")
        tried = [c for c in self.new_calls(backend_name) if _trace_id(c) == self.api.trace_id]
        expect_true(bool(tried), f"Expected the {backend_name} backend to have been tried with this request (trace "
                    f"{self.api.trace_id}), but it saw no such call", answer)
        if answered_by and answered_by != backend_name and answered_by in self._live_backends(self.current().name):
            answers = [c for c in self.new_calls(answered_by) if _trace_id(c) == self.api.trace_id]
            expect_true(bool(answers) and tried[0]["at"] <= answers[0]["at"],
                        f"Expected the {backend_name} backend to be tried before {answered_by}, but it was called at "
                        f"{tried[0]['at']} and {answered_by} at {answers[0]['at'] if answers else 'never'}", answer)

    def expect_listed_only_allowed(self, key: str, org: str, model: str) -> None:
        """The key's list is exactly the models its org may use (`allow_only`): `model` is hidden, and so is any
        other model of the gateway."""
        exchange = self.api.get("/v1/models", token=self.world.key(key).secret)
        expect_status(exchange, 200, f"the key {key!r} listing its models")
        listed = [m.get("id") for m in exchange.json().get("data", [])]
        expect_true(self.served_as(model) not in listed, f"Expected {model!r} to be hidden from the key {key!r}, "
                    f"but the list held {listed}", exchange)
        allowed = self.allowed.get(org)
        expect_true(allowed is not None, f"The scenario never said which models {org!r} may use")
        expect_equal(sorted(listed), sorted(allowed), f"the models the key {key!r} lists (those {org!r} may use)",
                     exchange)

    # ---- malformed requests ----------------------------------------------------------------------------------------

    def send_flawed(self, key: str, flaw: str) -> Exchange:
        model = self.served_as(self.world.chat.model) if self.world.chat.model else "no-model"
        bodies = _flawed_bodies(model)
        if flaw not in bodies:
            raise AssertionError(f"The suite knows no chat request {flaw!r}; it knows: {', '.join(bodies)}")
        kind, body = bodies[flaw]
        token = self.world.key(key).secret
        if kind == "json":
            return self.api.post("/v1/chat/completions", token=token, json_body=body)
        return self.api.post("/v1/chat/completions", token=token, data=body.encode("utf-8"),
                             headers={"Content-Type": "application/json"})


def _trace_id(call: dict) -> str | None:
    parts = (call.get("headers") or {}).get("traceparent", "").split("-")
    return parts[1] if len(parts) == 4 else None


def expect_refusal(exchange: Exchange, status: int, code: str | None, doing: str, mentions: str | None = None) -> None:
    expect_status(exchange, status, doing)
    if code is not None:
        expect_equal(problem_field(exchange, "code"), code, "the error code", exchange)
    if mentions is not None:
        message = problem_field(exchange, "message") or ""
        expect_true(mentions.lower() in message.lower(), f"Expected the message to be about {mentions!r}, but it "
                    f"said: {message!r}", exchange)


def _flawed_bodies(model: str) -> dict:
    message = [{"role": "user", "content": CONTENT}]
    return {
        "that is not JSON": ("data", '{"model": "%s", "messages": [' % model),
        "that is a JSON array": ("json", [{"model": model, "messages": message}]),
        "without messages": ("json", {"model": model}),
        "whose messages are not objects": ("json", {"model": model, "messages": [CONTENT]}),
        "whose model is a number": ("json", {"model": 7, "messages": message}),
        "whose max_tokens is a word": ("json", {"model": model, "messages": message, "max_tokens": "lots"}),
        "with a number that is not a number": ("data", '{"model": "%s", "messages": %s, "temperature": NaN}'
                                               % (model, json.dumps(message))),
        "with a broken unicode escape": ("data", '{"model": "%s", "messages": [{"role": "user", "content": '
                                         '"\\ud800"}]}' % model),
        "nested too deeply to read": ("data", "[" * 100_000 + "]" * 100_000),
        "larger than the gateway accepts": ("json", {"model": model, "messages": [
            {"role": "user", "content": "x" * 2_000_000}]}),
    }
