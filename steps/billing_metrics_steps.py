"""The gateway's billing in its metrics, read twice (issue 16): each metric moves by exactly what happened. Through
support/domain/billing_metrics.py."""
from behave import given, then, when

from support.client.assertions import expect_status
from support.harness.money import micros


@given("no hold of earlier work is about to expire")
def quiet(context):
    context.state.billing_metrics.await_quiet()


@given("an operator has read the gateway's billing metrics")
def first_reading(context):
    context.state.billing_metrics.first_reading()


@when("the operator reads the gateway's billing metrics again")
def second_reading(context):
    state = context.state
    _, state.world.metrics.answer = state.billing_metrics.read()


@given("the service has reserved {amount} on the account for {seconds:g} seconds")
def reserved_briefly(context, amount, seconds):
    state = context.state
    expect_status(state.billing.reserve(state.world.account(), micros(amount), ttl_seconds=seconds), 201,
                  f"the service reserving {amount} for {seconds:g} seconds")


@then("the billing metrics have moved by exactly:")
def moved_by_exactly(context):
    context.state.billing_metrics.expect_moved({row["metric"].strip(): int(row["change"]) for row in context.table})
