"""Logging in, refreshing, forged tokens and signing-key rotation."""
from behave import given, then, when

from support.client.assertions import expect_equal, expect_status, expect_true, problem_field
from support.domain.identity import expect_unauthenticated
from support.harness import step_types  # noqa: F401  (registers {name:Name}, {pronoun:Pronoun}, ...)


# ---- logging in ----------------------------------------------------------------------------------------------

@given("{name:Name} has logged in")
def has_logged_in(context, name):
    context.state.platform.login(name)


@then('with {pronoun:Pronoun} access token the gateway knows {name:Name} as the {role} of "{org}"')
def knows_as(context, pronoun, name, role, org):
    state = context.state
    person = state.world.person(name)
    exchange = state.identity.me(person.access_token)
    expect_status(exchange, 200, f"{name} asking who she is with her access token")
    body = exchange.json()
    expect_equal(body.get("email"), person.email, "the email /auth/me names", exchange)
    roles = {o.get("slug"): o.get("role") for o in body.get("orgs") or []}
    expect_equal(roles.get(state.world.org(org).slug), role, f"{name}'s role in {org!r} as /auth/me lists it",
                 exchange)


@then("the acceptance answered with an access token and a refresh token, as a login does")
def acceptance_signed_in(context):
    answer = context.state.world.answer()
    body = answer.json() if answer.status == 200 else {}
    given = {field: type(body.get(field)).__name__ for field in ("access_token", "refresh_token", "expires_in")}
    expect_true(isinstance(body.get("access_token"), str) and isinstance(body.get("refresh_token"), str)
                and body.get("token_type") == "Bearer" and isinstance(body.get("expires_in"), int),
                f"Expected the acceptance to answer 200 with access_token and refresh_token (strings), token_type "
                f"Bearer and expires_in (an integer), as a login does, but it answered {answer.status} with "
                f"token_type {body.get('token_type')!r} and {given}", answer)


@when("{name:Name} tries to log in with a wrong password")
@given("{name:Name} has tried to log in with a wrong password")
def wrong_password(context, name):
    state = context.state
    person = state.platform.person(name)
    state.world.sessions.failed_logins.append(state.identity.login_with(person.email, person.password + "-wrong"))


@when("someone tries to log in with an email nobody uses")
def unknown_email(context):
    state = context.state
    state.world.sessions.failed_logins.append(state.identity.login_with(state.ns.email("Nobody"), "pw-whatever-123"))


@then("both logins are refused as unauthenticated with the same answer")
def same_refusal(context):
    first, second = context.state.world.sessions.failed_logins
    for exchange in (first, second):
        expect_unauthenticated(exchange, "a failed login")

    def shape(exchange):
        return {k: v for k, v in exchange.json().items() if k != "request_id"}
    expect_equal(shape(second), shape(first), "the refusal for an unknown email (it must not differ from the one "
                 f"for a wrong password [request id {first.request_id}])", second)


@then("both refusals are audited as denied")
def both_audited(context):
    state = context.state
    for exchange in state.world.sessions.failed_logins:
        state.identity.expect_denial_audited(exchange, action="auth.login")


# ---- refreshing ----------------------------------------------------------------------------------------------

@when("{name:Name} refreshes {pronoun:Pronoun} tokens")
@given("{name:Name} has refreshed {pronoun:Pronoun} tokens")
def refreshes(context, name, pronoun):
    state = context.state
    person = state.world.person(name)
    state.world.sessions.previous_tokens = (person.access_token, person.refresh_token)
    state.world.last.answer = state.identity.refresh(name)
    expect_status(state.world.last.answer, 200, f"{name} refreshing her tokens")


@when("{name:Name}'s previous refresh token is presented again")
def replays_refresh(context, name):
    state = context.state
    state.world.last.answer = state.identity.present_refresh_token(state.world.sessions.previous_tokens[1])


@given("{name:Name}'s previous refresh token has been presented again, and refused")
def has_replayed_refresh(context, name):
    state = context.state
    replay = state.identity.present_refresh_token(state.world.sessions.previous_tokens[1])
    expect_unauthenticated(replay, f"{name}'s previous refresh token presented again", "already used")


@when("{name:Name} refreshes {pronoun:Pronoun} tokens with the newest refresh token")
def refreshes_with_newest(context, name, pronoun):
    state = context.state
    state.world.last.answer = state.identity.refresh(name)


@when("{name:Name}'s access token is presented as a refresh token")
def access_as_refresh(context, name):
    state = context.state
    state.world.last.answer = state.identity.present_refresh_token(state.platform.access_token(name))


@then("{name:Name} holds a new access token and a new refresh token")
def holds_new_pair(context, name):
    state = context.state
    person = state.world.person(name)
    old_access, old_refresh = state.world.sessions.previous_tokens
    expect_true(person.access_token != old_access and person.refresh_token != old_refresh,
                "Expected the refresh to hand out a new access token and a new refresh token, but at least one came "
                "back unchanged", state.world.answer())


@then("the refresh is refused as unauthenticated because the token was already used")
def refused_reused(context):
    expect_unauthenticated(context.state.world.answer(), "presenting a used refresh token", "already used")


@then("the refresh is refused as unauthenticated")
def refused_refresh(context):
    expect_unauthenticated(context.state.world.answer(), "a refresh with something that is not a refresh token")


# ---- forged tokens -------------------------------------------------------------------------------------------

@given("the gateway accepts a copy of {name:Name}'s access token that the suite re-signed with the trusted key")
def control_accepted(context, name):
    state = context.state
    exchange = state.identity.me(state.identity.resigned(name))
    expect_status(exchange, 200, f"the control: {name}'s claims re-signed with the key from the keys folder (if this "
                  f"is refused, the gateway no longer trusts that key and no forgery below would prove anything)")
    expect_equal(exchange.json().get("id"), state.world.person(name).user_id, "the user the control token names",
                 exchange)


@when('a caller presents {name:Name}\'s access token forged as "{forgery}"')
def presents_forgery(context, name, forgery):
    state = context.state
    state.world.last.about = forgery
    state.world.last.answer = state.identity.me(state.identity.forged(name, forgery))


@then('the caller is refused as unauthenticated, the gateway saying "{why}"')
def caller_refused(context, why):
    world = context.state.world
    expect_unauthenticated(world.answer(), f"a token forged as {world.last.about!r}", why)


@then("the refusal is audited as denied with the request id the caller sent")
def refusal_audited(context):
    state = context.state
    state.identity.expect_denial_audited(state.world.answer(), action="auth.user_token")


# ---- signing-key rotation -------------------------------------------------------------------------------------

@given("the gateway signs with a key rotated in for this scenario")
def rotated_in(context):
    state = context.state
    state.world.signing.signing = state.rotation.rotate_in_new_key()


@given("the platform has rotated to a newer key and retired the previous one")
def rotated_and_retired(context):
    state = context.state
    rotation, signing = state.rotation, state.world.signing
    signing.retired = signing.signing
    signing.signing = rotation.rotate_in_new_key()
    rotation.retire(signing.retired)


@when("the platform publishes a new signing key")
@given("the platform has published a new signing key")
def publishes(context):
    state = context.state
    rotation, signing = state.rotation, state.world.signing
    signing.previous = signing.signing
    signing.new = rotation.publish()


@when("the platform makes the new key the signing key")
@given("the platform has made the new key the signing key")
def makes_signing(context):
    state = context.state
    state.rotation.activate(state.world.signing.new)
    state.world.signing.signing = state.world.signing.new


@when("the platform retires the previous key")
def retires_previous(context):
    state = context.state
    state.rotation.retire(state.world.signing.previous)


@when("the platform tries to retire the key that signs")
def tries_retire_active(context):
    state = context.state
    rotation = state.rotation
    state.world.last.answer = rotation.try_retire(state.world.signing.signing)


@when("the platform tries to make the retired key the signing key again")
def tries_reactivate(context):
    state = context.state
    rotation = state.rotation
    state.world.last.answer = rotation.try_activate(state.world.signing.retired)


@then("the new key is among the published signing keys")
def new_key_published(context):
    state = context.state
    new = state.world.signing.new
    kids, exchange = state.identity.published_kids()
    expect_true(new in kids, f"Expected the new key {new} to be published before it signs, but the published keys "
                f"were {sorted(kids)}", exchange)


@then("the previous key is still published")
def previous_published(context):
    state = context.state
    previous = state.world.signing.previous
    kids, exchange = state.identity.published_kids()
    expect_true(previous in kids, f"Expected the previous key {previous} to stay published while its tokens are "
                f"valid, but the published keys were {sorted(kids)}", exchange)


@then("the previous key is no longer published")
def previous_unpublished(context):
    state = context.state
    previous = state.world.signing.previous
    kids, exchange = state.identity.published_kids()
    expect_true(previous not in kids, f"Expected the retired key {previous} to be gone from the published keys, but "
                f"they were {sorted(kids)}", exchange)


@then("tokens issued now are still signed by the previous key")
@then("tokens issued now are still signed by that key")
@then("tokens issued now are still signed by the newer key")
@then("tokens issued now are signed by the new key")
def signed_by_current(context):
    state = context.state
    expected = state.world.signing.signing
    kid, exchange = state.identity.kid_of_a_fresh_token()
    expect_equal(kid, expected, "the key id of a token issued now", exchange)


@then("{name:Name}'s earlier access token is still accepted")
def earlier_accepted(context, name):
    state = context.state
    exchange = state.identity.me(state.world.person(name).access_token)
    expect_status(exchange, 200, f"{name}'s access token signed by the previous key {state.world.signing.previous}")


@then('{name:Name}\'s access token is refused as unauthenticated, the gateway saying "{why}"')
def access_refused(context, name, why):
    state = context.state
    exchange = state.identity.me(state.world.person(name).access_token)
    expect_unauthenticated(exchange, f"{name}'s access token signed by the retired key "
                           f"{state.world.signing.previous}", why)


@then("{name:Name}'s refresh token is refused too")
def refresh_refused(context, name):
    state = context.state
    exchange = state.identity.refresh(name)
    expect_unauthenticated(exchange, f"{name}'s refresh token signed by the retired key {state.world.signing.previous}")


@then("{name:Name} can log in again and is served")
def logs_in_again(context, name):
    state = context.state
    state.platform.login(name)
    exchange = state.identity.me(state.world.person(name).access_token)
    expect_status(exchange, 200, f"{name}'s new access token after the rotation")


@then("the platform is told the key still signs")
def told_still_signs(context):
    answer = context.state.world.answer()
    expect_status(answer, 409, "retiring the key that signs")
    expect_true("signs" in str(problem_field(answer, "detail")), "Expected the refusal to say the key still signs",
                answer)


@then("the platform is told the key is retired")
def told_retired(context):
    answer = context.state.world.answer()
    expect_status(answer, 409, "making a retired key sign again")
    expect_true("retired" in str(problem_field(answer, "detail")), "Expected the refusal to say the key is retired",
                answer)
