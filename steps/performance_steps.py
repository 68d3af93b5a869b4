"""Performance: a bounded Locust load run on the chat path, then the ledger checked org by org."""
import json
import sys
from pathlib import Path

from behave import given, then, when

from support.client import evidence
from support.harness.assertions import expect_equal, expect_status, expect_true
from support.database.conservation import account_ledger, reconciliation
from support.stress.load import LoadKey, LoadRefused, run_chat_load
from support.harness.money import micros, usd

MAX_REQUESTS = 20_000  # the count bound of a load run, whatever its duration


@given("these orgs, each with credit, a budget and an API key:")
def orgs_with_budgets(context):
    context.load_orgs = {}
    for row in context.table:
        org, owner = row["org"], f"{row['org']} Owner"
        budget = None if row["budget"].strip() == "none" else micros(row["budget"])
        context.platform.org_with_owner(org, owner, budget_micros=budget)
        context.platform.mint(org, micros(row["credit"]))
        expect_status(context.platform.issue_key(owner, org, row["key"]), 201, f"{owner} issuing {row['key']!r}")
        context.load_orgs[org] = budget


@when('{users:d} simulated users send chat completions to "{model}" with those keys for {seconds:d} seconds')
def load_run(context, users, model, seconds):
    keys = [LoadKey(record.org, record.secret) for record in context.world.keys.values()
            if record.org in context.load_orgs]
    prompt_price, completion_price = context.model_prices[model]
    try:
        context.load = run_chat_load(context.endpoints.base_url, keys, model=context.world.models[model],
                                     prompt_price_per_1k=prompt_price, completion_price_per_1k=completion_price,
                                     users=users, seconds=seconds, max_requests=MAX_REQUESTS)
    except LoadRefused as reason:
        context.scenario.skip(str(reason))


@then("the run's throughput and latency are attached to the report")
def figures_attached(context):
    figures = context.load
    evidence.attach_json("load run figures", figures)
    latency = figures["latency_ms"]
    line = (f"load run: {figures['requests']} requests in {figures['seconds']} s = {figures['requests_per_second']} "
            f"req/s; latency ms p50 {latency['p50']} p95 {latency['p95']} p99 {latency['p99']} max {latency['max']}; "
            f"by status {figures['by_status']}")
    sys.__stdout__.write(line + "\n")  # past behave's output capture: the figures belong in the run's log
    sys.__stdout__.flush()
    folder = Path(context.config_suite.artifacts_dir) / "load"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"chat-load-{context.config_suite.run_id}{context.config_suite.worker}.json").write_text(
        json.dumps(figures, indent=2))
    starved = [org for org, count in figures["answered_by_org"].items() if count == 0]
    expect_true(figures["requests"] > 0 and not starved, f"Expected every org's key to have completions answered "
                f"during the run, but these got none: {starved or 'no request at all'}; {line}")


@then("every answer was a completion or a budget refusal, never a server error")
def only_completions_and_refusals(context):
    statuses = context.load["by_status"]
    unexpected = {status: count for status, count in statuses.items() if status not in ("200", "402")}
    expect_true(not unexpected, f"Expected only 200 and 402 answers, but also saw {unexpected}; examples: "
                f"{context.load['unexpected'][:5]}")


def _ledger(context, org: str):
    return account_ledger(context.db, context.world.org(org).account_id)


@then("no org spent more than its budget")
def within_budgets(context):
    over = {}
    for org, budget in context.load_orgs.items():
        ledger = _ledger(context, org)
        if budget is not None and ledger.spent + ledger.held > budget:
            over[org] = f"spent {usd(ledger.spent)} + held {usd(ledger.held)} over a budget of {usd(budget)}"
    expect_true(not over, f"Expected every org within its budget, but: {over}")
    refused = {org: context.load["refused_by_org"][org] for org, budget in context.load_orgs.items() if budget}
    expect_true(any(refused.values()), f"Expected the run to reach at least one budget (402 refusals), so the limit "
                f"was tested under load, but the budgeted orgs had none: {refused}")


@then("each org's spend equals the sum of what its answered completions cost")
def spend_equals_charges(context):
    for org in context.load_orgs:
        ledger = _ledger(context, org)
        charged = context.load["charged_micros_by_org"][org]
        expect_equal(ledger.spent, charged, f"the spend of {org!r} against the sum of its "
                     f"{context.load['answered_by_org'][org]} answered completions' usage at the model's price")
        expect_equal(len(ledger.by_status("finalized")), context.load["answered_by_org"][org],
                     f"the finalized reservations of {org!r} against its answered completions")


@then("the platform's reconciliation balances with nothing left on hold")
def reconciles_nothing_held(context):
    exchange = expect_status(reconciliation(context.api, context.keys), 200, "the reconciliation report")
    body = exchange.json()
    expect_true(body.get("balanced") is True, f"Expected the reconciliation to balance after the load run, but it "
                f"reported {body.get('discrepancies')}", exchange)
    for org in context.load_orgs:
        ledger = _ledger(context, org)
        expect_equal(ledger.held, 0, f"the amount still held on {org!r}'s account after the run")
        problems = ledger.problems()
        expect_true(not problems, f"Expected {org!r}'s ledger to be sound, but: {problems}")
