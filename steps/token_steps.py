"""Tokens the gateway issues and the keys it publishes."""
import time

import jwt
from behave import then, when

from support.client.assertions import expect_true
from support.tokens.jwks import PRIVATE_MEMBERS, verify_with_jwks


@when("a client fetches the gateway's published signing keys")
def fetch_jwks(context):
    sessions = context.state.world.sessions
    sessions.jwks, sessions.jwks_answer = context.state.identity.published_jwks()


@then("every published key is a P-256 public key for ES256 signatures with a key id")
def keys_are_es256(context):
    sessions = context.state.world.sessions
    keys = sessions.jwks.get("keys") or []
    expect_true(bool(keys), "Expected at least one published key, but the set was empty", sessions.jwks_answer)
    for key in keys:
        shape = {k: key.get(k) for k in ("kty", "crv", "alg", "use")}
        expect_true(shape == {"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig"} and key.get("kid")
                    and key.get("x") and key.get("y"),
                    f"Expected an EC P-256 ES256 signing key with kid, x and y, but got {key}", sessions.jwks_answer)


@then("no published key carries a private member")
def no_private_members(context):
    sessions = context.state.world.sessions
    for key in sessions.jwks.get("keys") or []:
        leaked = [m for m in PRIVATE_MEMBERS if m in key]
        expect_true(not leaked, f"Published key {key.get('kid')!r} carries private member(s) {leaked}",
                    sessions.jwks_answer)


@then("{person}'s access token verifies against the published signing keys")
def token_verifies(context, person):
    state = context.state
    sessions = state.world.sessions
    token = state.world.person(person).access_token
    expect_true(token is not None, f"Expected {person} to hold an access token, but neither a login nor an accepted "
                f"invitation gave her one")
    sessions.jwks, sessions.jwks_answer = state.identity.published_jwks()
    sessions.claims = verify_with_jwks(token, sessions.jwks)


@then("{person}'s access token is an ES256 access token for the gateway that expires within 15 minutes")
def token_shape(context, person):
    state = context.state
    holder = state.world.person(person)
    header = jwt.get_unverified_header(holder.access_token)
    claims = state.world.sessions.claims
    lifetime = claims["exp"] - time.time()
    expect_true(header.get("alg") == "ES256" and header.get("typ") == "at+jwt",
                f"Expected header alg ES256 and typ at+jwt, but got {header}")
    expect_true(claims.get("aud") == "gateway" and claims.get("sub") == holder.user_id,
                f"Expected aud 'gateway' and sub {holder.user_id!r}, but got aud {claims.get('aud')!r} and sub "
                f"{claims.get('sub')!r}")
    expect_true(0 < lifetime <= 15 * 60 + 5, f"Expected the token to expire within 15 minutes, but it expires in "
                f"{lifetime:.0f} s")
