"""Logging in, refreshing, forged tokens and signing-key rotation."""
from behave import given, then, when

from support.harness import step_types  # noqa: F401  (registers {name:Name}, {pronoun:Pronoun}, ...)
from support.harness.assertions import expect_equal, expect_status, expect_true, problem_field
from support.domain.identity import Identity, Rotation, expect_unauthenticated, for_scenario


# ---- logging in ----------------------------------------------------------------------------------------------

@given("{name:Name} has logged in")
def has_logged_in(context, name):
    context.platform.login(name)


@then('with {pronoun:Pronoun} access token the gateway knows {name:Name} as the {role} of "{org}"')
def knows_as(context, pronoun, name, role, org):
    identity = for_scenario(context)
    person = context.world.person(name)
    exchange = identity.me(person.access_token)
    expect_status(exchange, 200, f"{name} asking who she is with her access token")
    body = exchange.json()
    expect_equal(body.get("email"), person.email, "the email /auth/me names", exchange)
    roles = {o.get("slug"): o.get("role") for o in body.get("orgs") or []}
    expect_equal(roles.get(context.world.org(org).slug), role, f"{name}'s role in {org!r} as /auth/me lists it",
                 exchange)


@when("{name:Name} tries to log in with a wrong password")
def wrong_password(context, name):
    person = context.platform.person(name)
    context.failed_logins = getattr(context, "failed_logins", [])
    context.failed_logins.append(for_scenario(context).login_with(person.email, person.password + "-wrong"))


@when("someone tries to log in with an email nobody uses")
def unknown_email(context):
    context.failed_logins = getattr(context, "failed_logins", [])
    context.failed_logins.append(for_scenario(context).login_with(context.ns.email("Nobody"), "pw-whatever-123"))


@then("both logins are refused as unauthenticated with the same answer")
def same_refusal(context):
    first, second = context.failed_logins
    for exchange in (first, second):
        expect_unauthenticated(exchange, "a failed login")

    def shape(exchange):
        return {k: v for k, v in exchange.json().items() if k != "request_id"}
    expect_equal(shape(second), shape(first), "the refusal for an unknown email (it must not differ from the one "
                 f"for a wrong password [request id {first.request_id}])", second)


@then("both refusals are audited as denied")
def both_audited(context):
    identity = for_scenario(context)
    for exchange in context.failed_logins:
        identity.expect_denial_audited(exchange, action="auth.login")


# ---- refreshing ----------------------------------------------------------------------------------------------

@when("{name:Name} refreshes {pronoun:Pronoun} tokens")
def refreshes(context, name, pronoun):
    person = context.world.person(name)
    context.previous_tokens = (person.access_token, person.refresh_token)
    context.response = for_scenario(context).refresh(name)
    expect_status(context.response, 200, f"{name} refreshing her tokens")


@when("{name:Name}'s previous refresh token is presented again")
def replays_refresh(context, name):
    context.response = for_scenario(context).api.post(
        "/auth/refresh", json_body={"refresh_token": context.previous_tokens[1]})


@when("{name:Name} refreshes {pronoun:Pronoun} tokens with the newest refresh token")
def refreshes_with_newest(context, name, pronoun):
    context.response = for_scenario(context).refresh(name)


@when("{name:Name}'s access token is presented as a refresh token")
def access_as_refresh(context, name):
    token = context.platform.access_token(name)
    context.response = for_scenario(context).api.post("/auth/refresh", json_body={"refresh_token": token})


@then("{name:Name} holds a new access token and a new refresh token")
def holds_new_pair(context, name):
    person = context.world.person(name)
    old_access, old_refresh = context.previous_tokens
    expect_true(person.access_token != old_access and person.refresh_token != old_refresh,
                "Expected the refresh to hand out a new access token and a new refresh token, but at least one came "
                "back unchanged", context.response)


@then("the refresh is refused as unauthenticated because the token was already used")
def refused_reused(context):
    expect_unauthenticated(context.response, "presenting a used refresh token", "already used")


@then("the refresh is refused as unauthenticated")
def refused_refresh(context):
    expect_unauthenticated(context.response, "a refresh with something that is not a refresh token")


# ---- forged tokens -------------------------------------------------------------------------------------------

@given("the gateway accepts a copy of {name:Name}'s access token that the suite re-signed with the trusted key")
def control_accepted(context, name):
    identity = for_scenario(context)
    exchange = identity.me(identity.resigned(name))
    expect_status(exchange, 200, f"the control: {name}'s claims re-signed with the key from the keys folder (if this "
                  f"is refused, the gateway no longer trusts that key and no forgery below would prove anything)")
    expect_equal(exchange.json().get("id"), context.world.person(name).user_id, "the user the control token names",
                 exchange)


@when('a caller presents {name:Name}\'s access token forged as "{forgery}"')
def presents_forgery(context, name, forgery):
    identity = for_scenario(context)
    context.forgery = forgery
    context.response = identity.me(identity.forged(name, forgery))


@then('the caller is refused as unauthenticated, the gateway saying "{why}"')
def caller_refused(context, why):
    expect_unauthenticated(context.response, f"a token forged as {context.forgery!r}", why)


@then("the refusal is audited as denied with the request id the caller sent")
def refusal_audited(context):
    for_scenario(context).expect_denial_audited(context.response, action="auth.user_token")


# ---- signing-key rotation -------------------------------------------------------------------------------------

def _rotation(context) -> Rotation:
    rotation = getattr(context, "rotation", None)
    if rotation is None:
        context.rotation = rotation = Rotation(for_scenario(context))
        context.add_cleanup(rotation.restore)
        context.signing_kid = rotation.original
    return rotation


def _kid_of_a_fresh_token(context) -> tuple[str, object]:
    """Log the scenario's owner in afresh (without replacing the tokens she holds) and read the new token's kid."""
    identity = for_scenario(context)
    name = context.platform.owner_of(next(iter(context.world.orgs)))
    person = context.world.person(name)
    exchange = identity.login_with(person.email, person.password)
    expect_status(exchange, 200, f"{name} logging in afresh")
    token = exchange.json()["access_token"]
    context.platform.published_keys.verify(token, f"a token issued to {name} [request id {exchange.request_id}]")
    return Identity.kid_of(token), exchange


@given("the gateway signs with a key rotated in for this scenario")
def rotated_in(context):
    context.signing_kid = _rotation(context).rotate_in_new_key()


@given("the platform has rotated to a newer key and retired the previous one")
def rotated_and_retired(context):
    rotation = _rotation(context)
    context.retired_kid = context.signing_kid
    context.signing_kid = rotation.rotate_in_new_key()
    rotation.retire(context.retired_kid)


@when("the platform publishes a new signing key")
def publishes(context):
    rotation = _rotation(context)
    context.previous_kid = context.signing_kid
    context.new_kid = rotation.publish()


@when("the platform makes the new key the signing key")
def makes_signing(context):
    _rotation(context).activate(context.new_kid)
    context.signing_kid = context.new_kid


@when("the platform retires the previous key")
def retires_previous(context):
    _rotation(context).retire(context.previous_kid)


@when("the platform tries to retire the key that signs")
def tries_retire_active(context):
    _rotation(context)
    context.response = for_scenario(context).retire_signing_key(context.signing_kid)


@when("the platform tries to make the retired key the signing key again")
def tries_reactivate(context):
    _rotation(context)
    context.response = for_scenario(context).activate_signing_key(context.retired_kid)


@then("the new key is among the published signing keys")
def new_key_published(context):
    kids, exchange = for_scenario(context).published_kids()
    expect_true(context.new_kid in kids, f"Expected the new key {context.new_kid} to be published before it signs, "
                f"but the published keys were {sorted(kids)}", exchange)


@then("the previous key is still published")
def previous_published(context):
    kids, exchange = for_scenario(context).published_kids()
    expect_true(context.previous_kid in kids, f"Expected the previous key {context.previous_kid} to stay published "
                f"while its tokens are valid, but the published keys were {sorted(kids)}", exchange)


@then("the previous key is no longer published")
def previous_unpublished(context):
    kids, exchange = for_scenario(context).published_kids()
    expect_true(context.previous_kid not in kids, f"Expected the retired key {context.previous_kid} to be gone from "
                f"the published keys, but they were {sorted(kids)}", exchange)


@then("tokens issued now are still signed by the previous key")
@then("tokens issued now are still signed by that key")
@then("tokens issued now are still signed by the newer key")
@then("tokens issued now are signed by the new key")
def signed_by_current(context):
    expected = context.signing_kid
    kid, exchange = _kid_of_a_fresh_token(context)
    expect_equal(kid, expected, "the key id of a token issued now", exchange)


@then("{name:Name}'s earlier access token is still accepted")
def earlier_accepted(context, name):
    exchange = for_scenario(context).me(context.world.person(name).access_token)
    expect_status(exchange, 200, f"{name}'s access token signed by the previous key {context.previous_kid}")


@then('{name:Name}\'s access token is refused as unauthenticated, the gateway saying "{why}"')
def access_refused(context, name, why):
    exchange = for_scenario(context).me(context.world.person(name).access_token)
    expect_unauthenticated(exchange, f"{name}'s access token signed by the retired key {context.previous_kid}", why)


@then("{name:Name}'s refresh token is refused too")
def refresh_refused(context, name):
    exchange = for_scenario(context).refresh(name)
    expect_unauthenticated(exchange, f"{name}'s refresh token signed by the retired key {context.previous_kid}")


@then("{name:Name} can log in again and is served")
def logs_in_again(context, name):
    context.platform.login(name)
    exchange = for_scenario(context).me(context.world.person(name).access_token)
    expect_status(exchange, 200, f"{name}'s new access token after the rotation")


@then("the platform is told the key still signs")
def told_still_signs(context):
    expect_status(context.response, 409, "retiring the key that signs")
    expect_true("signs" in str(problem_field(context.response, "detail")),
                "Expected the refusal to say the key still signs", context.response)


@then("the platform is told the key is retired")
def told_retired(context):
    expect_status(context.response, 409, "making a retired key sign again")
    expect_true("retired" in str(problem_field(context.response, "detail")),
                "Expected the refusal to say the key is retired", context.response)
