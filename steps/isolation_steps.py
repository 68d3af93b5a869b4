"""Tenant isolation: one org's identities probing another org."""
from behave import given, then, when

from support.harness import step_types  # noqa: F401  (registers {name:Name}, ...)
from support.harness.assertions import expect_equal, expect_status, expect_true
from support.domain.identity import for_scenario
from support.domain.tenancy import Tenancy, answer_shape

ANSWERS = {"not found": 404, "unauthenticated": 401}


def _tenancy(context) -> Tenancy:
    tenancy = getattr(context, "tenancy", None)
    if tenancy is None:
        context.tenancy = tenancy = Tenancy(for_scenario(context))
    return tenancy


@given('the org "{org}" with its owner "{owner}", an API key "{key}" and a pending reservation')
def org_with_things(context, org, owner, key):
    identity = for_scenario(context)
    context.platform.org_with_owner(org, owner)
    identity.key_for(org, key)
    identity.reservation_for(org)


@when("{prober:Name}'s {who} asks for {target:Name}'s {thing}")
def asks_for(context, prober, who, target, thing):
    tenancy = _tenancy(context)
    probe, twin = tenancy.probes(prober, who, target, thing)
    credential = tenancy.credential(prober, who)
    context.probe = (probe, tenancy.send(probe, credential))
    context.twin = (twin, tenancy.send(twin, credential))
    context.probe_thing = f"{prober}'s {who} asking for {target}'s {thing}"


@then("the answer is {answer}, exactly as for {thing} that does not exist")
def same_as_nothing(context, answer, thing):
    expect_true(answer in ANSWERS, f"The answer {answer!r} is none of {sorted(ANSWERS)}")
    (probe, exchange), (twin, twin_exchange) = context.probe, context.twin
    expect_status(exchange, ANSWERS[answer], context.probe_thing)
    expect_equal(answer_shape(exchange, probe.probed), answer_shape(twin_exchange, twin.probed),
                 f"what {context.probe_thing} learns (status, media type and body without the request id, with the "
                 f"probed id shown as <probed>), compared with the same question about {thing} that does not exist "
                 f"[request id {twin_exchange.request_id}]", exchange)


@then("the probe is audited as denied")
def probe_audited(context):
    for_scenario(context).expect_denial_audited(context.probe[1])


@then("{target:Name}'s members, API key and reservation are as they were")
def untouched(context, target):
    identity, tenancy = for_scenario(context), _tenancy(context)
    owner = context.platform.owner_of(target)
    expect_equal(identity.members(target), {context.world.person(owner).email: "owner"},
                 f"the members of {target!r} after the probe")
    key = tenancy.key_of(target)
    expect_status(identity.use_key(key), 200, f"{target}'s key {key!r} after the probe")
    exchange = tenancy.read(target, "owner", "reservation")
    expect_status(exchange, 200, f"{owner} reading {target}'s reservation after the probe")
    expect_equal(exchange.json().get("status"), "pending", f"the state of {target}'s reservation", exchange)


@when("{org:Name}'s owner and API key ask for {own:Name}'s own members, API keys, usage, audit log and reservation")
def reads_own(context, org, own):
    tenancy = _tenancy(context)
    context.own_reads = {f"owner: {thing}": tenancy.read(own, "owner", thing)
                         for thing in ("members", "API keys", "usage", "audit log", "reservation")}
    context.own_reads["API key: reservation"] = tenancy.read(own, "API key", "reservation")
    context.own_org = own


@then("every one of those answers is {own:Name}'s own")
def answers_are_own(context, own):
    identity = for_scenario(context)
    record = context.world.org(own)
    owner_email = context.world.person(context.platform.owner_of(own)).email
    expected = {"owner: members": lambda b: owner_email in {m.get("email") for m in b.get("members", [])},
                "owner: API keys": lambda b: {k.get("id") for k in b.get("keys", [])} == {
                    k.id for k in context.world.keys.values() if k.org == own},
                "owner: usage": lambda b: b.get("org") in (None, record.slug) and "spent_micros" in b,
                "owner: audit log": lambda b: bool(b.get("events")) and all(e.get("org") == record.slug
                                                                            for e in b["events"]),
                "owner: reservation": lambda b: b.get("id") == identity.reservation_for(own),
                "API key: reservation": lambda b: b.get("id") == identity.reservation_for(own)}
    for what, exchange in context.own_reads.items():
        expect_status(exchange, 200, f"{own}'s {what}")
        expect_true(expected[what](exchange.json()), f"Expected {own}'s {what} to show {own}'s own data", exchange)
