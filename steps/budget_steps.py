"""Budgets: what a chat request is charged, and an org's budget limit holding under a burst."""
from behave import given, then, when

from support.domain import budgets
from support.database import spend
from support.harness.assertions import expect_equal
from support.harness.money import micros


@given('the key "{key}" has spent the whole budget of "{org}" on "{model}"')
def spent_whole_budget(context, key, org, model):
    budgets.spend_whole_budget(context, key, org, model)


@given('the budget of "{org}" affords {count:d} chat completions on "{model}"')
def budget_affords(context, org, count, model):
    budgets.afford(context, org, model, count)


@when('the key "{key}" sends {count:d} chat completions to "{model}" at once')
def fire_burst(context, key, count, model):
    budgets.fire(context, key, model, count)


@then('the request is refused as over budget, naming "{org}", its limit and its spend')
def refused_over_budget(context, org):
    budgets.expect_over_budget(context, org)


@then('the denial is recorded in the audit log of "{org}" with its request id')
def denial_audited(context, org):
    budgets.expect_denial_audited(context, org)


@then('"{org}" was charged once, exactly the completion\'s usage at the model\'s price')
def charged_once(context, org):
    budgets.expect_charged_once(context, org)


@then('"{org}" has been charged {amount}, its ledger agreeing with its usage')
def charged_amount(context, org, amount):
    budgets.expect_charged_once(context, org)
    books = spend.books(context.db, context.world.org(org).account_id)
    expect_equal(books.spent, micros(amount), f"what {org!r} has spent", context.response)
    budgets.expect_books_agree(context, org)


@then('"{org}" has spent nothing and holds nothing')
def nothing_spent(context, org):
    budgets.expect_nothing_spent(context, org)


@then('the hold placed for the request on "{org}" was released')
def hold_released(context, org):
    budgets.expect_hold_released(context, org)


@then('"{org}" has not spent past its budget, by its account in the database')
def within_budget(context, org):
    budgets.expect_within_budget_after_burst(context, org)


@then("every request of the burst that was not answered was refused as over budget")
def refusals_over_budget(context):
    budgets.expect_refusals_over_budget(context)
