"""Resilience: hung backends, a database that goes away, a gateway killed mid-request, bursts of garbage.

Faults are injected through support/stress/faults.py and the stack; money is checked through
support/domain/org_ledgers.py (support/database/conservation.py reads the ledger).
"""
import re
from datetime import datetime, timezone

from behave import given, then, when

from support.client.api import Request
from support.client.assertions import expect_equal, expect_status, expect_true, problem_field
from support.domain.platform_api import chat_body
from support.harness.waits import wait_until
from support.stress.faults import FaultUnavailable

PRICES = (1_000_000, 2_000_000)  # micro-USD per 1k prompt and completion tokens for the models seeded here
# What a timeout bound may overrun by on a busy machine: the answer after the fallback, and scheduling.
TIMEOUT_SLACK_SECONDS = 1.5


def _unless_unavailable(context, inject) -> None:
    """Inject a fault; when this stack cannot take it, skip the scenario saying why."""
    try:
        inject()
    except FaultUnavailable as reason:
        context.scenario.skip(str(reason))


# ---- set-up (the API keys come from steps/key_steps.py) ------------------------------------------------------

@given('the model "{model}" routes to a primary and then a secondary backend, each given {seconds} seconds to answer')
def model_with_two_timed_backends(context, model, seconds):
    context.state.routing.declare(model, PRICES, ["primary", "secondary"], timeout_seconds=float(seconds))


@given('the model "{model}" routes to one backend, given {seconds} seconds to answer')
def model_with_one_timed_backend(context, model, seconds):
    context.state.routing.declare(model, PRICES, ["primary"], timeout_seconds=float(seconds))


@given("the model's {backend} backend hangs")
def backend_hangs(context, backend):
    state = context.state
    state.routing.behave(backend, "hang")
    state.world.chat.hung = [backend]


@given("every backend of the model hangs")
def every_backend_hangs(context):
    state = context.state
    backends = list(state.routing.current().backends)
    for backend in backends:
        state.routing.behave(backend, "hang")
    state.world.chat.hung = backends


@given('the key "{key}" has had {count:d} chat completions from "{model}" answered')
@then('the key "{key}" is served again: {count:d} more chat completions from "{model}" are answered')
@then('the key "{key}" is served again: {count:d} more chat completion from "{model}" is answered')
def completions_answered(context, key, count, model):
    routing = context.state.routing
    for _ in range(count):
        routing.ask_answered(key, model)


# ---- a hung backend ----------------------------------------------------------------------------------------------

@then("the gateway gave up on the hung backend within its timeout")
def gave_up_within_timeout(context):
    state = context.state
    answer, hung = state.world.answer(), state.world.chat.hung
    timeout = state.routing.current().backend_timeout
    bound = timeout * len(hung) + TIMEOUT_SLACK_SECONDS
    took = answer.elapsed_ms / 1000
    expect_true(took <= bound, f"Expected the answer within {bound:g} s (a {timeout:g} s timeout per hung backend "
                f"plus {TIMEOUT_SLACK_SECONDS} s), but it took {took:.2f} s", answer)
    for name in hung:
        seen = state.routing.calls_with_request_id(name, answer.request_id)
        expect_true(bool(seen), f"Expected the hung {name} backend to have been tried with request id "
                    f"{answer.request_id}, but it saw no such call", answer)


@then("the request fails as no backend could answer, naming each backend that timed out, within their timeouts")
def bad_gateway_naming_timeouts(context):
    state = context.state
    answer = state.world.answer()
    expect_status(answer, 502, "a chat completion whose every backend hangs")
    message = problem_field(answer, "message") or ""
    for name in state.world.chat.hung:
        expect_true(f"{name}: timeout" in message, f"Expected the message to say backend {name!r} timed out "
                    f"('{name}: timeout'), but it said: {message!r}", answer)
    gave_up_within_timeout(context)


@then("the request's hold was released with nothing charged")
def hold_released(context):
    state = context.state
    answer = state.world.answer()
    for org in state.world.orgs:
        ledger = state.ledgers.of(org)
        reservation = ledger.reservation_for(answer.request_id)
        if reservation is not None:
            break
    else:
        raise AssertionError(f"Expected a reservation for request {answer.request_id} on one of the scenario's orgs, "
                             f"but there was none.\n{answer.summary()}")
    expect_equal(reservation["status"], "released", f"the status of reservation {reservation['id']} of {org!r}",
                 answer)
    expect_equal(ledger.spent, 0, f"the spend of {org!r} after a request no backend answered", answer)


@then('nothing is left on hold for "{org}"')
def nothing_held(context, org):
    context.state.ledgers.expect_nothing_held(org)


# ---- the database goes away ----------------------------------------------------------------------------------

@given("the gateway's database has become unavailable")
def database_goes_away(context):
    _unless_unavailable(context, context.state.faults.take_database_away)


def _requests_during_outage(state, key: str) -> dict:
    # Sent at once: the first to find the database locked waits out the gateway's busy timeout; those queued behind
    # it in the gateway are refused with it.
    requests = {
        "readiness": Request("GET", "/readyz"),
        "chat": Request("POST", "/v1/chat/completions", token=state.world.key(key).secret,
                        json_body=chat_body(state.routing.current().served_as)),
        "reconciliation": Request("GET", "/admin/billing/reconciliation", token=state.keys.admin_token()),
    }
    burst = state.at_once(list(requests.values()), title="requests during the database outage")
    return dict(zip(requests, burst.exchanges))


def _expect_not_ready(exchange) -> None:
    expect_status(exchange, 503, "the readiness probe while the database is unavailable")
    body = exchange.json()
    expect_true((body.get("checks") or {}).get("database", "ok") != "ok" and "database" in (body.get("reason") or ""),
                f"Expected the readiness answer to name the database as the reason, but it said: {body}", exchange)


def _expect_chat_refused_as_unavailable(world, exchange) -> None:
    expect_status(exchange, 503, "a chat completion while the database is unavailable")
    expect_equal(problem_field(exchange, "code"), "database_unavailable", "the error code", exchange)
    message = problem_field(exchange, "message") or ""
    expect_true("database" in message.lower(), f"Expected the message to name the database, but it was {message!r}",
                exchange)
    world.chat.refused += 1


def _expect_reconciliation_refused_as_unavailable(exchange) -> None:
    expect_status(exchange, 503, "the reconciliation report while the database is unavailable")
    expect_true(exchange.response_headers.get("Content-Type", "").startswith("application/problem+json"),
                f"Expected an application/problem+json answer, but the content type was "
                f"{exchange.response_headers.get('Content-Type')!r}", exchange)
    expect_equal(problem_field(exchange, "code"), "database_unavailable", "the problem's code", exchange)


@when('a readiness probe, a chat completion with the key "{key}" and a platform admin\'s reconciliation request '
      'arrive at once')
def calls_during_outage(context, key):
    state = context.state
    state.world.last.answers = _requests_during_outage(state, key)


@given('a readiness probe, a chat completion with the key "{key}" and a platform admin\'s reconciliation request '
       'have been refused meanwhile')
def refused_during_outage(context, key):
    state = context.state
    answers = state.world.last.answers = _requests_during_outage(state, key)
    _expect_not_ready(answers["readiness"])
    _expect_chat_refused_as_unavailable(state.world, answers["chat"])
    _expect_reconciliation_refused_as_unavailable(answers["reconciliation"])


@then("the gateway reports that it is not ready, naming the database")
def not_ready_naming_database(context):
    _expect_not_ready(context.state.world.last.answers["readiness"])


@then("the chat completion is refused as unavailable, naming the database, not a server error")
def chat_refused_as_unavailable(context):
    world = context.state.world
    _expect_chat_refused_as_unavailable(world, world.last.answers["chat"])


@then("the platform admin's reconciliation request is refused as unavailable")
def reconciliation_refused_as_unavailable(context):
    _expect_reconciliation_refused_as_unavailable(context.state.world.last.answers["reconciliation"])


@then("the gateway still answers that it is alive")
def still_alive(context):
    exchange = context.state.api.get("/healthz", timeout=5)
    expect_status(exchange, 200, "the liveness probe during the outage")


@when("the database is available again")
def database_returns(context):
    context.state.faults.give_database_back()


@then("the gateway becomes ready again without having been restarted")
def ready_again_without_restart(context):
    state = context.state
    wait_until("the gateway to answer /readyz with 200 after the outage", lambda: state.api.get("/readyz"),
               lambda exchange: exchange.status == 200, timeout=state.config.poll_timeout + 20,
               describe=lambda exchange: exchange.summary())
    expect_equal(state.faults.gateway_pid(), state.world.gateway_pid, "the gateway's process id after the outage "
                 "(a different one means it was restarted)")


@then('the ledger of "{org}" holds exactly one mint and one reservation and settlement per answered completion')
def ledger_one_entry_each(context, org):
    state = context.state
    chat = state.world.chat
    ledger = state.ledgers.attached(org)
    expected = {"mint": 1, "reserve": chat.answered, "finalize": chat.answered}
    expect_equal(dict(ledger.entries_by_kind), expected, f"the ledger entries of {org!r} by kind after "
                 f"{chat.answered} answered completions and {chat.refused} refused ones")
    state.ledgers.expect_sound(org, ledger)
    expect_equal(ledger.spent, sum(chat.charges.get(org, [])), f"the spend of {org!r} (the sum of its answered "
                 f"completions' usage at the model's price)")


@then("the platform's reconciliation balances")
def reconciliation_balances(context):
    context.state.ledgers.expect_reconciliation_balances()


# ---- the gateway is killed mid-request -------------------------------------------------------------------------

@given('{count:d} chat completions with the key "{key}" are in flight, held up by the backend that stopped answering')
def completions_in_flight(context, count, key):
    state = context.state
    try:
        state.world.in_flight = state.faults.hold_in_flight(key, count)
    except FaultUnavailable as reason:
        context.scenario.skip(str(reason))
        return
    state.ledgers.await_holds(state.world.key(key).org, state.world.in_flight.request_ids, "pending")


@when("the gateway process is killed and started again")
@given("the gateway process has been killed and started again")
def gateway_killed_and_restarted(context):
    _unless_unavailable(context, context.state.faults.kill_and_restart_gateway)


@then("the requests in flight got no answer")
def in_flight_unanswered(context):
    in_flight = context.state.world.in_flight
    outcomes = in_flight.outcomes()
    expect_true(all(o.startswith("no answer") for o in outcomes), f"Expected every request in flight to be cut "
                f"off by the crash, but they ended: {dict(zip(in_flight.request_ids, outcomes))}")


@then('their holds expire and return to "{org}"\'s available credit')
def holds_expire(context, org):
    state = context.state
    request_ids = state.world.in_flight.request_ids
    # A hold lives as long as its backends may take plus the gateway's margin: seconds on a test stack. One set to
    # expire much later would only be seen expiring once that time had passed, so it fails here instead.
    now, bound = datetime.now(timezone.utc), state.config.poll_timeout
    holds = {rid: state.ledgers.of(org).reservation_for(rid) for rid in request_ids}
    late = {rid: hold["expires_at"].isoformat() for rid, hold in holds.items()
            if hold and hold["expires_at"] and (hold["expires_at"] - now).total_seconds() > bound}
    expect_true(not late, f"Expected the holds of the requests cut off to expire within {bound:g} s of the crash, "
                f"but these expire later: {late}")
    ledger = state.ledgers.await_holds(org, request_ids, "expired")
    expect_equal(ledger.held, 0, f"the amount still held on {org!r}'s account ({ledger.describe()})")


@then('the ledger of "{org}" holds exactly one mint and one reservation and settlement per request')
def ledger_one_entry_per_request(context, org):
    state = context.state
    answered = state.world.chat.answered
    cut_off = len(state.world.in_flight.request_ids)
    ledger = state.ledgers.attached(org)
    expected = {"mint": 1, "reserve": answered + cut_off, "finalize": answered, "expire": cut_off}
    expect_equal(dict(ledger.entries_by_kind), expected, f"the ledger entries of {org!r} by kind after "
                 f"{answered} answered completions and {cut_off} cut off by the crash")
    state.ledgers.expect_sound(org, ledger)


@then('"{org}" has spent exactly what its answered completions cost')
def spent_exactly(context, org):
    state = context.state
    charges = state.world.chat.charges.get(org, [])
    expect_equal(state.ledgers.of(org).spent, sum(charges), f"the spend of {org!r} (its {len(charges)} answered "
                 f"completions cost {charges} micro-USD)")


@when("the model's backend answers again")
def backend_answers_again(context):
    routing = context.state.routing
    for backend in routing.current().backends:
        routing.behave(backend, "ok")


# ---- a burst of malformed and oversized requests ---------------------------------------------------------------

@when("a burst of malformed and oversized requests hits the gateway's endpoints with valid credentials")
def malformed_burst(context):
    state = context.state
    state.world.malformed = state.faults.malformed_burst()


# What a refusal of each malformed case must name (a pattern the message matches): the broken syntax, the shape
# the body should have, the field at fault (quoted), the size. A case missing here must name a field or the body.
FIELD = r"'[A-Za-z_][\w.\[\]]*'|\b[a-z]+_[a-z_]+\b"  # quoted, or a snake_case name such as max_tokens
SYNTAX, TOO_BIG = r"JSON|UTF-8|utf-8|parse", r"larger|too large"
NAMES_THE_PROBLEM = {
    "empty body": f"{SYNTAX}|{FIELD}", "truncated JSON": SYNTAX, "not JSON at all": SYNTAX,
    "a JSON array, not an object": "object", "a JSON string, not an object": "object", "invalid UTF-8": SYNTAX,
    "a form post, not JSON": f"{SYNTAX}|object", "a number with 5000 digits": f"{SYNTAX}|digits",
    "NaN and Infinity": f"{SYNTAX}|NaN|{FIELD}", "a lone surrogate in a real model's message": f"surrogate|{FIELD}",
    "nesting 100,000 levels deep": f"nested|{TOO_BIG}", "50,000 keys in one object": f"{FIELD}|{TOO_BIG}",
    "10 MB body with its length declared": TOO_BIG, "10 MB body streamed without a length": TOO_BIG,
}


def _names_the_problem(outcome) -> bool:
    return bool(re.search(NAMES_THE_PROBLEM.get(outcome.case, f"{FIELD}|body"), outcome.message or ""))


@then("every request of the burst is refused with a client error that names the problem")
def burst_only_client_errors(context):
    outcomes = context.state.world.malformed.outcomes
    wrong = [o.as_row() for o in outcomes if o.status is None or not 400 <= o.status < 500 or not o.code]
    expect_true(not wrong, f"Expected only 4xx answers with a code, but {len(wrong)} of {len(outcomes)} were not: "
                f"{wrong[:10]}")
    vague = [o.as_row() for o in outcomes if not _names_the_problem(o)]
    expect_true(not vague, f"Expected every refusal to name what is wrong (the syntax, the shape, the field or the "
                f"size), but {len(vague)} of {len(outcomes)} did not: {vague[:10]}")


@then("every oversized body is refused as too large")
def oversized_refused_as_too_large(context):
    oversized = [o for o in context.state.world.malformed.outcomes if o.oversized]
    wrong = [o.as_row() for o in oversized if o.status != 413 or o.code != "body_too_large"]
    expect_true(oversized and not wrong, f"Expected 413 body_too_large for each of the {len(oversized)} oversized "
                f"bodies, but: {wrong[:10]}")


@then("the gateway answered every health probe promptly during and after the burst")
def health_probes_prompt(context):
    probes = context.state.world.malformed.probes
    failed = [p.__dict__ for p in probes if p.status != 200]
    expect_true(len(probes) >= 2 and not failed, f"Expected every /healthz probe ({len(probes)} sent, each allowed "
                f"3 s) to answer 200, but these did not: {failed}")


@then('the burst left no trace in the ledger of "{org}"')
def burst_left_no_trace(context, org):
    ledger = context.state.ledgers.of(org)
    sent = [o.request_id for o in context.state.world.malformed.outcomes if o.request_id]
    burst = f" (the burst's requests: {sent[0]} to {sent[-1]})" if sent else ""
    reserved = [(r["request_id"], r["status"]) for r in ledger.reservations]  # first: it names the request
    expect_equal(reserved, [], f"the reservations of {org!r} after the burst{burst}")
    expect_equal(dict(ledger.entries_by_kind), {"mint": 1}, f"the ledger entries of {org!r} after the burst{burst}")
