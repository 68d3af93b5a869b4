"""Identity and access as business operations: tokens, people's roles, API keys, signing-key rotation and the
audit trail of refusals. Built on Platform (same client, keys and world), kept apart so the shared Platform stays
small."""
from __future__ import annotations

import secrets

from support.client.api import Exchange, Request
from support.client.assertions import expect_status, expect_true, problem_field
from support.tokens.forgery import Genuine, forge, resign, unverified
from support.domain.platform_api import Platform


def expect_unauthenticated(exchange: Exchange, doing: str, why: str | None = None) -> None:
    """401 with a message saying why (containing the given words, when given)."""
    expect_status(exchange, 401, doing)
    detail = str(problem_field(exchange, "detail") or "")
    expect_true(bool(detail), f"Expected the 401 for {doing} to say why, but its message was empty", exchange)
    if why is not None:
        expect_true(why.lower() in detail.lower(), f"Expected the 401 for {doing} to say {why!r}, but it said "
                    f"{detail!r}", exchange)


class Identity:
    def __init__(self, platform: Platform):
        self.platform = platform
        self.api = platform.api
        self.keys = platform.keys
        self.world = platform.world

    # ---- people and tokens -------------------------------------------------------------------------------------

    def signed_in(self, name: str) -> None:
        self.platform.login(name)

    def login_with(self, email: str, password: str) -> Exchange:
        return self.api.post("/auth/login", json_body={"email": email, "password": password})

    def refresh(self, name: str, refresh_token: str | None = None) -> Exchange:
        """Trade a refresh token for a new pair; on success the person holds the new pair (checked against JWKS)."""
        person = self.world.person(name)
        exchange = self.present_refresh_token(refresh_token or person.refresh_token)
        if exchange.status == 200:
            tokens = exchange.json()
            self.platform.verify_token(tokens["access_token"], f"the access token issued to {name} by a refresh "
                                       f"[request id {exchange.request_id}]")
            person.access_token, person.refresh_token = tokens["access_token"], tokens["refresh_token"]
        return exchange

    def present_refresh_token(self, token: str | None) -> Exchange:
        """Whatever is presented as a refresh token, the answer unchecked."""
        return self.api.post("/auth/refresh", json_body={"refresh_token": token})

    def kid_of_a_fresh_token(self) -> tuple[str, Exchange]:
        """The owner of the scenario's first org logs in afresh (keeping the tokens she holds); the key id of the
        access token she is issued, checked against the published keys."""
        name = self.platform.owner_of(self.world.first_org().name)
        person = self.world.person(name)
        exchange = expect_status(self.login_with(person.email, person.password), 200, f"{name} logging in afresh")
        token = exchange.json()["access_token"]
        self.platform.verify_token(token, f"a token issued to {name} [request id {exchange.request_id}]")
        return self.kid_of(token), exchange

    def me(self, token: str | None) -> Exchange:
        return self.api.get("/auth/me", token=token)

    def user_id(self, name: str) -> str:
        person = self.world.person(name)
        if person.user_id is None:
            raise AssertionError(f"{name} has not joined any org in this scenario, so has no user id yet")
        return person.user_id

    def genuine(self, name: str) -> Genuine:
        person = self.world.person(name)
        if person.access_token is None:
            self.platform.login(name)
        return Genuine(person.access_token, person.refresh_token, self.keys)

    def forged(self, name: str, kind: str) -> str:
        return forge(kind, self.genuine(name))

    def resigned(self, name: str) -> str:
        """The control for the forgery corpus: the person's claims, re-signed with the suite's trusted key."""
        return resign(self.genuine(name))

    # ---- members and roles -------------------------------------------------------------------------------------

    def members(self, org_name: str, as_person: str | None = None) -> dict[str, str]:
        """email -> role, as the org's owner (or the given person) sees it."""
        return self.members_answer(org_name, as_person)[0]

    def members_answer(self, org_name: str, as_person: str | None = None) -> tuple[dict[str, str], Exchange]:
        org = self.world.org(org_name)
        reader = as_person or self.platform.owner_of(org_name)
        exchange = self.api.get(f"/orgs/{org.slug}/members", token=self.platform.access_token(reader))
        expect_status(exchange, 200, f"{reader} listing the members of {org_name!r}")
        return {m["email"]: m["role"] for m in exchange.json()["members"]}, exchange

    def role_of(self, org_name: str, name: str) -> str | None:
        return self.members(org_name).get(self.world.person(name).email)

    def change_role(self, actor: str, org_name: str, target: str, role: str, **extra) -> Exchange:
        org = self.world.org(org_name)
        return self.api.patch(f"/orgs/{org.slug}/members/{self.user_id(target)}",
                              token=self.platform.access_token(actor), json_body={"role": role, **extra})

    def role_change_request(self, actor: str, org_name: str, target: str, role: str) -> Request:
        """The role change described, not sent (to send it together with others)."""
        return Request("PATCH", f"/orgs/{self.world.org(org_name).slug}/members/{self.user_id(target)}",
                       token=self.platform.access_token(actor), json_body={"role": role})

    def remove_member(self, actor: str, org_name: str, target: str) -> Exchange:
        org = self.world.org(org_name)
        return self.api.delete(f"/orgs/{org.slug}/members/{self.user_id(target)}",
                               token=self.platform.access_token(actor))

    # ---- API keys ----------------------------------------------------------------------------------------------

    def list_keys(self, actor: str, org_name: str) -> Exchange:
        return self.api.get(f"/orgs/{self.world.org(org_name).slug}/keys", token=self.platform.access_token(actor))

    def issue_key_as(self, actor: str | None, org_name: str, key_name: str, headers: dict | None = None) -> Exchange:
        """Ask to issue a key as `actor` (None: without credentials), sending the given headers too; the answer
        unchecked and the key not kept."""
        token = self.platform.access_token(actor) if actor is not None else None
        return self.api.post(f"/orgs/{self.world.org(org_name).slug}/keys", token=token, json_body={"name": key_name},
                             headers=headers)

    def revoke_key(self, actor: str, org_name: str, key_name: str) -> Exchange:
        return self.api.delete(f"/orgs/{self.world.org(org_name).slug}/keys/{self.world.key(key_name).id}",
                               token=self.platform.access_token(actor))

    def use_key(self, key_name: str) -> Exchange:
        """The cheapest request an API key can make: list the models its org may use."""
        return self.api.get("/v1/models", token=self.world.key(key_name).secret)

    def present(self, credential: str, api: str) -> Exchange:
        """A credential in the sentence's words ('the key "ci"', "Olive's access token", 'a key that was never
        issued') presented to 'the model API' (listing models) or 'the platform API' (the first org's keys)."""
        if credential.startswith('the key "'):
            token = self.world.key(credential.split('"')[1]).secret
        elif credential.endswith("'s access token"):
            token = self.platform.access_token(credential[: -len("'s access token")])
        elif credential == "a key that was never issued":
            token = "tg_" + secrets.token_urlsafe(32)
        else:
            raise AssertionError(f"No credential {credential!r} in this step's vocabulary")
        path = "/v1/models" if api == "the model API" else f"/orgs/{self.world.first_org().slug}/keys"
        return self.api.get(path, token=token)

    def key_for(self, org_name: str, key_name: str) -> None:
        owner = self.platform.owner_of(org_name)
        expect_status(self.platform.issue_key(owner, org_name, key_name), 201, f"{owner} issuing the key {key_name!r}")

    # ---- reservations ------------------------------------------------------------------------------------------

    def reservation_for(self, org_name: str) -> str:
        """A pending reservation on the org's account, made the way a billing client makes one."""
        if org_name not in self.world.org_reservations:
            org = self.world.org(org_name)
            self.platform.mint(org_name, 1_000_000, "credit for a reservation")
            exchange = self.api.post("/billing/reservations", token=self.keys.service_token(),
                                     json_body={"account_id": org.account_id, "amount_micros": 10_000,
                                                "ttl_seconds": 600})
            expect_status(exchange, 201, f"reserving credit on the account of {org_name!r}")
            self.world.org_reservations[org_name] = exchange.json()["id"]
        return self.world.org_reservations[org_name]

    # ---- audit -------------------------------------------------------------------------------------------------

    def org_audit_for(self, org_name: str, request_id: str) -> tuple[list[dict], Exchange]:
        """The events of one request in the org's audit log, read by the org's owner."""
        org = self.world.org(org_name)
        exchange = self.api.get(f"/orgs/{org.slug}/audit?request_id={request_id}",
                                token=self.platform.access_token(self.platform.owner_of(org_name)))
        expect_status(exchange, 200, f"the owner reading the audit log of {org_name!r}")
        return exchange.json()["events"], exchange

    def platform_audit_for(self, request_id: str) -> tuple[list[dict], Exchange]:
        """The events of one request in the platform-wide audit log (platform admin)."""
        exchange = self.api.get(f"/admin/audit?request_id={request_id}", token=self.keys.admin_token())
        expect_status(exchange, 200, "a platform admin reading the audit log")
        return exchange.json()["events"], exchange

    def expect_denial_audited(self, attempt: Exchange, *, org_name: str | None = None, actor: tuple | None = None,
                              action: str | None = None, target_mentions=None) -> dict:
        """The refused attempt left exactly one `denied` event carrying the request id the suite sent."""
        if org_name is not None:
            events, read = self.org_audit_for(org_name, attempt.request_id)
        else:
            events, read = self.platform_audit_for(attempt.request_id)
        denied = [e for e in events if e.get("outcome") == "denied"]
        expect_true(len(denied) == 1, f"Expected one denied audit event with request id {attempt.request_id} (the "
                    f"refused {attempt.method} {attempt.path}), but found {len(denied)}: {events}", read)
        event = denied[0]
        if actor is not None:
            expect_true((event["actor"] or {}).get("type") == actor[0] and (event["actor"] or {}).get("id") == actor[1],
                        f"Expected the denial's actor to be {actor[0]} {actor[1]}, but it was {event['actor']}", read)
        if action is not None:
            expect_true(event.get("action") == action, f"Expected the denial's action to be {action!r}, but it was "
                        f"{event.get('action')!r}", read)
        if target_mentions:
            options = (target_mentions,) if isinstance(target_mentions, str) else tuple(target_mentions)
            expect_true(any(o in str(event.get("target") or "") for o in options), f"Expected the denial's target "
                        f"to name one of {options}, but it was {event.get('target')!r}", read)
        return event

    def expect_change_audited(self, attempt: Exchange, *, org_name: str, actor: tuple, action: str) -> dict:
        """The allowed change left an `allowed` event with the actor, the action and the request id the suite sent."""
        events, read = self.org_audit_for(org_name, attempt.request_id)
        allowed = [e for e in events if e.get("outcome") == "allowed" and e.get("action") == action
                   and (e.get("actor") or {}).get("id") == actor[1]]
        expect_true(len(allowed) == 1, f"Expected one allowed {action} event by {actor[0]} {actor[1]} with request "
                    f"id {attempt.request_id}, but the events for that request were {events}", read)
        return allowed[0]

    def expect_nothing_denied(self, attempt: Exchange, *, org_name: str) -> None:
        events, read = self.org_audit_for(org_name, attempt.request_id)
        denied = [e for e in events if e.get("outcome") == "denied"]
        expect_true(not denied, f"Expected no denied event for the allowed request {attempt.request_id}, but found "
                    f"{denied}", read)

    # ---- signing keys (platform admin) ---------------------------------------------------------------------------

    def signing_keys(self) -> dict[str, str]:
        """kid -> state, as the platform admin sees them."""
        exchange = self.api.get("/admin/signing-keys", token=self.keys.admin_token())
        expect_status(exchange, 200, "a platform admin listing the signing keys")
        return {k["kid"]: k["state"] for k in exchange.json()["keys"]}

    def publish_signing_key(self) -> str:
        exchange = self.api.post("/admin/signing-keys", token=self.keys.admin_token())
        expect_status(exchange, 201, "a platform admin publishing a new signing key")
        return exchange.json()["kid"]

    def activate_signing_key(self, kid: str) -> Exchange:
        return self.api.post(f"/admin/signing-keys/{kid}/activate", token=self.keys.admin_token())

    def retire_signing_key(self, kid: str) -> Exchange:
        return self.api.post(f"/admin/signing-keys/{kid}/retire", token=self.keys.admin_token())

    def published_jwks(self) -> tuple[dict, Exchange]:
        exchange = self.platform.jwks()
        return exchange.json(), exchange

    def published_kids(self) -> tuple[set[str], Exchange]:
        jwks, exchange = self.published_jwks()
        return {k.get("kid") for k in jwks.get("keys", [])}, exchange

    @staticmethod
    def kid_of(token: str) -> str:
        return unverified(token)[0].get("kid")


def made_up_like(real_id: str) -> str:
    """An id shaped like a real one (same prefix and length) that names nothing."""
    keep = max(0, len(real_id) - 12)
    return real_id[:keep] + secrets.token_hex(6)


class Rotation:
    """The signing-key rotations one scenario makes, undone when it ends.

    Rotation changes what every concurrent scenario's tokens are checked against, so rotation scenarios run alone
    (@serial) and keep one rule: the key that signed when the scenario began is never retired, only moved to
    `retiring` (so it verifies throughout). `restore()` makes it the signing key again and retires every key the
    scenario published, leaving the gateway as the scenario found it apart from some retired keys.
    """

    def __init__(self, identity: Identity):
        self.identity = identity
        states = identity.signing_keys()
        active = [kid for kid, state in states.items() if state == "active"]
        if len(active) != 1:
            raise AssertionError(f"Expected exactly one active signing key before rotating, but the keys were {states}")
        self.original = active[0]
        self.published: list[str] = []

    def publish(self) -> str:
        kid = self.identity.publish_signing_key()
        self.published.append(kid)
        return kid

    def activate(self, kid: str) -> Exchange:
        return expect_status(self.identity.activate_signing_key(kid), 200, f"activating the signing key {kid}")

    def try_retire(self, kid: str) -> Exchange:
        """An attempt to retire a key, the answer unchecked (the scenario's rotation is undone all the same)."""
        return self.identity.retire_signing_key(kid)

    def try_activate(self, kid: str) -> Exchange:
        return self.identity.activate_signing_key(kid)

    def retire(self, kid: str) -> Exchange:
        if kid == self.original:
            raise AssertionError("A rotation scenario must not retire the key that signed before it began: other "
                                 "scenarios' tokens and the forged-token corpus depend on it")
        return expect_status(self.identity.retire_signing_key(kid), 200, f"retiring the signing key {kid}")

    def rotate_in_new_key(self) -> str:
        kid = self.publish()
        self.activate(kid)
        return kid

    def restore(self) -> None:
        states = self.identity.signing_keys()
        if states.get(self.original) != "active":
            self.activate(self.original)
        for kid in self.published:
            if states.get(kid) != "retired":
                self.retire(kid)
