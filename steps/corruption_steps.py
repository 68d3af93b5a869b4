"""The books corrupted on purpose, one kind per account, and what the reconciliation finds (issue 16). Through
support/domain/books_corruption.py."""
from behave import then, when

from support.harness.money import micros


def _signed(amount: str) -> int:
    return -micros(amount[1:]) if amount.startswith("-") else micros(amount)


@when("someone moves {amount} of the account's available credit to its spent balance directly in the database")
def move_between_buckets(context, amount):
    state = context.state
    state.corruption.move_between_buckets(state.world.account(), micros(amount))


@when("someone writes two ledger entries on the account that do not balance, {amount} each way")
def unbalanced_entries(context, amount):
    state = context.state
    state.corruption.unbalanced_entries(state.world.account(), micros(amount))


@when("someone raises the reservation's amount by {amount} directly in the database")
def raise_reservation(context, amount):
    state = context.state
    state.corruption.raise_reservation(state.world.account(), micros(amount))


@when("someone raises the account's credit lot by {amount} directly in the database")
def raise_lot(context, amount):
    state = context.state
    state.corruption.raise_lot(state.world.account(), micros(amount))


@then("the reconciliation finds the account's {check}, off by {amount}")
def finds(context, check, amount):
    state = context.state
    state.corruption.expect_found(state.world.account(), check, _signed(amount))


@then("the reconciliation finds two of the account's ledger entries out of balance by {amount} each way")
def finds_unbalanced_entries(context, amount):
    state = context.state
    state.corruption.expect_unbalanced_entries(state.world.account(), micros(amount))
