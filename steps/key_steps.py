"""API keys."""
import secrets

from behave import given, then, when

from support.harness import step_types  # noqa: F401  (registers {name:Name}, {api:Api}, ...)
from support.harness.assertions import expect_equal, expect_status, expect_true
from support.domain.identity import columns_holding, expect_unauthenticated, for_scenario


@when('{person} issues the API key "{key}" for "{org}"')
def issues_key(context, person, key, org):
    context.response = context.platform.issue_key(person, org, key)
    expect_status(context.response, 201, f"{person} issuing the API key {key!r}")


# ---- a key's lifecycle: shown once, hashed at rest, refused at once when revoked --------------------------------

@given('{person:Name} has issued the API key "{key}" for "{org}"')
def has_issued_key(context, person, key, org):
    expect_status(context.platform.issue_key(person, org, key), 201, f"{person} issuing the API key {key!r}")


@given('the key "{key}" is accepted for model traffic')
def key_accepted(context, key):
    expect_status(for_scenario(context).use_key(key), 200, f"the key {key!r} asking for the models")


@when('{person:Name} lists the API keys of "{org}"')
def lists_keys(context, person, org):
    context.response = for_scenario(context).list_keys(person, org)
    expect_status(context.response, 200, f"{person} listing the API keys of {org!r}")


@when('{person:Name} revokes the key "{key}" of "{org}"')
def revokes_key(context, person, key, org):
    context.response = for_scenario(context).revoke_key(person, org, key)
    expect_status(context.response, 200, f"{person} revoking the key {key!r}")


@then('the key "{key}" is listed by its name and prefix, without its secret')
def listed_without_secret(context, key):
    record = context.world.key(key)
    listed = [k for k in context.response.json().get("keys", []) if k.get("id") == record.id]
    expect_true(len(listed) == 1, f"Expected the key {key!r} ({record.id}) in the list once", context.response)
    entry = listed[0]
    expect_equal((entry.get("name"), entry.get("prefix")), (key, record.prefix), "the listed name and prefix",
                 context.response)
    expect_true("key" not in entry and "secret" not in entry, f"Expected no secret field in the listed key, but it "
                f"had the fields {sorted(entry)}", context.response)


@then('the secret of "{key}" appears nowhere in the answer')
def secret_not_in_answer(context, key):
    expect_true(context.world.key(key).secret not in context.response.text,
                f"Expected the secret of {key!r} nowhere in the answer, but it is in it (masked below)",
                context.response)


@then('the secret of "{key}" appears nowhere in the audit log of "{org}"')
def secret_not_in_audit(context, key, org):
    exchange = context.api.get(f"/orgs/{context.world.org(org).slug}/audit?limit=1000",
                               token=context.platform.access_token(context.platform.owner_of(org)))
    expect_status(exchange, 200, f"reading the audit log of {org!r}")
    expect_true(len(exchange.json().get("events", [])) > 0, "Expected the audit log to hold events", exchange)
    expect_true(context.world.key(key).secret not in exchange.text,
                f"Expected the secret of {key!r} nowhere in the audit log, but it is in it", exchange)


@then('the gateway\'s database holds no copy of the secret of "{key}"')
def secret_not_stored(context, key):
    record = context.world.key(key)
    holding = columns_holding(context.db, record.secret)
    expect_true(not holding, f"Expected the gateway to keep only a hash of the secret of {key!r} ({record.prefix}...), "
                f"but the secret itself is stored in {holding}")
    expect_true(bool(columns_holding(context.db, record.id)), f"Expected the key {record.id} itself in the database "
                "(otherwise this check looked in the wrong place)")


@then('the key "{key}" is refused as unauthenticated on its very next request')
def refused_at_once(context, key):
    expect_unauthenticated(for_scenario(context).use_key(key), f"the revoked key {key!r}", "revoked")


@then('the key "{key}" is listed as revoked')
def listed_revoked(context, key):
    record = context.world.key(key)
    exchange = for_scenario(context).list_keys(context.platform.owner_of(record.org), record.org)
    expect_status(exchange, 200, f"listing the API keys of {record.org!r}")
    listed = {k.get("id"): k for k in exchange.json().get("keys", [])}
    expect_true(bool((listed.get(record.id) or {}).get("revoked_at")), f"Expected the key {key!r} to be listed with "
                f"its revocation time, but it was listed as {listed.get(record.id)}", exchange)


@when("{credential} is presented to {api:Api}")
def presented_to(context, credential, api):
    identity = for_scenario(context)
    if credential.startswith('the key "'):
        token = context.world.key(credential.split('"')[1]).secret
    elif credential.endswith("'s access token"):
        token = context.platform.access_token(credential[: -len("'s access token")])
    elif credential == "a key that was never issued":
        token = "tg_" + secrets.token_urlsafe(32)
    else:
        raise AssertionError(f"No credential {credential!r} in this step's vocabulary")
    path = "/v1/models" if api == "the model API" else f"/orgs/{context.world.org(next(iter(context.world.orgs))).slug}/keys"
    context.response = identity.api.get(path, token=token)
    context.credential = credential


@then('it is refused as unauthenticated, the gateway saying "{why}"')
def credential_refused(context, why):
    expect_unauthenticated(context.response, f"{context.credential} presented where it does not belong", why)
