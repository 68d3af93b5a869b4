"""Retiring an org: a platform admin deactivates it, and its keys and people are turned away."""
from behave import then, when

from support.client.assertions import expect_equal, expect_status, expect_true
from support.domain.identity import expect_unauthenticated
from support.harness import step_types  # noqa: F401  (registers {name:Name}, ...)


@when('a platform admin deactivates "{org}"')
def admin_deactivates(context, org):
    state = context.state
    state.world.last.answer = expect_status(state.retirement.deactivate(org), 200,
                                            f"a platform admin deactivating {org!r}")


@then("{name:Name} can no longer log in")
def can_no_longer_log_in(context, name):
    expect_unauthenticated(context.state.retirement.login(name), f"{name} logging in with the password they had")


@then('the org "{org}" is listed as inactive, its slug still taken')
def listed_as_inactive(context, org):
    listed, exchange = context.state.retirement.listing(org)
    expect_true(listed is not None, f"Expected {org!r} in the platform admin's list of orgs, but it is not there",
                exchange)
    expect_equal(listed["active"], False, f"whether {org!r} is active", exchange)
    expect_status(context.state.retirement.open_again(org), 409, f"a platform admin opening {org!r} again under "
                  f"its slug")
