"""Orgs and the people in them."""
from behave import given, then, when

from support.harness.assertions import expect_status, expect_true
from support.harness.money import micros


@given('the org "{org}" with its owner "{owner}"')
def org_with_owner(context, org, owner):
    context.platform.org_with_owner(org, owner)


@given('the org "{org}" with its owner "{owner}" and {amount} of credit')
def org_with_credit(context, org, owner, amount):
    context.platform.org_with_owner(org, owner)
    context.platform.mint(org, micros(amount))


@when('a platform admin opens the org "{org}" for its owner "{owner}"')
def admin_opens_org(context, org, owner):
    context.platform.create_org(org, owner)


@when('the platform grants "{org}" {amount} of credit')
def platform_grants_credit(context, org, amount):
    context.platform.mint(org, micros(amount))


@when("{person} accepts her invitation and logs in")
def accepts_and_logs_in(context, person):
    context.platform.accept_invitation(person)
    context.platform.login(person)


@when("{person} logs in")
def logs_in(context, person):
    context.platform.login(person)


@when('{inviter} invites "{invitee}" to "{org}" as a {role}')
def invites(context, inviter, invitee, org, role):
    context.response = context.platform.invite(inviter, org, invitee, role)
    expect_status(context.response, 201, f"{inviter} inviting {invitee} as {role}")


@then('{person} is listed as a member of "{org}"')
def listed_as_member(context, person, org):
    record = context.world.org(org)
    exchange = context.api.get(f"/orgs/{record.slug}/members",
                               token=context.platform.access_token(context.platform.owner_of(org)))
    expect_status(exchange, 200, f"listing the members of {org!r}")
    emails = {m["email"]: m["role"] for m in exchange.json()["members"]}
    expected = context.world.person(person).email
    expect_true(expected in emails, f"Expected {person} ({expected}) among the members of {org!r}, but the members "
                f"were {sorted(emails)}", exchange)
