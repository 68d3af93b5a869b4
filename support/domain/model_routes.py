"""Chat traffic as a scenario sees it: models routed to this scenario's stub backends, requests sent with a key,
and what the backends saw of them (through the stub's record of calls, compared before and after a request)."""
from __future__ import annotations

import json
import math

from support.client.api import Exchange
from support.harness.assertions import expect_equal, expect_status, expect_true, problem_field
from support.domain.model_backends import UNREACHABLE_URL, Backend
from support.database.seeding import remove_model, seed_model, set_model_backends

SHORT_TIMEOUT_SECONDS = 0.5  # a backend that "does not answer in time" is given this long
CONTENT = "Hello, gateway"
# What the primary says when it refuses a request in the refusal scenario: it must reach the caller unchanged.
REFUSAL = {"error": {"message": "This model's maximum context length is 8 tokens; the messages hold 9.",
                     "type": "invalid_request_error", "code": "context_length_exceeded", "param": "messages"}}


def cost(usage: dict, prompt_price_per_1k: int, completion_price_per_1k: int) -> int:
    """The contract's charge for a completion: its usage at the model's price, rounded up to a micro-USD."""
    return math.ceil((usage["prompt_tokens"] * prompt_price_per_1k
                      + usage["completion_tokens"] * completion_price_per_1k) / 1000)


# ---- models and backends -------------------------------------------------------------------------------------------

def declare_model(context, model: str, prompt_price: int, completion_price: int, backends: list[str]) -> None:
    """A model only this scenario uses, routed to this scenario's stub namespaces in the given order.

    Keeps context.model_backends (backend name -> Backend, the last model's), context.model_prices and
    context.chat_model as other step modules expect, and context.routes (model -> its backends) for this one."""
    name = context.ns.name(model)
    routed = {}
    for backend_name in backends:
        backend = Backend(backend_name, context.ns.name(f"{model}-{backend_name}"))
        routed[backend_name] = backend
        context.add_cleanup(context.backends.reset, backend)
    context.routes = getattr(context, "routes", {})
    context.routes[model] = routed
    context.route_urls = getattr(context, "route_urls", {})
    context.route_urls[model] = [{"name": b.name, "url": b.chat_url(context.backends.backend_base_url)}
                                 for b in routed.values()]
    seed_model(context.db, name, prompt_price_per_1k=prompt_price, completion_price_per_1k=completion_price,
               backends=context.route_urls[model])
    context.add_cleanup(remove_model, context.db, name)
    context.world.models[model] = name
    context.model_backends = dict(routed)
    context.model_prices = getattr(context, "model_prices", {})
    context.model_prices[model] = (prompt_price, completion_price)
    context.chat_model = model


def model_name(context, model: str) -> str:
    return context.world.models.get(model, model)


def _model_of_backend(context, backend: str) -> str:
    """The model a backend name refers to: the model being asked, else the one declared last with it."""
    routes = getattr(context, "routes", {})
    current = getattr(context, "chat_model", None)
    if current in routes and backend in routes[current]:
        return current
    for model in reversed(list(routes)):
        if backend in routes[model]:
            return model
    raise AssertionError(f"The scenario has no backend called {backend!r}; its models route to: "
                         f"{ {m: list(b) for m, b in routes.items()} }")


def backend(context, name: str) -> Backend:
    return context.routes[_model_of_backend(context, name)][name]


def _reroute(context, backend_name: str, **changes) -> None:
    model = _model_of_backend(context, backend_name)
    for entry in context.route_urls[model]:
        if entry["name"] == backend_name:
            entry.update(changes)
    set_model_backends(context.db, context.world.models[model], context.route_urls[model])


def give_backend_short_timeout(context, backend_name: str) -> None:
    _reroute(context, backend_name, timeout_seconds=SHORT_TIMEOUT_SECONDS)


def stop_backend(context, backend_name: str) -> None:
    """The backend's process is gone: nothing listens where the route points any more."""
    _reroute(context, backend_name, url=UNREACHABLE_URL)
    context.stopped_backends = getattr(context, "stopped_backends", set()) | {backend_name}


def _live_backends(context, model: str) -> dict[str, Backend]:
    stopped = getattr(context, "stopped_backends", set())
    return {n: b for n, b in getattr(context, "routes", {}).get(model, {}).items() if n not in stopped}


# ---- keys and requests ---------------------------------------------------------------------------------------------

def issue_key(context, org: str, key: str) -> None:
    owner = context.platform.owner_of(org)
    expect_status(context.platform.issue_key(owner, org, key), 201, f"{owner} issuing the API key {key!r}")


def snapshot_calls(context, model: str) -> None:
    """How many calls each live backend of the model had seen, so a Then can tell which calls a request made."""
    context.calls_before = {n: len(context.backends.calls(b)) for n, b in _live_backends(context, model).items()}


def ask(context, key: str, model: str, **body) -> Exchange:
    context.chat_model = model
    snapshot_calls(context, model)
    context.response = context.platform.chat(key, model_name(context, model), **body)
    return context.response


def new_calls(context, backend_name: str) -> list[dict]:
    before = getattr(context, "calls_before", {}).get(backend_name, 0)
    return context.backends.calls(backend(context, backend_name))[before:]


def expect_no_new_calls(context, backend_name: str) -> None:
    calls = new_calls(context, backend_name)
    expect_true(not calls, f"Expected the {backend_name} backend to receive no request for this one, but it "
                f"received {len(calls)}: {[c.get('headers', {}).get('x-request-id') for c in calls]}",
                context.response)


def _trace_id(call: dict) -> str | None:
    parts = (call.get("headers") or {}).get("traceparent", "").split("-")
    return parts[1] if len(parts) == 4 else None


def expect_trace_forwarded(context, backend_name: str) -> None:
    calls = new_calls(context, backend_name)
    expect_true(bool(calls), f"Expected the {backend_name} backend to receive the request, but it saw none",
                context.response)
    seen = [_trace_id(c) for c in calls]
    expect_equal(seen, [context.api.trace_id] * len(calls),
                 f"the trace id in the traceparent the {backend_name} backend received (the suite sent "
                 f"{context.api.trace_id})", context.response)


def expect_tried_before_answer(context, backend_name: str) -> None:
    """The failing backend saw this request (by its trace), before the backend that answered did."""
    answered = context.response.response_headers.get("X-Gateway-Backend")
    tried = [c for c in new_calls(context, backend_name) if _trace_id(c) == context.api.trace_id]
    expect_true(bool(tried), f"Expected the {backend_name} backend to have been tried with this request (trace "
                f"{context.api.trace_id}), but it saw no such call", context.response)
    if answered and answered != backend_name and answered in _live_backends(context, context.chat_model):
        answers = [c for c in new_calls(context, answered) if _trace_id(c) == context.api.trace_id]
        expect_true(bool(answers) and tried[0]["at"] <= answers[0]["at"],
                    f"Expected the {backend_name} backend to be tried before {answered}, but it was called at "
                    f"{tried[0]['at']} and {answered} at {answers[0]['at'] if answers else 'never'}",
                    context.response)


# ---- refusals ------------------------------------------------------------------------------------------------------

def expect_refusal(exchange: Exchange, status: int, code: str | None, doing: str, mentions: str | None = None) -> None:
    expect_status(exchange, status, doing)
    if code is not None:
        expect_equal(problem_field(exchange, "code"), code, "the error code", exchange)
    if mentions is not None:
        message = problem_field(exchange, "message") or ""
        expect_true(mentions.lower() in message.lower(), f"Expected the message to be about {mentions!r}, but it "
                    f"said: {message!r}", exchange)


def expect_not_listed(context, key: str, model: str) -> None:
    exchange = context.api.get("/v1/models", token=context.world.key(key).secret)
    expect_status(exchange, 200, f"the key {key!r} listing its models")
    listed = [m.get("id") for m in exchange.json().get("data", [])]
    expect_true(model_name(context, model) not in listed, f"Expected {model!r} to be hidden from the key {key!r}, "
                f"but the list held {listed}", exchange)
    allowed = [m for m in context.world.models if m != model]
    expect_true(all(model_name(context, m) in listed for m in allowed),
                f"Expected the models the org may use ({allowed}) to be listed, but the list held {listed}", exchange)


# ---- malformed requests --------------------------------------------------------------------------------------------

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


def send_flawed(context, key: str, flaw: str) -> Exchange:
    model = context.world.models.get(getattr(context, "chat_model", None) or "", "no-model")
    bodies = _flawed_bodies(model)
    if flaw not in bodies:
        raise AssertionError(f"The suite knows no chat request {flaw!r}; it knows: {', '.join(bodies)}")
    kind, body = bodies[flaw]
    context.flaw = flaw
    token = context.world.key(key).secret
    if kind == "json":
        return context.api.post("/v1/chat/completions", token=token, json_body=body)
    return context.api.post("/v1/chat/completions", token=token, data=body.encode("utf-8"),
                            headers={"Content-Type": "application/json"})
