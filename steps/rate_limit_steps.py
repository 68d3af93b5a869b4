"""Rate limits per API key."""
from behave import given, then


@given('"{org}" allows each key {count:d} requests every {seconds:d} seconds')
def org_rate_limit(context, org, count, seconds):
    context.state.rate_limits.limit(org, count, seconds)


@given('"{org}" allows each key {count:d} requests every second')
def org_rate_limit_per_second(context, org, count):
    context.state.rate_limits.limit(org, count, 1)


@given('the key "{key}" has used its {count:d} requests of the window on "{model}"')
def used_window(context, key, count, model):
    context.state.rate_limits.use_up(key, model, count)


@then("the request is refused as rate limited, with a time to retry after")
def rate_limited(context):
    state = context.state
    state.rate_limits.expect_rate_limited(state.world.answer())


@then("the request is refused as rate limited, told to retry once its window has passed")
def rate_limited_for_the_window(context):
    state = context.state
    state.rate_limits.expect_retry_when_window_passes(state.world.answer())


@then('the key "{key}" is refused again late in its window')
def refused_late(context, key):
    context.state.rate_limits.expect_refused_late_in_window(key)


@then('once that time has passed, the key "{key}" is served again')
def served_again(context, key):
    state = context.state
    state.world.last.answer = state.rate_limits.expect_served_again(key, state.world.answer())
