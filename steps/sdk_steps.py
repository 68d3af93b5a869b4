"""An application built on the official OpenAI SDK: its calls, what it receives, and the SDK's own retries."""
from behave import given, then, when


@given('an application uses the OpenAI SDK with the API key "{key}"')
def app_with_key(context, key):
    context.state.applications.use_sdk(key)


@given("an application uses the OpenAI SDK with an API key that does not exist")
def app_with_unknown_key(context):
    context.state.applications.use_sdk(None)


@when("the application lists the models")
def app_lists_models(context):
    context.state.applications.list_models()


@when('the application asks "{model}" for a chat completion')
def app_asks(context, model):
    context.state.applications.complete(model)


@when('the application asks "{model}" for a chat completion, letting the SDK retry')
def app_asks_retrying(context, model):
    context.state.applications.complete(model, max_retries=2)


@when('the application streams a chat completion from "{model}", asking for its usage')
def app_streams(context, model):
    context.state.applications.stream(model)


@when('the application asks "{model}" for a chat completion with an idempotency key, giving up on each try sooner '
      'than the backend answers')
def app_gives_up_early(context, model):
    state = context.state
    # The backend holds the first try until the SDK has given up on it, then answers: the retry finds it done.
    state.applications.sdk.when_an_attempt_gets_no_answer(state.retries.release_held)
    state.applications.complete_giving_up_early(model)


@then('"{model}" is among the models the application sees')
def model_seen(context, model):
    context.state.applications.expect_model_listed(model)


@then("the application receives the model's answer with its usage")
def app_receives_answer(context):
    context.state.applications.expect_answer_with_usage()


@then("the application receives the answer in pieces that say what the whole answer says")
def app_receives_pieces(context):
    context.state.applications.expect_pieces_say_whole()


@then("the application receives the usage at the end of the stream")
def app_receives_usage(context):
    context.state.applications.expect_usage_at_end()


@then("the application receives the SDK's authentication error")
def app_auth_error(context):
    context.state.applications.expect_error("authentication", mentions=["API key"])


@then("the application receives the SDK's not-found error")
def app_not_found(context):
    context.state.applications.expect_not_found()


@then('the application receives the SDK\'s status error for payment required, naming "{org}" and its limit')
def app_payment_required(context, org):
    context.state.applications.expect_budget_error(org)


@then("the SDK waited as long as the gateway asked before retrying, and that retry was served")
def sdk_waited(context):
    context.state.applications.expect_waited_for_retry_after()


@then("the SDK tried more than once")
def sdk_tried_again(context):
    context.state.applications.expect_tried_more_than_once()
