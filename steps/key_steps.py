"""API keys."""
from behave import when

from support.assertions import expect_status


@when('{person} issues the API key "{key}" for "{org}"')
def issues_key(context, person, key, org):
    context.response = context.platform.issue_key(person, org, key)
    expect_status(context.response, 201, f"{person} issuing the API key {key!r}")
