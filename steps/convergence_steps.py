"""Declarative configuration: the operator commits to git, the gateway converges, drift is reported or healed.

Read like Argo CD's e2e DSL (commit, sync, expect a status until a deadline), in business words. What "Synced at
that commit" means with scenarios running in parallel is explained in support/domain/declarations.py."""
import re

from behave import given, then, when

from support.client.assertions import expect_equal, expect_status, expect_true, problem_field
from support.domain.declarations import DEFAULT_PRICES
from support.harness.money import micros, usd
from support.harness.waits import wait_until

SETTLE_SECONDS = 15  # how long a Given waits for its own declaration to be applied


def quoted(text: str) -> list[str]:
    return re.findall(r'"([^"]+)"', text)


def _declare_model(state, model: str, backends: str) -> None:
    """Commit the model to git, and let the chat steps know it (requests, backends, charges)."""
    declared = state.routing.adopt(model, quoted(backends), DEFAULT_PRICES)
    state.convergence.declare_model(model, list(declared.backends.values()), declared.prices)


def _in_force(declarations) -> None:
    """The gateway syncs, and the scenario's last commit is Synced (what a Given's declaration needs)."""
    declarations.sync_and_settle()
    declarations.await_commit(SETTLE_SECONDS, synced=True)


# ---- Given: a declaration already in force ------------------------------------------------------------------------

# (longer sentence first: behave takes the first definition that matches)
@given('"{org}" is declared in git with a budget of {amount} and self-heal on')
def org_declared_self_healing(context, org, amount):
    declarations = context.state.convergence
    declarations.declare_org(org, micros(amount), self_heal=True)
    _in_force(declarations)


@given('"{org}" is declared in git with a budget of {amount}')
def org_declared(context, org, amount):
    declarations = context.state.convergence
    declarations.declare_org(org, micros(amount))
    _in_force(declarations)


@given('the model "{model}" is declared in git, routed to its {backends}')
def model_declared(context, model, backends):
    state = context.state
    _declare_model(state, model, backends)
    _in_force(state.convergence)


@given('the operator has committed a budget of {amount} for "{org}", and the gateway has applied it')
def budget_committed_and_applied(context, amount, org):
    declarations = context.state.convergence
    declarations.commit_budget(org, micros(amount))
    _in_force(declarations)


@given('{person} holds the API key "{key}" for "{org}"')
def holds_key(context, person, key, org):
    expect_status(context.state.platform.issue_key(person, org, key), 201, f"{person} issuing the API key {key!r}")


# ---- commits and changes made outside git (already made), and the triggers that sync them -------------------------

@given('the operator has committed a budget of {amount} for "{org}" together with {problem} for "{other}"')
def commit_budget_and_broken_file(context, amount, org, problem, other):
    state = context.state
    state.world.declared.broken_problem, state.world.declared.broken_org = problem, other
    state.convergence.commit_budget_with_broken_file(org, micros(amount), problem, other)


@given('the operator has committed a budget of {amount} for "{org}"')
def commit_budget(context, amount, org):
    context.state.convergence.commit_budget(org, micros(amount))


@given('the operator has removed "{org}" from git')
def remove_org(context, org):
    context.state.convergence.remove_org(org)


@given('the operator has rerouted "{model}" in git to its {backends}')
def declare_model(context, model, backends):
    _declare_model(context.state, model, backends)


@given('{person} has raised the budget of "{org}" to {amount} through the API')
def raise_budget_through_api(context, person, org, amount):
    state = context.state
    state.world.last.answer = state.platform.set_budget(person, org, micros(amount))
    expect_status(state.world.last.answer, 200, f"{person} setting the budget of {org!r} to {amount}")


@when("the gateway syncs")
def gateway_syncs(context):
    state = context.state
    state.world.declared.status = state.convergence.sync_and_settle()


@when("the reconcile interval passes")
@given("the reconcile interval has passed")
def reconcile_interval_passes(context):
    context.state.convergence.await_interval_pass()


# ---- Then: status, drift, effective state -------------------------------------------------------------------------

@then("the configuration is Synced at that commit within {seconds:d} seconds")
def synced_at_commit(context, seconds):
    context.state.convergence.await_commit(seconds, synced=True)


@then("the gateway has applied that commit within {seconds:d} seconds")
def applied_commit(context, seconds):
    context.state.convergence.await_commit(seconds, synced=False)


@then('the drift report lists "{org}" budget declared {declared}, effective {effective}')
def drift_lists_budget(context, org, declared, effective):
    decl = context.state.convergence
    entry, status = decl.drift_entry("org", decl.slug(org), "budget_micros", timeout=5)
    expect_equal((entry["declared"], entry["effective"]), (micros(declared), micros(effective)),
                 f"the declared and effective budget of {org!r} in the drift report", status.exchange)
    expect_equal(status.body["status"], "OutOfSync", "the configuration status while drift is reported",
                 status.exchange)


@then('the drift report lists "{org}" as removed from git but still present')
def drift_lists_removed(context, org):
    decl = context.state.convergence
    entry, status = decl.drift_entry("org", decl.slug(org), "exists", timeout=5)
    expect_equal((entry["declared"], entry["effective"]), (False, True),
                 f"the drift entry for {org!r} (declared in git, present in the gateway)", status.exchange)


@then('the budget in force for "{org}" is {amount}')
def budget_in_force(context, org, amount):
    exchange = context.state.platform.usage(org)
    expect_equal(exchange.json()["limit_micros"], micros(amount), f"the budget limit of {org!r}", exchange)


@then('within {seconds:d} seconds the budget in force for "{org}" is back to {amount}')
def budget_back(context, seconds, org, amount):
    platform = context.state.platform
    expected = micros(amount)
    last = wait_until(f"the budget limit of {org!r} to be restored to {amount}", lambda: platform.usage(org),
                      lambda ex: ex.json()["limit_micros"] == expected, timeout=seconds,
                      describe=lambda ex: f"limit {usd(ex.json()['limit_micros'])} (request id {ex.request_id})")
    expect_equal(last.json()["limit_micros"], expected, f"the budget limit of {org!r}", last)


@then('the audit log of "{org}" shows the gateway restored its budget from {effective} to {declared}')
def audit_shows_correction(context, org, effective, declared):
    events = context.state.platform.audit(org, action="config.drift_corrected")
    wanted = {"field": "budget_micros", "declared": micros(declared), "effective": micros(effective)}
    matches = [e for e in events if {k: (e.get("details") or {}).get(k) for k in wanted} == wanted]
    expect_true(bool(matches), f"Expected a config.drift_corrected event for {org!r} with {wanted}, but the log "
                f"held: {[(e['actor'], e.get('details')) for e in events]}")
    expect_equal(matches[0]["actor"]["type"], "system", "the actor of the drift correction")


@then('no drift correction is recorded for "{org}"')
def no_correction(context, org):
    events = context.state.platform.audit(org, action="config.drift_corrected")
    expect_true(not events, f"Expected no config.drift_corrected event for {org!r} with self-heal off, but found "
                f"{[e.get('details') for e in events]}")


@then('the gateway keeps the last good revision and reports being out of sync, its error pointing at the broken '
      'line of "{org}"\'s file')
def keeps_last_good(context, org):
    state = context.state
    decl = state.convergence
    broken = decl.last_commit
    status = decl.await_status(f"a reconcile pass to read the broken commit {broken[:12]}",
                               lambda s: decl.seen(s, broken), timeout=5)
    body = status.body
    expect_true(not decl.applied(status, broken), f"Expected the broken commit {broken[:12]} not to be applied, "
                f"but the applied revision is {body['revision']}.\n{status.exchange.summary()}")
    expect_true(decl.applied(status, decl.last_good_commit), f"Expected the applied revision to still contain the "
                f"last good commit {decl.last_good_commit[:12]}, but it is {body['revision']}.\n"
                f"{status.exchange.summary()}")
    expect_equal(body["status"], "OutOfSync", f"the configuration status while its head {broken[:12]} cannot be "
                 f"applied", status.exchange)
    where = f"{decl.org_path(org)}, line {decl.broken_line(state.world.declared.broken_problem)}"
    expect_true(where in (body.get("error") or ""), f"Expected the error to name {where!r}, but it was "
                f"{body.get('error')!r}.\n{status.exchange.summary()}")


@then("the request is {verdict} under the budget in git")
def request_under_budget(context, verdict):
    response = context.state.world.answer()
    if verdict == "answered":
        expect_status(response, 200, "the chat completion under the budget committed in git")
    elif verdict == "refused":
        expect_status(response, 402, "the chat completion over the budget committed in git")
        expect_equal(problem_field(response, "code"), "budget_exceeded", "the refusal's code", response)
    else:
        raise AssertionError(f"Unknown verdict {verdict!r}: use answered or refused")
