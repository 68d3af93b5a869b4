"""Streamed chat completions: pieces as the backend writes them, the usage at the end, streams cut short by the
client or the backend, and what the org pays for them."""
from behave import given, then, when

from support.domain.streamed_chat import PIECES_BEFORE_LEAVING
from support.harness import step_types  # noqa: F401  (registers {backend:Backend})


# ---- backends ----------------------------------------------------------------------------------------------------

@given("the {backend:Backend} backend writes its answers slowly, a piece at a time")
def backend_writes_slowly(context, backend):
    context.state.streams.write_slowly(backend)


@given("the {backend:Backend} backend pauses after the first pieces of its answer until they have reached the caller")
def backend_pauses_mid_answer(context, backend):
    context.state.streams.pause_until_first_pieces_arrive(backend)


@given("the {backend:Backend} backend never reports usage when it streams")
def backend_never_reports_usage(context, backend):
    context.state.streams.never_report_usage(backend)


@given("the {backend:Backend} backend fails after writing the first pieces of each streamed answer")
def backend_fails_mid_stream(context, backend):
    context.state.streams.fail_mid_stream(backend)


# ---- requests ----------------------------------------------------------------------------------------------------

@when('the key "{key}" streams a chat completion from "{model}"')
def key_streams(context, key, model):
    state = context.state
    state.world.last.answer = state.streams.stream(key, model)


@when('the key "{key}" streams a chat completion from "{model}", asking for its usage')
def key_streams_with_usage(context, key, model):
    state = context.state
    state.world.last.answer = state.streams.stream(key, model, include_usage=True)


@when('the key "{key}" streams a long chat completion from "{model}"')
def key_streams_long(context, key, model):
    state = context.state
    state.world.last.answer = state.streams.stream(key, model, long=True)


@when('the key "{key}" streams a long chat completion from "{model}" and goes away after the first pieces')
def key_streams_and_leaves(context, key, model):
    state = context.state
    state.world.last.answer = state.streams.stream(key, model, long=True, leave_after=PIECES_BEFORE_LEAVING)


# ---- the stream --------------------------------------------------------------------------------------------------

@then("the answer arrives in several pieces, the first before the backend has finished writing")
def arrives_in_pieces(context):
    state = context.state
    state.streams.expect_in_pieces(state.world.answer())


@then('the pieces put together are the answer "{model}" gives in one piece')
def pieces_make_whole(context, model):
    state = context.state
    state.streams.expect_says_what_whole_says(state.world.answer())


@then("the stream ends the way OpenAI's clients expect")
def stream_ends_properly(context):
    state = context.state
    state.streams.expect_openai_ending(state.world.answer())


@then("the stream's last piece before its end reports the usage the backend reported")
def usage_at_end(context):
    state = context.state
    state.streams.expect_usage_at_end(state.world.answer())


@then("nothing was streamed")
def nothing_streamed(context):
    state = context.state
    state.streams.expect_nothing_streamed(state.world.answer())


@then("the streamed answer comes from the model's {backend:Backend} backend")
def streamed_from(context, backend):
    state = context.state
    state.streams.expect_from_backend(state.world.answer(), backend)


@then("the stream ends with an error in OpenAI's shape after the pieces already received")
def ends_with_error(context):
    state = context.state
    state.streams.expect_error_after_pieces(state.world.answer())


@then("the {backend:Backend} backend stopped writing once the client had gone")
def backend_stopped(context, backend):
    state = context.state
    state.streams.expect_backend_stopped(backend, state.world.answer())


# ---- what the org paid -------------------------------------------------------------------------------------------

@then('"{org}" was charged no less than the streamed text\'s usage at the model\'s price')
def charged_no_less(context, org):
    state = context.state
    state.streams.expect_charged_no_less_than_generated(org, state.world.answer())


@then('"{org}" was charged once, for what the backend had generated and not for the rest of the answer')
def charged_generated(context, org):
    state = context.state
    state.streams.expect_charged_for_generated_only(org, state.world.answer())


@then('"{org}" holds nothing')
def holds_nothing(context, org):
    state = context.state
    state.streams.expect_holds_nothing(org, state.world.answer())


@then('the streamed request is recorded once in the audit log of "{org}" with its usage')
def audited_with_usage(context, org):
    state = context.state
    state.streams.expect_audited_once(org, state.world.answer(), "allowed")


@then('the streamed request is recorded once in the audit log of "{org}" as failed mid-stream')
def audited_failed(context, org):
    state = context.state
    state.streams.expect_audited_once(org, state.world.answer(), "failed")
