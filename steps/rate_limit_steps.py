"""Rate limits per API key."""
from behave import given, then


@given('"{org}" allows each key {count:d} requests every {seconds:d} seconds')
def org_rate_limit(context, org, count, seconds):
    context.state.rate_limits.limit(org, count, seconds)


@given('the key "{key}" has used its {count:d} requests of the window on "{model}"')
def used_window(context, key, count, model):
    context.state.rate_limits.use_up(key, model, count)


@then("the request is refused as rate limited, with a time to retry after")
def rate_limited(context):
    state = context.state
    state.world.rate_limit.retry_after = state.rate_limits.expect_rate_limited(state.world.answer())


@then('once that time has passed, the key "{key}" is served again')
def served_again(context, key):
    state = context.state
    state.world.last.answer = state.rate_limits.expect_served_again(key, state.world.rate_limit.retry_after,
                                                                    state.world.answer())
