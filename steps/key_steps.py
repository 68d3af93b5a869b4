"""API keys."""
from behave import given, then, when

from support.client.assertions import expect_equal, expect_status, expect_true
from support.domain.identity import expect_unauthenticated
from support.harness import step_types  # noqa: F401  (registers {name:Name}, {api:Api}, ...)


@when('{person} issues the API key "{key}" for "{org}"')
def issues_key(context, person, key, org):
    state = context.state
    state.world.last.answer = state.platform.issue_key(person, org, key)
    expect_status(state.world.last.answer, 201, f"{person} issuing the API key {key!r}")


# ---- a key's lifecycle: shown once, hashed at rest, refused at once when revoked --------------------------------

@given('{person:Name} has issued the API key "{key}" for "{org}"')
def has_issued_key(context, person, key, org):
    expect_status(context.state.platform.issue_key(person, org, key), 201, f"{person} issuing the API key {key!r}")


@given('the key "{key}" is accepted for model traffic')
def key_accepted(context, key):
    expect_status(context.state.identity.use_key(key), 200, f"the key {key!r} asking for the models")


@when('{person:Name} lists the API keys of "{org}"')
def lists_keys(context, person, org):
    state = context.state
    state.world.last.answer = state.identity.list_keys(person, org)
    expect_status(state.world.last.answer, 200, f"{person} listing the API keys of {org!r}")


@when('{person:Name} revokes the key "{key}" of "{org}"')
def revokes_key(context, person, key, org):
    state = context.state
    state.world.last.answer = state.identity.revoke_key(person, org, key)
    expect_status(state.world.last.answer, 200, f"{person} revoking the key {key!r}")


@then('the key "{key}" is listed by its name and prefix, without its secret')
def listed_without_secret(context, key):
    world = context.state.world
    record, answer = world.key(key), world.answer()
    listed = [k for k in answer.json().get("keys", []) if k.get("id") == record.id]
    expect_true(len(listed) == 1, f"Expected the key {key!r} ({record.id}) in the list once", answer)
    entry = listed[0]
    expect_equal((entry.get("name"), entry.get("prefix")), (key, record.prefix), "the listed name and prefix", answer)
    expect_true("key" not in entry and "secret" not in entry, f"Expected no secret field in the listed key, but it "
                f"had the fields {sorted(entry)}", answer)


@then('the secret of "{key}" appears nowhere in the answer')
def secret_not_in_answer(context, key):
    world = context.state.world
    expect_true(world.key(key).secret not in world.answer().text,
                f"Expected the secret of {key!r} nowhere in the answer, but it is in it (masked below)", world.answer())


@then('the secret of "{key}" appears nowhere in the audit log of "{org}"')
def secret_not_in_audit(context, key, org):
    state = context.state
    exchange = state.audit.org_page(org, limit=1000)
    expect_status(exchange, 200, f"reading the audit log of {org!r}")
    expect_true(len(exchange.json().get("events", [])) > 0, "Expected the audit log to hold events", exchange)
    expect_true(state.world.key(key).secret not in exchange.text,
                f"Expected the secret of {key!r} nowhere in the audit log, but it is in it", exchange)


@then('the gateway\'s database holds no copy of the secret of "{key}"')
def secret_not_stored(context, key):
    state = context.state
    record = state.world.key(key)
    holding = state.db.columns_holding(record.secret)
    issued = next((e for e in state.api.exchanges if e.method == "POST" and record.id in (e.text or "")), None)
    expect_true(not holding, f"Expected the gateway to keep only a hash of the secret of {key!r} ({record.prefix}...), "
                f"but the secret itself is stored in {holding}", issued)
    expect_true(bool(state.db.columns_holding(record.id)), f"Expected the key {record.id} itself in the database "
                "(otherwise this check looked in the wrong place)")


@then('the key "{key}" is refused as unauthenticated on its very next request')
def refused_at_once(context, key):
    expect_unauthenticated(context.state.identity.use_key(key), f"the revoked key {key!r}", "revoked")


@then('the key "{key}" is listed as revoked')
def listed_revoked(context, key):
    state = context.state
    record = state.world.key(key)
    exchange = state.identity.list_keys(state.platform.owner_of(record.org), record.org)
    expect_status(exchange, 200, f"listing the API keys of {record.org!r}")
    listed = {k.get("id"): k for k in exchange.json().get("keys", [])}
    expect_true(bool((listed.get(record.id) or {}).get("revoked_at")), f"Expected the key {key!r} to be listed with "
                f"its revocation time, but it was listed as {listed.get(record.id)}", exchange)


@when("{credential} is presented to {api:Api}")
def presented_to(context, credential, api):
    state = context.state
    state.world.last.about = credential
    state.world.last.answer = state.identity.present(credential, api)


@then('it is refused as unauthenticated, the gateway saying "{why}"')
def credential_refused(context, why):
    world = context.state.world
    expect_unauthenticated(world.answer(), f"{world.last.about} presented where it does not belong", why)
