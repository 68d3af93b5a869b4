"""Chat completions retried with an Idempotency-Key: a replay of a finished request, a key reused for another
request (refused: billing_steps' "the request is refused because ..."), a retry while the first still runs, and
keys that belong to one org."""
from behave import given, then, when

from support.harness import step_types  # noqa: F401  (registers {backend:Backend})


@given("the {backend:Backend} backend answers only after a long pause")
def backend_pauses(context, backend):
    context.state.retries.pause(backend)


@given('the key "{key}" has asked "{model}" for a chat completion with the idempotency key "{words}"')
def asked_with_key(context, key, model, words):
    context.state.retries.ask_first(key, model, words)


@given('the key "{key}" has streamed a chat completion from "{model}" with the idempotency key "{words}"')
def streamed_with_key(context, key, model, words):
    context.state.retries.stream_first(key, model, words)


@given('the key "{key}" has started a chat completion from "{model}" with the idempotency key "{words}"')
def started_with_key(context, key, model, words):
    context.state.retries.start_first(key, model, words)


@when('the key "{key}" asks again with the idempotency key "{words}"')
def asks_again(context, key, words):
    state = context.state
    state.world.last.answer = state.retries.ask_again(key, words)


@when('the key "{key}" streams again with the idempotency key "{words}"')
def streams_again(context, key, words):
    state = context.state
    state.world.last.answer = state.retries.stream_again(key, words)


@when('the key "{key}" asks "{model}" something else with the idempotency key "{words}"')
def asks_other(context, key, model, words):
    state = context.state
    state.world.last.answer = state.retries.ask_other(key, model, words)


@when('the key "{key}" asks "{model}" for a chat completion with the idempotency key "{words}"')
def asks_with_key(context, key, model, words):
    state = context.state
    state.world.last.answer = state.retries.ask_with_key(key, model, words)


@then("the retry is answered exactly like the first")
def answered_like_first(context):
    state = context.state
    state.retries.expect_replayed(state.world.answer())


@then("the retried stream says what the first said")
def stream_like_first(context):
    state = context.state
    state.retries.expect_stream_replayed(state.world.answer())


@then("the model's {backend:Backend} backend received the request once")
def received_once(context, backend):
    state = context.state
    state.retries.expect_received_once(backend, state.world.answer())


@then("the retry is refused because the first request is still in progress")
def still_in_progress(context):
    state = context.state
    state.retries.expect_refused(state.world.answer(), 409, "idempotency_conflict",
                                 "a retry while the first request with its key is still running")


@then('"{org}" was charged once, exactly the completion\'s usage at the model\'s price, once the first is answered')
def charged_once_first_answered(context, org):
    state = context.state
    first = state.retries.first_answered()
    state.budgets.expect_charged_once(org, first, state.costs.settled_usage(first))
