"""Resilience: hung backends, a database that goes away, a gateway killed mid-request, bursts of garbage.

Faults are injected through support/stress/faults.py and the stack; money is checked through support/database/conservation.py.
"""
from datetime import datetime, timezone

from behave import given, step, then, when

from support.client import evidence
from support.stress import faults
from support.harness.assertions import expect_equal, expect_status, expect_true, problem_field
from support.database.conservation import account_ledger, cost_micros, reconciliation
from support.domain.model_backends import Backend
from support.database.seeding import remove_model, seed_model
from support.harness.waits import wait_until

PRICES = (1_000_000, 2_000_000)  # micro-USD per 1k prompt and completion tokens for the models seeded here
# What a timeout bound may overrun by on a busy machine: the answer after the fallback, and scheduling.
TIMEOUT_SLACK_SECONDS = 1.5


# ---- set-up (the API keys come from steps/key_steps.py) ------------------------------------------------------

def _seed_model(context, model: str, backend_names: list[str], timeout_seconds: float) -> None:
    """A model only this scenario uses, its backends on this scenario's stub namespaces, each with a timeout."""
    name = context.ns.name(model)
    context.model_backends = getattr(context, "model_backends", {})
    routed = []
    for backend_name in backend_names:
        backend = Backend(backend_name, context.ns.name(f"{model}-{backend_name}"))
        context.model_backends[backend_name] = backend
        routed.append({"name": backend_name, "url": backend.chat_url(context.backends.backend_base_url),
                       "timeout_seconds": timeout_seconds})
        context.add_cleanup(context.backends.reset, backend)
    seed_model(context.db, name, prompt_price_per_1k=PRICES[0], completion_price_per_1k=PRICES[1], backends=routed)
    context.add_cleanup(remove_model, context.db, name)
    context.world.models[model] = name
    context.model_prices = getattr(context, "model_prices", {})
    context.model_prices[model] = PRICES
    context.backend_timeout = timeout_seconds
    context.chat_model = model


@given('the model "{model}" routes to a primary and then a secondary backend, each given {seconds} seconds to answer')
def model_with_two_timed_backends(context, model, seconds):
    _seed_model(context, model, ["primary", "secondary"], float(seconds))


@given('the model "{model}" routes to one backend, given {seconds} seconds to answer')
def model_with_one_timed_backend(context, model, seconds):
    _seed_model(context, model, ["primary"], float(seconds))


@given("the model's {backend} backend hangs")
def backend_hangs(context, backend):
    context.backends.behave(context.model_backends[backend], "hang")
    context.hung_backends = [backend]


@given("every backend of the model hangs")
def every_backend_hangs(context):
    for backend in context.model_backends.values():
        context.backends.behave(backend, "hang")
    context.hung_backends = list(context.model_backends)


def _charge(context, org: str, exchange) -> None:
    """Remember what an answered completion costs, to compare with the org's spend later."""
    model = context.chat_model
    usage = exchange.json()["usage"]
    context.charges = getattr(context, "charges", {})
    context.charges.setdefault(org, []).append(cost_micros(usage, *context.model_prices[model]))


@step('the key "{key}" has had {count:d} chat completions from "{model}" answered')
@step('the key "{key}" has had {count:d} chat completion from "{model}" answered')
def completions_answered(context, key, count, model):
    context.chat_model = model
    org = context.world.key(key).org
    for _ in range(count):
        exchange = context.platform.chat(key, context.world.models.get(model, model))
        expect_status(exchange, 200, f"a chat completion with the key {key!r}")
        _charge(context, org, exchange)
    context.answered = getattr(context, "answered", 0) + count


# ---- a hung backend ----------------------------------------------------------------------------------------------

@then("the gateway gave up on the hung backend within its timeout")
def gave_up_within_timeout(context):
    bound = context.backend_timeout * len(context.hung_backends) + TIMEOUT_SLACK_SECONDS
    took = context.response.elapsed_ms / 1000
    expect_true(took <= bound, f"Expected the answer within {bound:g} s (a {context.backend_timeout:g} s timeout "
                f"per hung backend plus {TIMEOUT_SLACK_SECONDS} s), but it took {took:.2f} s", context.response)
    for name in context.hung_backends:
        seen = [c for c in context.backends.calls(context.model_backends[name])
                if (c.get("headers") or {}).get("x-request-id") == context.response.request_id]
        expect_true(bool(seen), f"Expected the hung {name} backend to have been tried with request id "
                    f"{context.response.request_id}, but it saw no such call", context.response)


@then("the gateway answers 502, naming each backend that timed out, within their timeouts")
def bad_gateway_naming_timeouts(context):
    expect_status(context.response, 502, "a chat completion whose every backend hangs")
    message = problem_field(context.response, "message") or ""
    for name in context.hung_backends:
        expect_true(f"{name}: timeout" in message, f"Expected the message to say backend {name!r} timed out "
                    f"('{name}: timeout'), but it said: {message!r}", context.response)
    gave_up_within_timeout(context)


def _ledger(context, org: str):
    return account_ledger(context.db, context.world.org(org).account_id)


@then("the request's hold was released with nothing charged")
def hold_released(context):
    request_id = context.response.request_id
    for org in context.world.orgs:
        ledger = _ledger(context, org)
        reservation = ledger.reservation_for(request_id)
        if reservation is not None:
            break
    else:
        raise AssertionError(f"Expected a reservation for request {request_id} on one of the scenario's orgs, but "
                             f"there was none.\n{context.response.summary()}")
    expect_equal(reservation["status"], "released", f"the status of reservation {reservation['id']} of {org!r}",
                 context.response)
    expect_equal(ledger.spent, 0, f"the spend of {org!r} after a request no backend answered", context.response)


@then('nothing is left on hold for "{org}"')
def nothing_held(context, org):
    ledger = _ledger(context, org)
    expect_equal(ledger.held, 0, f"the amount held on {org!r}'s account ({ledger.describe()})")
    problems = ledger.problems()
    expect_true(not problems, f"Expected {org!r}'s ledger to be sound, but: {problems}")


# ---- the database goes away ----------------------------------------------------------------------------------

def _fault(context, capability: str):
    """The stack's method for a fault; skips the scenario, saying why, when this stack cannot take the fault."""
    try:
        return faults.require(context.stack, capability)
    except faults.FaultUnavailable as reason:
        context.scenario.skip(str(reason))
        return None


@when("the gateway's database becomes unavailable")
def database_goes_away(context):
    stop = _fault(context, "stop_database")
    if stop is None:
        return
    context.gateway_pid = context.stack.gateway_pid()
    context.add_cleanup(context.stack.start_database)  # no matter how the scenario ends
    how = stop()
    evidence.attach_text("fault injected", f"The database was made unavailable: {how}.")


@when('a readiness probe, a chat completion with the key "{key}" and a platform admin\'s reconciliation request '
      'arrive at once')
def calls_during_outage(context, key):
    # Sent at once: each waits out the gateway's database timeout before it is refused.
    api = context.api
    ids = {name: api.next_request_id() for name in ("readiness", "chat", "reconciliation")}
    chat = {"model": context.world.models[context.chat_model], "max_tokens": 32,
            "messages": [{"role": "user", "content": "Hello, gateway"}]}
    context.outage_answers = faults.at_once({
        "readiness": lambda: api.get("/readyz", headers={"X-Request-ID": ids["readiness"]}),
        "chat": lambda: api.post("/v1/chat/completions", token=context.world.key(key).secret, json_body=chat,
                                 headers={"X-Request-ID": ids["chat"]}),
        "reconciliation": lambda: api.get("/admin/billing/reconciliation", token=context.keys.admin_token(),
                                          headers={"X-Request-ID": ids["reconciliation"]}),
    })


@then("the gateway reports that it is not ready, naming the database")
def not_ready_naming_database(context):
    exchange = context.outage_answers["readiness"]
    expect_status(exchange, 503, "the readiness probe while the database is unavailable")
    body = exchange.json()
    expect_true((body.get("checks") or {}).get("database", "ok") != "ok" and "database" in (body.get("reason") or ""),
                f"Expected the readiness answer to name the database as the reason, but it said: {body}", exchange)


@then('the chat completion is refused with 503 "{code}", not a server error')
def chat_refused_503(context, code):
    exchange = context.outage_answers["chat"]
    expect_status(exchange, 503, "a chat completion while the database is unavailable")
    expect_equal(problem_field(exchange, "code"), code, "the error code", exchange)
    message = problem_field(exchange, "message") or ""
    expect_true("database" in message.lower(), f"Expected the message to name the database, but it was {message!r}",
                exchange)
    context.refused = getattr(context, "refused", 0) + 1


@then('the platform admin\'s reconciliation request is refused with 503 "{code}"')
def reconciliation_refused_503(context, code):
    exchange = context.outage_answers["reconciliation"]
    expect_status(exchange, 503, "the reconciliation report while the database is unavailable")
    expect_true(exchange.response_headers.get("Content-Type", "").startswith("application/problem+json"),
                f"Expected an application/problem+json answer, but the content type was "
                f"{exchange.response_headers.get('Content-Type')!r}", exchange)
    expect_equal(problem_field(exchange, "code"), code, "the problem's code", exchange)


@then("the gateway still answers that it is alive")
def still_alive(context):
    exchange = context.api.get("/healthz", timeout=5)
    expect_status(exchange, 200, "the liveness probe during the outage")


@when("the database is available again")
def database_returns(context):
    context.stack.start_database()


@then("the gateway becomes ready again without having been restarted")
def ready_again_without_restart(context):
    wait_until("the gateway to answer /readyz with 200 after the outage", lambda: context.api.get("/readyz"),
               lambda exchange: exchange.status == 200, timeout=context.config_suite.poll_timeout + 20,
               describe=lambda exchange: exchange.summary())
    expect_equal(context.stack.gateway_pid(), context.gateway_pid, "the gateway's process id after the outage "
                 "(a different one means it was restarted)")


@then('the ledger of "{org}" holds exactly one mint and one reservation and settlement per answered completion')
def ledger_one_entry_each(context, org):
    ledger = _ledger(context, org)
    evidence.attach_json(f"ledger of {org}", ledger.describe())
    expected = {"mint": 1, "reserve": context.answered, "finalize": context.answered}
    expect_equal(dict(ledger.entries_by_kind), expected, f"the ledger entries of {org!r} by kind after "
                 f"{context.answered} answered completions and {getattr(context, 'refused', 0)} refused ones")
    problems = ledger.problems()
    expect_true(not problems, f"Expected {org!r}'s ledger to be sound, but: {problems}")
    expect_equal(ledger.spent, sum(context.charges.get(org, [])), f"the spend of {org!r} (the sum of its answered "
                 f"completions' usage at the model's price)")


@then("the platform's reconciliation balances")
def reconciliation_balances(context):
    exchange = expect_status(reconciliation(context.api, context.keys), 200, "the reconciliation report")
    body = exchange.json()
    mine = {org.account_id for org in context.world.orgs.values()}
    ours = [d for d in body.get("discrepancies", []) if d.get("account_id") in mine]
    expect_true(body.get("balanced") is True and not ours,
                f"Expected the reconciliation to balance, but it reported {body.get('discrepancies')}", exchange)


# ---- the gateway is killed mid-request -------------------------------------------------------------------------

@given('{count:d} chat completions with the key "{key}" are in flight, held up by the backend that stopped answering')
def completions_in_flight(context, count, key):
    if _fault(context, "kill_gateway") is None:
        return
    context.backends.behave(context.model_backends["primary"], "hang")
    record = context.world.key(key)
    body = {"model": context.world.models[context.chat_model],
            "messages": [{"role": "user", "content": "Hello, gateway"}], "max_tokens": 32}
    context.in_flight = faults.send_in_flight(context.endpoints.base_url, "/v1/chat/completions", record.secret, body,
                                              count, context.ns.request_id_prefix)
    account = context.world.org(record.org).account_id
    wait_until(f"{count} pending reservations for the requests in flight",
               lambda: account_ledger(context.db, account),
               lambda ledger: all(ledger.reservation_for(r) and ledger.reservation_for(r)["status"] == "pending"
                                  for r in context.in_flight.request_ids),
               timeout=context.config_suite.poll_timeout, describe=lambda ledger: str(ledger.describe()))


@when("the gateway process is killed and started again")
def gateway_killed_and_restarted(context):
    kill = _fault(context, "kill_gateway")
    if kill is None:
        return
    pid = kill()
    context.stack.restart_gateway()
    evidence.attach_text("fault injected", f"The gateway (pid {pid}) was killed with SIGKILL and started again "
                         f"(pid {context.stack.gateway_pid()}) on the same port and database.")


@then("the requests in flight got no answer")
def in_flight_unanswered(context):
    outcomes = context.in_flight.outcomes()
    expect_true(all(o.startswith("no answer") for o in outcomes), f"Expected every request in flight to be cut "
                f"off by the crash, but they ended: {dict(zip(context.in_flight.request_ids, outcomes))}")


@then('their holds expire and return to "{org}"\'s available credit')
def holds_expire(context, org):
    account = context.world.org(org).account_id
    latest = account_ledger(context.db, account).latest_expiry()
    wait_seconds = max(0.0, (latest - datetime.now(timezone.utc)).total_seconds()) if latest else 0.0
    ledger = wait_until(
        "the holds of the requests cut off by the crash to expire", lambda: account_ledger(context.db, account),
        lambda ledger: all(ledger.reservation_for(r)["status"] == "expired" for r in context.in_flight.request_ids),
        timeout=wait_seconds + context.config_suite.poll_timeout,
        describe=lambda ledger: str([ledger.reservation_for(r) for r in context.in_flight.request_ids]))
    expect_equal(ledger.held, 0, f"the amount still held on {org!r}'s account ({ledger.describe()})")


@then('the ledger of "{org}" holds exactly one mint and one reservation and settlement per request')
def ledger_one_entry_per_request(context, org):
    ledger = _ledger(context, org)
    evidence.attach_json(f"ledger of {org}", ledger.describe())
    cut_off = len(context.in_flight.request_ids)
    expected = {"mint": 1, "reserve": context.answered + cut_off, "finalize": context.answered, "expire": cut_off}
    expect_equal(dict(ledger.entries_by_kind), expected, f"the ledger entries of {org!r} by kind after "
                 f"{context.answered} answered completions and {cut_off} cut off by the crash")
    problems = ledger.problems()
    expect_true(not problems, f"Expected {org!r}'s ledger to be sound, but: {problems}")


@then('"{org}" has spent exactly what its answered completions cost')
def spent_exactly(context, org):
    ledger = _ledger(context, org)
    expected = sum(context.charges.get(org, []))
    expect_equal(ledger.spent, expected, f"the spend of {org!r} (its {len(context.charges.get(org, []))} answered "
                 f"completions cost {context.charges.get(org, [])} micro-USD)")


@when("the model's backend answers again")
def backend_answers_again(context):
    for backend in context.model_backends.values():
        context.backends.behave(backend, "ok")


# ---- a burst of malformed and oversized requests ---------------------------------------------------------------

@when("a burst of malformed and oversized requests hits the gateway's endpoints with valid credentials")
def burst(context):
    org = next(iter(context.world.orgs.values()))
    owner = context.platform.owner_of(org.name)
    key = next(iter(context.world.keys.values()))
    bearer = lambda token: {"Authorization": f"Bearer {token}"}  # noqa: E731
    targets = {
        "chat completion (API key)": ("POST", "/v1/chat/completions", bearer(key.secret)),
        "login (anonymous)": ("POST", "/auth/login", {}),
        "open an org (platform admin)": ("POST", "/admin/orgs", bearer(context.keys.admin_token(ttl=600))),
        "mint credit (platform admin)": ("POST", "/admin/billing/mint", bearer(context.keys.admin_token(ttl=600))),
        "reserve (service)": ("POST", "/billing/reservations", bearer(context.keys.service_token(ttl=600))),
        "issue a key (org owner)": ("POST", f"/orgs/{org.slug}/keys", bearer(context.platform.access_token(owner))),
    }
    model = next(iter(context.world.models.values()))  # the scenario's model: deeper checks than an unknown one
    context.burst = faults.send_burst(context.endpoints.base_url, targets, model,
                                      request_id_prefix=context.ns.request_id_prefix)
    evidence.attach_json("burst summary", context.burst.summary())
    evidence.attach_json("burst outcomes", [o.as_row() for o in context.burst.outcomes])


@then("every request of the burst is refused with a client error that names the problem")
def burst_only_client_errors(context):
    wrong = [o.as_row() for o in context.burst.outcomes
             if o.status is None or not 400 <= o.status < 500 or not o.code or not o.message]
    expect_true(not wrong, f"Expected only 4xx answers with a code and a message, but {len(wrong)} of "
                f"{len(context.burst.outcomes)} were not: {wrong[:10]}")


@then("every oversized body is refused with 413")
def oversized_413(context):
    oversized = [o for o in context.burst.outcomes if o.oversized]
    wrong = [o.as_row() for o in oversized if o.status != 413 or o.code != "body_too_large"]
    expect_true(oversized and not wrong, f"Expected 413 body_too_large for each of the {len(oversized)} oversized "
                f"bodies, but: {wrong[:10]}")


@then("the gateway answered every health probe promptly during and after the burst")
def health_probes_prompt(context):
    probes = context.burst.probes
    failed = [p.__dict__ for p in probes if p.status != 200]
    expect_true(len(probes) >= 2 and not failed, f"Expected every /healthz probe ({len(probes)} sent, each allowed "
                f"3 s) to answer 200, but these did not: {failed}")


@then('the burst left no trace in the ledger of "{org}"')
def burst_left_no_trace(context, org):
    ledger = _ledger(context, org)
    expect_equal(dict(ledger.entries_by_kind), {"mint": 1}, f"the ledger entries of {org!r} after the burst")
    expect_equal(ledger.reservations, [], f"the reservations of {org!r} after the burst")
