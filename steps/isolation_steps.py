"""Tenant isolation: one org's identities probing another org."""
from behave import given, then, when

from support.client.assertions import expect_equal, expect_status, expect_true
from support.domain.tenancy import answer_shape
from support.harness import step_types  # noqa: F401  (registers {name:Name}, ...)

ANSWERS = {"not found": 404, "unauthenticated": 401}


@given('the org "{org}" with its owner "{owner}", an API key "{key}" and a pending reservation')
def org_with_things(context, org, owner, key):
    state = context.state
    state.platform.org_with_owner(org, owner)
    state.identity.key_for(org, key)
    state.identity.reservation_for(org)


@when("{prober:Name}'s {who} asks for {target:Name}'s {thing}")
def asks_for(context, prober, who, target, thing):
    state = context.state
    probing = state.world.probing
    probing.probe, probing.twin = state.tenancy.probes(prober, who, target, thing)
    credential = state.tenancy.credential(prober, who)
    probing.answer = state.tenancy.send(probing.probe, credential)
    probing.twin_answer = state.tenancy.send(probing.twin, credential)
    probing.described = f"{prober}'s {who} asking for {target}'s {thing}"


@then("the answer is {answer}, exactly as for {thing} that does not exist")
def same_as_nothing(context, answer, thing):
    expect_true(answer in ANSWERS, f"The answer {answer!r} is none of {sorted(ANSWERS)}")
    probing = context.state.world.probing
    expect_status(probing.answer, ANSWERS[answer], probing.described)
    expect_equal(answer_shape(probing.answer, probing.probe.probed),
                 answer_shape(probing.twin_answer, probing.twin.probed),
                 f"what {probing.described} learns (status, media type and body without the request id, with the "
                 f"probed id shown as <probed>), compared with the same question about {thing} that does not exist "
                 f"[request id {probing.twin_answer.request_id}]", probing.answer)


@then("the probe is audited as denied")
def probe_audited(context):
    state = context.state
    state.identity.expect_denial_audited(state.world.probing.answer)


@then("{target:Name}'s members, API key and reservation are as they were")
def untouched(context, target):
    state = context.state
    identity, tenancy = state.identity, state.tenancy
    owner = state.platform.owner_of(target)
    expect_equal(identity.members(target), {state.world.person(owner).email: "owner"},
                 f"the members of {target!r} after the probe")
    key = tenancy.key_of(target)
    expect_status(identity.use_key(key), 200, f"{target}'s key {key!r} after the probe")
    exchange = tenancy.read(target, "owner", "reservation")
    expect_status(exchange, 200, f"{owner} reading {target}'s reservation after the probe")
    expect_equal(exchange.json().get("status"), "pending", f"the state of {target}'s reservation", exchange)


@when("{org:Name}'s owner and API key ask for {own:Name}'s own members, API keys, usage, audit log and reservation")
def reads_own(context, org, own):
    state = context.state
    reads = {f"owner: {thing}": state.tenancy.read(own, "owner", thing)
             for thing in ("members", "API keys", "usage", "audit log", "reservation")}
    reads["API key: reservation"] = state.tenancy.read(own, "API key", "reservation")
    state.world.probing.own_reads = reads


@then("every one of those answers is {own:Name}'s own")
def answers_are_own(context, own):
    state = context.state
    identity, world = state.identity, state.world
    record = world.org(own)
    owner_email = world.person(state.platform.owner_of(own)).email
    expected = {"owner: members": lambda b: owner_email in {m.get("email") for m in b.get("members", [])},
                "owner: API keys": lambda b: {k.get("id") for k in b.get("keys", [])} == {
                    k.id for k in world.keys.values() if k.org == own},
                "owner: usage": lambda b: b.get("org") in (None, record.slug) and "spent_micros" in b,
                "owner: audit log": lambda b: bool(b.get("events")) and all(e.get("org") == record.slug
                                                                            for e in b["events"]),
                "owner: reservation": lambda b: b.get("id") == identity.reservation_for(own),
                "API key: reservation": lambda b: b.get("id") == identity.reservation_for(own)}
    for what, exchange in world.probing.own_reads.items():
        expect_status(exchange, 200, f"{own}'s {what}")
        expect_true(expected[what](exchange.json()), f"Expected {own}'s {what} to show {own}'s own data", exchange)
