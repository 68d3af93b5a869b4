"""Orgs and the people in them."""
from behave import given, then, when

from support.client.assertions import expect_true
from support.harness.money import micros


@given('the org "{org}" with its owner "{owner}"')
def org_with_owner(context, org, owner):
    context.state.platform.org_with_owner(org, owner)


@given('the org "{org}" with its owner "{owner}" and {amount} of credit')
def org_with_credit(context, org, owner, amount):
    platform = context.state.platform
    platform.org_with_owner(org, owner)
    platform.mint(org, micros(amount))


@given('a platform admin has opened the org "{org}" for its owner "{owner}"')
def admin_opens_org(context, org, owner):
    context.state.platform.create_org(org, owner)


@when('the platform grants "{org}" {amount} of credit')
@given('the platform has granted "{org}" {amount} of credit')
def platform_grants_credit(context, org, amount):
    context.state.platform.mint(org, micros(amount))


@given("{person} has accepted her invitation and logged in")
def accepts_and_logs_in(context, person):
    platform = context.state.platform
    platform.accept_invitation(person)
    platform.login(person)


@when("{person} logs in")
def logs_in(context, person):
    context.state.platform.login(person)


@then('{person} is listed as a member of "{org}"')
def listed_as_member(context, person, org):
    state = context.state
    members, exchange = state.identity.members_answer(org)
    expected = state.world.person(person).email
    expect_true(expected in members, f"Expected {person} ({expected}) among the members of {org!r}, but the members "
                f"were {sorted(members)}", exchange)
