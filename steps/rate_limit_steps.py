"""Rate limits per API key."""
from behave import given, then

from support.domain import rate_limits


@given('"{org}" allows each key {count:d} requests every {seconds:d} seconds')
def org_rate_limit(context, org, count, seconds):
    rate_limits.limit(context, org, count, seconds)


@given('the key "{key}" has used its {count:d} requests of the window on "{model}"')
def used_window(context, key, count, model):
    rate_limits.use_up(context, key, model, count)


@then("the request is refused as rate limited, with a time to retry after")
def rate_limited(context):
    rate_limits.expect_rate_limited(context)


@then('once that time has passed, the key "{key}" is served again')
def served_again(context, key):
    rate_limits.expect_served_again(context, key)
