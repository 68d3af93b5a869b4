"""Money moved back and moves refused (issue 16): voids of a charge by a platform admin, releases and finalizes of
reservations that can no longer move, and the audit event of every move. Through support/domain/reversals.py."""
from behave import given, then, when

from support.client.assertions import expect_status
from support.harness.money import micros

REASON = "refund agreed with the customer by support"


def _void(context, amount, key, *, reason=REASON):
    state = context.state
    return state.reversals.void(state.world.reservation(), None if amount is None else micros(amount), reason, key)


# ---- voids ------------------------------------------------------------------------------------------------------

@given('a platform admin has voided {amount} of the charge with the idempotency key "{key}"')
@given('a platform admin has voided the whole charge with the idempotency key "{key}"')
def admin_has_voided(context, key, amount=None):
    expect_status(_void(context, amount, key), 200, f"a platform admin voiding {amount or 'the whole charge'}")


@when('a platform admin voids {amount} of the charge, with a reason and the idempotency key "{key}"')
@when('a platform admin voids the whole charge, with a reason and the idempotency key "{key}"')
def admin_voids(context, key, amount=None):
    context.state.world.last.answer = _void(context, amount, key)


@when("a platform admin voids the whole charge, with a reason but no idempotency key")
def admin_voids_without_key(context):
    context.state.world.last.answer = _void(context, None, None)


@then("the charge reads as voided in full, {amount} voided")
def voided_in_full(context, amount):
    state = context.state
    state.reversals.expect_voided(state.world.answer(), micros(amount), "voided")


@then("the charge still reads as finalized, {amount} voided")
def voided_in_part(context, amount):
    state = context.state
    state.reversals.expect_voided(state.world.answer(), micros(amount), "finalized")


@then("the void is refused because {reason}")
def void_refused(context, reason):
    state = context.state
    state.reversals.expect_void_refused(state.world.answer(), reason)


# ---- refused moves ----------------------------------------------------------------------------------------------

@given("its time to live has passed, nothing having read it")
def time_to_live_passed(context):
    state = context.state
    state.reversals.pass_time_to_live(state.world.reservation())


@then("the request is refused, naming the reservation's state: {status}")
def refused_naming_state(context, status):
    state = context.state
    state.reversals.expect_refused_naming_state(state.world.answer(), status)


@then("the reservation was never finalized")
def never_finalized(context):
    state = context.state
    state.reversals.expect_no_settlement(state.world.reservation(), state.world.answer())


# ---- the audit log ----------------------------------------------------------------------------------------------

@then("the reservation's {move} is in the audit log once")
def move_audited(context, move):
    state = context.state
    state.reversals.expect_audited(state.world.reservation(), [move])


@then("the reservation's {first} and {second} are each in the audit log once")
def moves_audited(context, first, second):
    state = context.state
    state.reversals.expect_audited(state.world.reservation(), [first, second])
