"""Budgets: what a chat request is charged, and an org's budget limit holding under a burst."""
from behave import given, then, when

from support.harness.money import micros


@given('the key "{key}" has spent the whole budget of "{org}" on "{model}"')
def spent_whole_budget(context, key, org, model):
    context.state.budgets.spend_whole_budget(key, org, model)


@given('the budget of "{org}" affords {count:d} chat completions on "{model}"')
def budget_affords(context, org, count, model):
    context.state.budgets.afford(org, model, count)


@when('the key "{key}" sends {count:d} chat completions to "{model}" at once')
def fire_burst(context, key, count, model):
    state = context.state
    request = state.budgets.chat_request(key, model)
    state.world.burst = state.at_once([request] * count, title=f"{count} chat completions to {model!r}")


@then('the request is refused as over budget, naming "{org}", its limit and its spend')
def refused_over_budget(context, org):
    state = context.state
    state.budgets.expect_over_budget(org, state.world.answer())


@then('the denial is recorded in the audit log of "{org}" with its request id')
def denial_audited(context, org):
    state = context.state
    state.budgets.expect_denial_audited(org, state.world.answer())


@then('"{org}" was charged once, exactly the completion\'s usage at the model\'s price')
def charged_once(context, org):
    state = context.state
    charged = state.world.retries.charged_as(state.world.answer())  # a replayed answer is paid by its first request
    state.budgets.expect_charged_once(org, charged, state.costs.settled_usage(charged))


@then('"{org}" has been charged {amount}, its ledger agreeing with its usage')
def charged_amount(context, org, amount):
    state = context.state
    answer = state.world.answer()
    state.budgets.expect_charged_once(org, answer, state.costs.settled_usage(answer))
    state.budgets.expect_spent(org, micros(amount), answer)
    state.budgets.expect_books_agree(org)


@then('"{org}" has spent nothing and holds nothing')
def nothing_spent(context, org):
    context.state.budgets.expect_nothing_spent(org)


@then('the hold placed for the request on "{org}" was released')
def hold_released(context, org):
    state = context.state
    state.budgets.expect_hold_released(org, state.world.answer())


@then('"{org}" has not spent past its budget, by its account in the database')
def within_budget(context, org):
    state = context.state
    state.budgets.expect_within_budget_after_burst(org, state.world.burst.exchanges)


@then("the burst was answered as far as the budget affords, and no further")
def answered_as_afforded(context):
    state = context.state
    state.budgets.expect_burst_answered_as_afforded(state.world.first_org().name, state.world.burst.exchanges)


@then("every request of the burst that was not answered was refused as over budget")
def refusals_over_budget(context):
    state = context.state
    state.budgets.expect_refusals_over_budget(state.world.burst.exchanges)
