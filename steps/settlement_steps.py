"""What an answered completion owes, through faults between the answer and the books (issue 16): the database away,
the gateway dying before the commit, a charge the database keeps refusing (dead letters, replayed by an admin).

The completion and its charge: support/domain/owed_charges.py; the faults: support/stress/settlement_faults.py.
"""
from behave import given, step, then, when

from support.client.assertions import expect_status, expect_true
from support.stress.faults import FaultUnavailable


def _unless_unavailable(context, inject) -> None:
    try:
        inject()
    except FaultUnavailable as reason:
        context.scenario.skip(str(reason))


# ---- faults after the backend answered --------------------------------------------------------------------------

@given('a chat completion with the key "{key}" was answered while the database was away')
def answered_while_database_away(context, key):
    _unless_unavailable(context, lambda: context.state.settlement_faults.answered_while_database_away(key))


@given('a chat completion with the key "{key}" was cut off by the gateway dying after its backend answered')
def cut_off_after_answer(context, key):
    _unless_unavailable(context, lambda: context.state.settlement_faults.cut_off_after_answer(key))


@given("the completion's hold ran out of time while the gateway was down")
def hold_ran_out(context):
    context.state.owed.run_out_hold()


@when("the gateway is started again")
def gateway_started_again(context):
    context.state.settlement_faults.start_gateway_again()


# ---- a charge the database refuses ------------------------------------------------------------------------------

@given('the database refuses every change to what "{org}" has spent')
def spend_locked(context, org):
    context.state.owed.lock_account(org)


@when('a chat completion with the key "{key}" is answered')
def answered(context, key):
    owed = context.state.owed
    owed.start(key)
    context.state.world.last.answer = owed.finish(expect_answer=True)


@given('a chat completion with the key "{key}" whose charge became a dead letter')
def charge_became_dead_letter(context, key):
    owed = context.state.owed
    owed.lock_account(context.state.world.key(key).org)
    owed.start(key)
    owed.finish(expect_answer=True)
    owed.await_dead_letter()


@given('the database accepts changes to what "{org}" has spent again')
def spend_unlocked(context, org):
    context.state.owed.unlock_account()


@when("a platform admin replays the dead letter")
@when("a platform admin replays the dead letter again")
def admin_replays(context):
    state = context.state
    state.world.last.answer = state.owed.replay()


@given("a platform admin has replayed the dead letter")
def admin_has_replayed(context):
    state = context.state
    state.owed.expect_replayed(state.owed.replay())


# ---- outcomes ---------------------------------------------------------------------------------------------------

@then('"{org}" is charged exactly once for that completion, at its usage')
def charged_once(context, org):
    context.state.owed.expect_charged_once()


@then('"{org}" is charged exactly once for that completion, at its usage, as a late charge')
def charged_once_late(context, org):
    context.state.owed.expect_charged_once("late_charge")


@then("the client got the model's answer")
def client_answered(context):
    answer = context.state.world.answer()
    expect_status(answer, 200, "the chat completion")
    expect_true(isinstance(answer.json().get("usage"), dict), "Expected the answer to carry the model's usage",
                answer)


@then("its charge becomes a dead letter that a platform admin sees, naming the request and what it owes")
def becomes_dead_letter(context):
    owed = context.state.owed
    owed.await_dead_letter()
    owed.expect_dead_letter_names_the_charge()


@then("nothing has been charged for that completion yet")
def not_charged_yet(context):
    context.state.owed.expect_not_charged()


@then("the dead letter is marked as replayed")
def marked_replayed(context):
    context.state.owed.expect_replayed(context.state.world.answer())


@then("the replay is refused, the dead letter having been replayed already")
def replay_refused(context):
    context.state.owed.expect_replay_refused(context.state.world.answer())


@step("the replay is in the platform's audit log")
def replay_audited(context):
    context.state.owed.expect_replay_audited()
