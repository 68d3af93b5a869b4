"""Models, their backends and chat traffic through the gateway: routing, fallback, trace context, bad requests."""
from behave import given, then, when

from support.client.assertions import expect_equal, expect_status, expect_true, problem_field
from support.domain.model_routes import REFUSAL, expect_refusal
from support.harness import step_types  # noqa: F401  (registers {backend:Backend}, ...)
from support.harness.money import micros


# ---- set-up ------------------------------------------------------------------------------------------------------

@given('the model "{model}" costs {prompt} per 1k prompt tokens and {completion} per 1k completion tokens')
def model_with_price(context, model, prompt, completion):
    context.state.routing.declare(model, (micros(prompt), micros(completion)), ["primary"])


@given('the model "{model}" is served by a primary and a fallback backend')
def model_with_fallback(context, model):
    context.state.routing.declare(model, (micros("1.00 USD"), micros("2.00 USD")), ["primary", "fallback"])


@given('"{org}" calls models with the API key "{key}"')
def org_calls_models_with_key(context, org, key):
    context.state.routing.issue_key(org, key)


@given('"{org}" may use only the model "{model}"')
def org_allowlist(context, org, model):
    context.state.routing.allow_only(org, [model])


@given("the {backend:Backend} backend fails with {status:d}")
def backend_fails(context, backend, status):
    context.state.routing.behave(backend, "error", status=status)


@given("the {backend:Backend} backend fails with a server error")
def backend_fails_with_server_error(context, backend):
    context.state.routing.behave(backend, "error", status=503)


@given("the {backend:Backend} backend does not answer in time")
def backend_too_slow(context, backend):
    routing = context.state.routing
    routing.give_short_timeout(backend)
    routing.behave(backend, "hang")


@given("the {backend:Backend} backend drops the connection")
def backend_drops(context, backend):
    context.state.routing.behave(backend, "drop")


@given("the {backend:Backend} backend is stopped")
def backend_stopped(context, backend):
    context.state.routing.stop(backend)


@given("the {backend:Backend} backend refuses the request as too long")
def backend_refuses(context, backend):
    state = context.state
    state.world.chat.refusal = REFUSAL
    state.routing.behave(backend, "error", status=400, body=REFUSAL)


@given("the {backend:Backend} backend reports {prompt:d} prompt and {completion:d} completion tokens "
       "for each completion")
def backend_reports_usage(context, backend, prompt, completion):
    context.state.routing.behave(backend, "ok", usage={"prompt_tokens": prompt, "completion_tokens": completion})


# ---- requests ----------------------------------------------------------------------------------------------------

@when('the key "{key}" asks "{model}" for a chat completion')
def key_asks_model(context, key, model):
    state = context.state
    state.world.last.answer = state.routing.ask(key, model)


@when('the key "{key}" sends a chat request {flaw}')
def key_sends_flawed(context, key, flaw):
    state = context.state
    state.world.last.about = flaw
    state.world.last.answer = state.routing.send_flawed(key, flaw)


# ---- outcomes ----------------------------------------------------------------------------------------------------

@then("the completion is answered by the model's {backend} backend")
def answered_by(context, backend):
    answer = context.state.world.answer()
    expect_status(answer, 200, "the chat completion")
    expect_equal(answer.response_headers.get("X-Gateway-Backend"), backend, "the backend named in X-Gateway-Backend",
                 answer)
    usage = answer.json().get("usage")
    expect_true(isinstance(usage, dict), f"Expected the completion to report its usage, but it had {usage!r}", answer)


@then('"{org}" has been charged exactly the completion\'s usage at the model\'s price')
def charged_exactly(context, org):
    state = context.state
    usage = state.world.answer().json()["usage"]
    prompt_price, completion_price = state.routing.current().prices
    exchange = state.platform.usage(org)
    expect_equal(exchange.json()["spent_micros"], state.routing.cost(usage), f"the spend of {org!r} (usage {usage} "
                 f"at {prompt_price}/{completion_price} micro-USD per 1k tokens)", exchange)


@then("the {backend:Backend} backend was tried first")
def tried_first(context, backend):
    state = context.state
    state.routing.expect_tried_before_answer(backend, state.world.answer())


@then("the {backend:Backend} backend received no request for it")
@then("the model's {backend:Backend} backend received no request for it")
def received_no_request(context, backend):
    state = context.state
    state.routing.expect_no_new_calls(backend, state.world.answer())


@then("the model's {backend:Backend} backend received the request with the caller's trace id")
def backend_got_trace(context, backend):
    state = context.state
    state.routing.expect_trace_forwarded(backend, state.world.answer())


@then("the caller receives the primary backend's refusal unchanged")
def refusal_unchanged(context):
    world = context.state.world
    answer = world.answer()
    expect_status(answer, 400, "a chat completion the primary backend refused")
    expect_equal(answer.json(), world.chat.refusal, "the refusal's body, as the backend sent it", answer)
    expect_equal(answer.response_headers.get("X-Gateway-Backend"), "primary", "the backend named in X-Gateway-Backend",
                 answer)


@then("the request fails as no backend could answer, naming each backend that failed")
def bad_gateway(context):
    state = context.state
    answer = state.world.answer()
    expect_status(answer, 502, "a chat completion whose every backend is down")
    message = problem_field(answer, "message") or ""
    for name in state.routing.current().backends:
        expect_true(name in message, f"Expected the 502 message to name the backend {name!r}, but it said: "
                    f"{message!r}", answer)


@then("the request is refused as an unknown model")
def unknown_model(context):
    expect_refusal(context.state.world.answer(), 404, "model_not_found", "an unknown model")


@then('the key "{key}" lists only the models "{org}" may use, "{model}" not among them')
def lists_only_allowed(context, key, org, model):
    context.state.routing.expect_listed_only_allowed(key, org, model)


@then('the request is refused as {refusal}, its message about "{subject}"')
def refused_with_message(context, refusal, subject):
    statuses = {"invalid": 400, "too large": 413}
    expect_true(refusal in statuses, f"The refusal {refusal!r} is none of {sorted(statuses)}")
    world = context.state.world
    expect_refusal(world.answer(), statuses[refusal], None, f"a chat request {world.last.about} (refused as "
                   f"{refusal})", mentions=subject)
