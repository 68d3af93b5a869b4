"""Billing: credit accounts, reservations, the ledger, identity anchors and the service and admin tokens."""
from behave import given, then, when

from support.harness.assertions import expect_equal, expect_status, expect_true
from support.domain.billing import Billing
from support.harness.money import micros


def billing(context) -> Billing:
    """The scenario's billing world, made on first use (it lives on the scenario's layer of the context)."""
    if "billing" not in context:
        context.billing = Billing(context.db, context.api, context.keys, context.ns, context.add_cleanup,
                                  context.config_suite.poll_timeout)
    return context.billing


# ---- accounts and what is on them (seeded in the database) ----------------------------------------------------

@given("an account with {amount} in one credit lot")
def account_with_one_lot(context, amount):
    billing(context).seed_account([micros(amount)])


@given("an account with {lots:d} credit lots of {amount} each")
def account_with_lots(context, lots, amount):
    billing(context).seed_account([micros(amount)] * lots)


@given("a pending reservation of {amount} on it")
def pending_reservation(context, amount):
    b = billing(context)
    b.seed_reservation(b.account(), micros(amount))


@given("a pending reservation of {amount} on it that expires in {seconds:g} seconds")
def pending_reservation_with_ttl(context, amount, seconds):
    b = billing(context)
    b.seed_reservation(b.account(), micros(amount), ttl_seconds=seconds)


@given('the account is anchored to identity "{identity}"')
def anchored(context, identity):
    b = billing(context)
    b.anchor(b.account(), identity)


@when("someone adds {amount} to the account's available credit directly in the database")
def tamper(context, amount):
    b = billing(context)
    b.tamper(b.account(), micros(amount))


# ---- the service (S2S token) ------------------------------------------------------------------------------------

@when("the service reserves {amount} on the account")
def service_reserves(context, amount):
    b = billing(context)
    b.reserve(b.account(), micros(amount))


@when('the service reserves {amount} on the account with the idempotency key "{key}"')
@when('the service reserves {amount} on the account again with the idempotency key "{key}"')
def service_reserves_with_key(context, amount, key):
    b = billing(context)
    b.reserve(b.account(), micros(amount), key=key)


@when('the service reserves {amount} on the account on behalf of identity "{identity}"')
def service_reserves_for_identity(context, amount, identity):
    b = billing(context)
    b.reserve(b.account(), micros(amount), anchor=identity)


@when('the service reads the account\'s balances on behalf of identity "{identity}"')
def service_reads_for_identity(context, identity):
    b = billing(context)
    b.last = b.read_account(b.account(), anchor=identity)


@when("the service reads the account's balances without naming an identity")
def service_reads_without_identity(context):
    b = billing(context)
    b.last = b.read_account(b.account(), anchor=None)


@when('the service finalizes the reservation at {amount} with the idempotency key "{key}"')
@when('the service finalizes the reservation again at {amount} with the idempotency key "{key}"')
def service_finalizes_with_key(context, amount, key):
    b = billing(context)
    b.finalize(b.reservation(), micros(amount), key=key)


@when("the service finalizes the reservation at {amount}")
@when("the service finalizes the reservation again at {amount}")
def service_finalizes(context, amount):
    b = billing(context)
    b.finalize(b.reservation(), micros(amount))


@when("the service releases the reservation")
def service_releases(context):
    b = billing(context)
    b.release(b.reservation())


@when("the service finalizes a reservation that does not exist")
def service_finalizes_unknown(context):
    billing(context).finalize_unknown(micros("1.00 USD"))


@when("the reservation's time runs out")
def time_runs_out(context):
    b = billing(context)
    b.wait_for_expiry(b.reservation())


@when("the service fires {count:d} reservations of {amount} at the account at once")
def fires_reservations(context, count, amount):
    b = billing(context)
    account = b.account()
    body = {"account_id": account.id, "amount_micros": micros(amount), "ttl_seconds": 300}
    b.fire_at_once(account, count, lambda i: ("POST", "/billing/reservations", body, {}), "reservations")


@when('the service sends the same reservation of {amount} with the idempotency key "{key}" {count:d} times at once')
def fires_same_key(context, amount, key, count):
    b = billing(context)
    account = b.account()
    body = {"account_id": account.id, "amount_micros": micros(amount), "ttl_seconds": 300}
    headers = {"Idempotency-Key": b.idempotency_key(key)}
    b.fire_at_once(account, count, lambda i: ("POST", "/billing/reservations", body, headers),
                   "identical reservations with one idempotency key")


# ---- the platform admin (admin token) ---------------------------------------------------------------------------

@when("a platform admin mints {amount} for the account")
def admin_mints(context, amount):
    b = billing(context)
    b.mint(b.account(), micros(amount))


@when('a platform admin mints {amount} for the account with the idempotency key "{key}"')
@when('a platform admin mints {amount} for the account again with the idempotency key "{key}"')
def admin_mints_with_key(context, amount, key):
    b = billing(context)
    b.mint(b.account(), micros(amount), key=key)


# ---- callers presenting some credential -------------------------------------------------------------------------

@when("a caller presenting {credential} reserves {amount} on the account")
def caller_reserves(context, credential, amount):
    b = billing(context)
    b.reserve(b.account(), micros(amount), credential=credential)


@when("a caller presenting {credential} mints {amount} for the account")
def caller_mints(context, credential, amount):
    b = billing(context)
    b.mint(b.account(), micros(amount), credential=credential)


# ---- outcomes ---------------------------------------------------------------------------------------------------

@then("the account has {available} available, {held} held and {spent} spent of {minted} minted")
def account_balances(context, available, held, spent, minted):
    b = billing(context)
    b.expect_balances(b.account(), {"minted_micros": micros(minted), "available_micros": micros(available),
                                    "held_micros": micros(held), "spent_micros": micros(spent)})


@then("the reservation is pending")
def reservation_pending(context):
    b = billing(context)
    expect_status(b.last, 201, "the reservation")
    expect_equal(b.last.json().get("status"), "pending", "the new reservation's status", b.last)


@then("the reservation is finalized")
def reservation_finalized(context):
    b = billing(context)
    expect_status(b.last, 200, "the finalization")
    expect_equal(b.last.json().get("status"), "finalized", "the reservation's status", b.last)


@then("the reservation is released")
def reservation_released(context):
    b = billing(context)
    expect_status(b.last, 200, "the release")
    expect_equal(b.last.json().get("status"), "released", "the reservation's status", b.last)


@then("the reservation has expired")
def reservation_expired(context):
    b = billing(context)
    expect_status(b.last, 200, "reading the reservation")
    expect_equal(b.last.json().get("status"), "expired", "the reservation's status", b.last)


@then("the request is refused because {reason}")
def refused(context, reason):
    b = billing(context)
    b.expect_refused(b.last, reason)


@then("nothing was posted to the account's ledger")
def nothing_posted(context):
    b = billing(context)
    after = b.ledger_entries(b.account())
    expect_equal(after, b.entries_before, "the number of ledger entries on the account after the refused request "
                 f"(it had {b.entries_before} before)", b.last)


@then("the service is shown the account's balances")
def shown_balances(context):
    b = billing(context)
    expect_status(b.last, 200, "reading the anchored account's balances")
    body = b.last.json()
    expect_equal(body.get("minted_micros"), b.account_row(b.account())["minted_micros"],
                 "the minted balance shown", b.last)


@then("the mint adds a credit lot of exactly {amount}")
def mint_adds_lot(context, amount):
    b = billing(context)
    expect_status(b.last, 201, "the mint")
    lot_id = b.last.json().get("lot_id")
    expect_true(bool(lot_id), "Expected the mint to answer with the new credit lot's lot_id", b.last)
    expect_equal(b.lot_amount(lot_id), micros(amount), f"the amount of credit lot {lot_id} in the database", b.last)


@then("the repeated request is answered exactly like the first")
def answered_like_first(context):
    b = billing(context)
    first, again = b.api.exchanges[-2], b.api.exchanges[-1]
    expect_true(first.status is not None and 200 <= first.status < 300,
                f"Expected the first request to succeed, but it answered {first.status}", first)
    expect_equal((again.status, again.json()), (first.status, first.json()),
                 f"the repeated request's answer (the first was request {first.request_id})", again)


@then("the ledger shows a single hold on the account")
def single_hold(context):
    b = billing(context)
    expect_equal(b.holds(b.account()), {"reservations": 1, "reservation entries": 1},
                 "the reservations of the account and the ledger entries about them, in the database", b.last)


@then("the ledger shows the reservation held once and settled once")
def held_and_settled_once(context):
    b = billing(context)
    kinds = b.entries_for(b.reservation())
    expect_equal(len(kinds), 2, f"the number of ledger entries for reservation {b.reservation().id} "
                 f"(entries seen: {kinds})", b.last)


@then("the reconciliation shows the books balanced, including the account")
def books_balanced(context):
    billing(context).expect_books_balanced()


@then("the reconciliation reports the account out of balance by {amount}")
def out_of_balance(context, amount):
    b = billing(context)
    b.expect_discrepancy(b.account(), micros(amount))


@then("the refusal is in the audit log under the request id the suite sent")
def refusal_audited(context):
    b = billing(context)
    events, exchange = b.audit_for(b.last.request_id)
    denied = [e for e in events if e.get("outcome") == "denied" and e.get("request_id") == b.last.request_id]
    expect_true(bool(denied), f"Expected a denied audit event with request id {b.last.request_id} (the refused "
                f"{b.last.method} {b.last.path}), but the audit log held {events}", exchange)
    token = (b.last.request_headers.get("Authorization") or "").removeprefix("Bearer ")
    leaked = [e for e in denied if token and token in str(e)]
    expect_true(not leaked, "Expected the audit event not to contain the presented token, but it does", exchange)


@then("exactly {accepted:d} reservations are accepted and the other {refused_count:d} are refused for lack of credit")
def burst_outcome(context, accepted, refused_count):
    b = billing(context)
    burst = b.burst
    ok = [e for e in burst.exchanges if e.status == 201]
    short = [e for e in burst.exchanges if e.status == 402 and (e.json().get("code") == "insufficient_credit")]
    other = [e for e in burst.exchanges if e not in ok and e not in short]
    expect_true(len(ok) == accepted and len(short) == refused_count and not other,
                f"Expected {accepted} reservations accepted (201) and {refused_count} refused with 402 "
                f"insufficient_credit, but saw {len(ok)} accepted, {len(short)} refused for credit and "
                f"{len(other)} other answers {burst.statuses()}; first other: "
                f"{other[0].summary() if other else 'none'}")
    expect_equal(len({e.json()["id"] for e in ok}), accepted, "the number of distinct reservation ids accepted")


@then("the account's held credit never exceeded its funds during the burst")
def never_overheld(context):
    burst = billing(context).burst
    expect_true(len(burst.samples) > 0, "Expected the watcher to read the account at least once during the burst")
    bad = [s for s in burst.samples if s["held_micros"] > s["minted_micros"] or s["available_micros"] < 0
           or s["available_micros"] + s["held_micros"] + s["spent_micros"] != s["minted_micros"]]
    expect_true(not bad, f"Expected held never to exceed the funds (and available never below zero) in any of the "
                f"{len(burst.samples)} readings taken during the burst, but {len(bad)} broke it, first: "
                f"{bad[0] if bad else ''}")


@then("every answer carries that one reservation or asks to retry while the key is in use")
def same_key_answers(context):
    burst = billing(context).burst
    created = [e for e in burst.exchanges if e.status == 201]
    busy = [e for e in burst.exchanges if e.status == 409 and e.json().get("code") == "idempotency_conflict"]
    other = [e for e in burst.exchanges if e not in created and e not in busy]
    expect_true(created and not other, f"Expected every answer to be 201 with the one reservation or 409 "
                f"idempotency_conflict, but saw {burst.statuses()}; first other: "
                f"{other[0].summary() if other else 'none'}")
    ids = {e.json()["id"] for e in created}
    expect_equal(len(ids), 1, f"the number of distinct reservations in the 201 answers ({sorted(ids)})")

