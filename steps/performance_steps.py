"""Performance: a bounded Locust load run on the chat path, then the ledger checked org by org."""

from behave import given, then, when

from support.client import evidence
from support.client.assertions import expect_equal, expect_status, expect_true
from support.harness.money import micros, usd
from support.stress.load import LoadRefused

MAX_SECONDS = 60  # a load run's safety bound: it ends when its requests are answered, long before


@given("these orgs, each with credit, a budget and an API key:")
def orgs_with_budgets(context):
    state = context.state
    for row in context.table:
        org, owner = row["org"], f"{row['org']} Owner"
        budget = None if row["budget"].strip() == "none" else micros(row["budget"])
        state.platform.org_with_owner(org, owner, budget_micros=budget)
        state.platform.mint(org, micros(row["credit"]))
        expect_status(state.platform.issue_key(owner, org, row["key"]), 201, f"{owner} issuing {row['key']!r}")
        state.world.load.budgets[org] = budget


@when('{users:d} simulated users send {count:d} chat completions to "{model}" with those keys')
def load_run(context, users, count, model):
    state = context.state
    try:
        state.world.load.figures = state.load.run(model, users, MAX_SECONDS, count)
    except LoadRefused as reason:
        context.scenario.skip(str(reason))


@then("the run's throughput and latency are attached to the report")
def figures_attached(context):
    state = context.state
    figures = state.world.load.figures
    evidence.attach_json("load run figures", figures)
    latency = figures["latency_ms"]
    line = (f"load run: {figures['requests']} requests in {figures['seconds']} s = {figures['requests_per_second']} "
            f"req/s; latency ms p50 {latency['p50']} p95 {latency['p95']} p99 {latency['p99']} max {latency['max']}; "
            f"by status {figures['by_status']}")
    state.load.keep(figures)
    starved = [org for org, count in figures["answered_by_org"].items() if count == 0]
    expect_true(figures["requests"] > 0 and not starved, f"Expected every org's key to have completions answered "
                f"during the run, but these got none: {starved or 'no request at all'}; {line}")


@then("every answer was a completion or a budget refusal, never a server error")
def only_completions_and_refusals(context):
    figures = context.state.world.load.figures
    unexpected = {status: count for status, count in figures["by_status"].items() if status not in ("200", "402")}
    expect_true(not unexpected, f"Expected only 200 and 402 answers, but also saw {unexpected}; examples: "
                f"{figures['unexpected'][:5]}")


@then("no org spent more than its budget")
def within_budgets(context):
    state = context.state
    load = state.world.load
    over = {}
    for org, budget in load.budgets.items():
        ledger = state.ledgers.of(org)
        if budget is not None and ledger.spent + ledger.held > budget:
            over[org] = f"spent {usd(ledger.spent)} + held {usd(ledger.held)} over a budget of {usd(budget)}"
    expect_true(not over, f"Expected every org within its budget, but: {over}")
    refused = {org: load.figures["refused_by_org"][org] for org, budget in load.budgets.items() if budget}
    expect_true(any(refused.values()), f"Expected the run to reach at least one budget (402 refusals), so the limit "
                f"was tested under load, but the budgeted orgs had none: {refused}")


@then("each org's spend equals the sum of what its answered completions cost")
def spend_equals_charges(context):
    state = context.state
    figures = state.world.load.figures
    for org in state.world.load.budgets:
        ledger = state.ledgers.of(org)
        expect_equal(ledger.spent, figures["charged_micros_by_org"][org], f"the spend of {org!r} against the sum of "
                     f"its {figures['answered_by_org'][org]} answered completions' usage at the model's price")
        expect_equal(len(ledger.by_status("finalized")), figures["answered_by_org"][org],
                     f"the finalized reservations of {org!r} against its answered completions")


@then("the platform's reconciliation balances with nothing left on hold")
def reconciles_nothing_held(context):
    state = context.state
    exchange = state.ledgers.reconciliation()
    body = exchange.json()
    expect_true(body.get("balanced") is True, f"Expected the reconciliation to balance after the load run, but it "
                f"reported {body.get('discrepancies')}", exchange)
    for org in state.world.load.budgets:
        state.ledgers.expect_nothing_held(org)
