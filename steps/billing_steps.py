"""Billing: credit accounts, reservations, the ledger, identity anchors and the service and admin tokens."""
from behave import given, then, when

from support.client.assertions import expect_equal, expect_status, expect_true
from support.harness import step_types  # noqa: F401  (registers {status:Settled}, {status:Expired}, ...)
from support.harness.money import micros


# ---- accounts and what is on them (seeded in the database) ----------------------------------------------------

@given("an account with {amount} in one credit lot")
def account_with_one_lot(context, amount):
    context.state.billing.seed_account([micros(amount)])


@given("an account with {lots:d} credit lots of {amount} each")
def account_with_lots(context, lots, amount):
    context.state.billing.seed_account([micros(amount)] * lots)


@given("a pending reservation of {amount} on it")
def pending_reservation(context, amount):
    state = context.state
    state.billing.seed_reservation(state.world.account(), micros(amount))


@given("a pending reservation of {amount} on it that expires in {seconds:g} seconds")
def pending_reservation_with_ttl(context, amount, seconds):
    state = context.state
    state.billing.seed_reservation(state.world.account(), micros(amount), ttl_seconds=seconds)


@given('the account is anchored to identity "{identity}"')
def anchored(context, identity):
    state = context.state
    state.billing.anchor(state.world.account(), identity)


@when("someone adds {amount} to the account's available credit directly in the database")
def tamper(context, amount):
    state = context.state
    state.billing.tamper(state.world.account(), micros(amount))


# ---- what the service has already done (a Given: each checks that it took effect) ---------------------------------

def _account(state, org: str | None = None):
    """The account seeded for the scenario, or the account the gateway opened with the org."""
    return state.billing.org_account(state.world.org(org)) if org else state.world.account()


@given("the service has reserved {amount} on the account")
@given('the service has reserved {amount} on the account of "{org}"')
@given('the service has reserved {amount} on the account with the idempotency key "{key}"')
def service_has_reserved(context, amount, key=None, org=None):
    state = context.state
    state.billing.expect_reservation_status(state.billing.reserve(_account(state, org), micros(amount), key=key),
                                            "pending")


@given("the service has finalized the reservation at {amount}")
@given('the service has finalized the reservation at {amount} with the idempotency key "{key}"')
def service_has_finalized(context, amount, key=None):
    state = context.state
    state.billing.expect_reservation_status(state.billing.finalize(state.world.reservation(), micros(amount), key=key),
                                            "finalized")


@given("the service has released the reservation")
def service_has_released(context):
    state = context.state
    state.billing.expect_reservation_status(state.billing.release(state.world.reservation()), "released")


@given("the reservation's time has run out")
def time_has_run_out(context):
    state = context.state
    state.billing.expect_reservation_status(state.billing.wait_for_expiry(state.world.reservation()), "expired")


@given('a platform admin has minted {amount} for the account with the idempotency key "{key}"')
def admin_has_minted(context, amount, key):
    state = context.state
    expect_status(state.billing.mint(state.world.account(), micros(amount), key=key), 201,
                  f"a platform admin minting {amount} for the account")


# ---- the service (S2S token) ------------------------------------------------------------------------------------

@when("the service reserves {amount} on the account")
@when('the service reserves {amount} on the account again with the idempotency key "{key}"')
def service_reserves(context, amount, key=None):
    state = context.state
    state.world.last.answer = state.billing.reserve(state.world.account(), micros(amount), key=key)


@when('the service reserves {amount} on the account on behalf of identity "{identity}"')
def service_reserves_for_identity(context, amount, identity):
    state = context.state
    state.world.last.answer = state.billing.reserve(state.world.account(), micros(amount), anchor=identity)


@when('the service reads the account\'s balances on behalf of identity "{identity}"')
@when("the service reads the account's balances without naming an identity")
def service_reads_for_identity(context, identity=None):
    state = context.state
    state.world.last.answer = state.billing.read_account(state.world.account(), anchor=identity)


# (behave registers the bottom decorator first and takes the first definition that matches: longer sentences last)
@when("the service finalizes the reservation at {amount}")
@when("the service finalizes the reservation again at {amount}")
@when('the service finalizes the reservation again at {amount} with the idempotency key "{key}"')
def service_finalizes(context, amount, key=None):
    state = context.state
    state.world.last.answer = state.billing.finalize(state.world.reservation(), micros(amount), key=key)


@when("the service releases the reservation")
def service_releases(context):
    state = context.state
    state.world.last.answer = state.billing.release(state.world.reservation())


@when("the service finalizes a reservation that does not exist")
def service_finalizes_unknown(context):
    state = context.state
    state.world.last.answer = state.billing.finalize_unknown(micros("1.00 USD"))


@when("the reservation's time runs out")
def time_runs_out(context):
    state = context.state
    state.world.last.answer = state.billing.wait_for_expiry(state.world.reservation())


@when("the service fires {count:d} reservations of {amount} at the account at once")
def fires_reservations(context, count, amount):
    state = context.state
    account = state.world.account()
    batch = [state.billing.reservation_request(account, micros(amount)) for _ in range(count)]
    state.world.burst = state.at_once(batch, title=f"{count} reservations", watch=state.billing.balance_sampler(account))


@when('the service sends the same reservation of {amount} with the idempotency key "{key}" {count:d} times at once')
def fires_same_key(context, amount, key, count):
    state = context.state
    account = state.world.account()
    batch = [state.billing.reservation_request(account, micros(amount), key=key) for _ in range(count)]
    state.world.burst = state.at_once(batch, title=f"{count} identical reservations with one idempotency key",
                                      watch=state.billing.balance_sampler(account))


# ---- the platform admin (admin token) ---------------------------------------------------------------------------

@when("a platform admin mints {amount} for the account")
@when('a platform admin mints {amount} for the account again with the idempotency key "{key}"')
def admin_mints(context, amount, key=None):
    state = context.state
    state.world.last.answer = state.billing.mint(state.world.account(), micros(amount), key=key)


# ---- callers presenting some credential -------------------------------------------------------------------------

@when("a caller presenting {credential} reserves {amount} on the account")
def caller_reserves(context, credential, amount):
    state = context.state
    state.world.last.answer = state.billing.reserve(state.world.account(), micros(amount), credential=credential)


@when("a caller presenting {credential} mints {amount} for the account")
def caller_mints(context, credential, amount):
    state = context.state
    state.world.last.answer = state.billing.mint(state.world.account(), micros(amount), credential=credential)


# ---- outcomes ---------------------------------------------------------------------------------------------------

@then("the account has {available} available, {held} held and {spent} spent of {minted} minted")
@then('the account of "{org}" has {available} available, {held} held and {spent} spent of {minted} minted')
def account_balances(context, available, held, spent, minted, org=None):
    state = context.state
    state.billing.expect_balances(_account(state, org), {
        "minted_micros": micros(minted), "available_micros": micros(available), "held_micros": micros(held),
        "spent_micros": micros(spent)})


@then("the reservation is {status:Settled}")
@then("the reservation has {status:Expired}")
def reservation_status(context, status):
    context.state.billing.expect_reservation_status(context.state.world.answer(), status)


@then("the request is refused because {reason}")
def refused(context, reason):
    state = context.state
    state.billing.expect_refused(state.world.answer(), reason)


@then("nothing was posted to the account's ledger")
def nothing_posted(context):
    state = context.state
    before = state.world.last.ledger_entries
    after = state.billing.ledger_entries(state.world.account())
    expect_equal(after, before, "the number of ledger entries on the account after the refused request "
                 f"(it had {before} before)", state.world.answer())


@then("the service is shown the account's balances")
def shown_balances(context):
    state = context.state
    answer = state.world.answer()
    expect_status(answer, 200, "reading the anchored account's balances")
    row = state.billing.account_row(state.world.account())
    fields = ("minted_micros", "available_micros", "held_micros", "spent_micros")
    expect_equal({f: answer.json().get(f) for f in fields}, {f: row[f] for f in fields},
                 "the balances shown (against the account's row in the database)", answer)


@then("the mint adds a credit lot of exactly {amount}")
def mint_adds_lot(context, amount):
    state = context.state
    answer = state.world.answer()
    expect_status(answer, 201, "the mint")
    lot_id = answer.json().get("lot_id")
    expect_true(bool(lot_id), "Expected the mint to answer with the new credit lot's lot_id", answer)
    expect_equal(state.billing.lot_amount(lot_id), micros(amount), f"the amount of credit lot {lot_id} in the "
                 f"database", answer)


@then("the repeated request is answered exactly like the first")
def answered_like_first(context):
    first, again = context.state.api.exchanges[-2:]
    expect_true(first.status is not None and 200 <= first.status < 300,
                f"Expected the first request to succeed, but it answered {first.status}", first)
    expect_equal((again.status, again.json()), (first.status, first.json()),
                 f"the repeated request's answer (the first was request {first.request_id})", again)


@then("the ledger shows a single hold on the account")
def single_hold(context):
    state = context.state
    expect_equal(state.billing.holds(state.world.account()), {"reservations": 1, "reservation entries": 1},
                 "the reservations of the account and the ledger entries about them, in the database",
                 state.world.last.answer)


@then("the ledger shows the reservation held once and settled once")
def held_and_settled_once(context):
    state = context.state
    state.billing.expect_held_and_settled_once(state.world.reservation(), state.world.last.answer)


@then("the reconciliation shows the books balanced, including the account")
def books_balanced(context):
    context.state.billing.expect_books_balanced()


@then("the reconciliation reports the account out of balance by {amount}")
def out_of_balance(context, amount):
    state = context.state
    state.billing.expect_discrepancy(state.world.account(), micros(amount))


@then("the refusal is in the audit log under the request id the suite sent")
def refusal_audited(context):
    state = context.state
    state.billing.expect_refusal_audited(state.world.answer())


@then("exactly {accepted:d} reservations are accepted and the other {refused_count:d} are refused for lack of credit")
def burst_outcome(context, accepted, refused_count):
    context.state.billing.expect_burst_fits_credit(context.state.world.burst, accepted, refused_count)


@then("the account's held credit never exceeded its funds during the burst")
def never_overheld(context):
    context.state.billing.expect_never_overheld(context.state.world.burst)


@then("every answer carries that one reservation or asks to retry while the key is in use")
def same_key_answers(context):
    context.state.billing.expect_one_reservation_or_retry(context.state.world.burst)
