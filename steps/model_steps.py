"""Models, their backends and chat traffic through the gateway: routing, fallback, trace context, bad requests."""
import parse
from behave import given, register_type, then, when

from support.domain import model_routes as routing
from support.harness.assertions import expect_equal, expect_status, expect_true, problem_field
from support.harness.money import micros
from support.database.seeding import seed_org_policy


@parse.with_pattern(r"[a-z][a-z-]*")
def _backend_name(text):
    return text


register_type(Backend=_backend_name)  # "primary", "fallback": one word, so "the model's primary" never matches


def declare_model(context, model: str, prompt_price: int, completion_price: int, backends: list[str]) -> None:
    """A model only this scenario uses, routed to this scenario's stub backends in the given order."""
    routing.declare_model(context, model, prompt_price, completion_price, backends)


# ---- set-up ------------------------------------------------------------------------------------------------------

@given('the model "{model}" costs {prompt} per 1k prompt tokens and {completion} per 1k completion tokens')
def model_with_price(context, model, prompt, completion):
    declare_model(context, model, micros(prompt), micros(completion), ["primary"])


@given('the model "{model}" is served by a primary and a fallback backend')
def model_with_fallback(context, model):
    declare_model(context, model, micros("1.00 USD"), micros("2.00 USD"), ["primary", "fallback"])


@given('"{org}" calls models with the API key "{key}"')
def org_calls_models_with_key(context, org, key):
    routing.issue_key(context, org, key)


@given('"{org}" may use only the model "{model}"')
def org_allowlist(context, org, model):
    seed_org_policy(context.db, context.world.org(org).slug, allowed_models=[routing.model_name(context, model)])


@given("the {backend:Backend} backend fails with {status:d}")
def backend_fails(context, backend, status):
    context.backends.behave(routing.backend(context, backend), "error", status=status)


@given("the {backend:Backend} backend does not answer in time")
def backend_too_slow(context, backend):
    routing.give_backend_short_timeout(context, backend)
    context.backends.behave(routing.backend(context, backend), "hang")


@given("the {backend:Backend} backend drops the connection")
def backend_drops(context, backend):
    context.backends.behave(routing.backend(context, backend), "drop")


@given("the {backend:Backend} backend is stopped")
def backend_stopped(context, backend):
    routing.stop_backend(context, backend)


@given("the {backend:Backend} backend refuses the request as too long")
def backend_refuses(context, backend):
    context.refusal_body = routing.REFUSAL
    context.backends.behave(routing.backend(context, backend), "error", status=400, body=routing.REFUSAL)


@given("the {backend:Backend} backend reports {prompt:d} prompt and {completion:d} completion tokens "
       "for each completion")
def backend_reports_usage(context, backend, prompt, completion):
    context.backends.behave(routing.backend(context, backend), "ok",
                            usage={"prompt_tokens": prompt, "completion_tokens": completion})


# ---- requests ----------------------------------------------------------------------------------------------------

@when('the key "{key}" asks "{model}" for a chat completion')
def key_asks_model(context, key, model):
    routing.ask(context, key, model)


@when('the key "{key}" sends a chat request {flaw}')
def key_sends_flawed(context, key, flaw):
    context.response = routing.send_flawed(context, key, flaw)


# ---- outcomes ----------------------------------------------------------------------------------------------------

@then("the completion is answered by the model's {backend} backend")
def answered_by(context, backend):
    expect_status(context.response, 200, "the chat completion")
    expect_equal(context.response.response_headers.get("X-Gateway-Backend"), backend,
                 "the backend named in X-Gateway-Backend", context.response)
    usage = context.response.json().get("usage")
    expect_true(isinstance(usage, dict), f"Expected the completion to report its usage, but it had {usage!r}",
                context.response)


@then('"{org}" has been charged exactly the completion\'s usage at the model\'s price')
def charged_exactly(context, org):
    usage = context.response.json()["usage"]
    prompt_price, completion_price = context.model_prices[context.chat_model]
    expected = routing.cost(usage, prompt_price, completion_price)
    exchange = context.platform.usage(org)
    spent = exchange.json()["spent_micros"]
    expect_equal(spent, expected, f"the spend of {org!r} (usage {usage} at {prompt_price}/{completion_price} "
                 f"micro-USD per 1k tokens)", exchange)


@then("the {backend:Backend} backend was tried first")
def tried_first(context, backend):
    routing.expect_tried_before_answer(context, backend)


@then("the {backend:Backend} backend received no request for it")
def received_no_request(context, backend):
    routing.expect_no_new_calls(context, backend)


@then("the model's {backend:Backend} backend received no request for it")
def model_backend_received_none(context, backend):
    routing.expect_no_new_calls(context, backend)


@then("the model's {backend:Backend} backend received the request with the caller's trace id")
def backend_got_trace(context, backend):
    routing.expect_trace_forwarded(context, backend)


@then("the caller receives the primary backend's refusal unchanged")
def refusal_unchanged(context):
    expect_status(context.response, 400, "a chat completion the primary backend refused")
    expect_equal(context.response.json(), context.refusal_body, "the refusal's body, as the backend sent it",
                 context.response)
    expect_equal(context.response.response_headers.get("X-Gateway-Backend"), "primary",
                 "the backend named in X-Gateway-Backend", context.response)


@then("the request fails with 502, naming each backend that failed")
def bad_gateway(context):
    expect_status(context.response, 502, "a chat completion whose every backend is down")
    message = problem_field(context.response, "message") or ""
    for name in context.routes[context.chat_model]:
        expect_true(name in message, f"Expected the 502 message to name the backend {name!r}, but it said: "
                    f"{message!r}", context.response)


@then("the request is refused as an unknown model")
def unknown_model(context):
    routing.expect_refusal(context.response, 404, "model_not_found", "an unknown model")


@then('"{model}" is not among the models the key "{key}" can list')
def not_listed(context, model, key):
    routing.expect_not_listed(context, key, model)


@then('the request is refused with {status:d}, its message about "{subject}"')
def refused_with_message(context, status, subject):
    routing.expect_refusal(context.response, status, None, f"a chat request {context.flaw}", mentions=subject)
