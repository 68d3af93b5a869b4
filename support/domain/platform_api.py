"""The gateway's platform API as business operations. Each returns what the scenario needs next and fails
with the exchange quoted when a set-up step is refused."""
from __future__ import annotations

from support.client.api import ApiClient, Exchange
from support.client.assertions import expect_status
from support.tokens.jwks import PublishedKeys
from support.tokens.signing_keys import KeyMaterial
from support.harness.namespace import Namespace
from support.harness.world import KeyRecord, OrgRecord, Person, World


CONTENT = "Hello, gateway"


def chat_body(model: str, max_tokens: int | None = 32, content: str = CONTENT, **extra) -> dict:
    """A chat completion request for `model` (the name the gateway knows it by)."""
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


class Platform:
    def __init__(self, api: ApiClient, keys: KeyMaterial, ns: Namespace, world: World,
                 published_keys: PublishedKeys | None = None):
        self.api = api
        self.keys = keys
        self.ns = ns
        self.world = world
        self._published_keys = published_keys or PublishedKeys()  # the run's copy, when it keeps one

    def verify_token(self, token: str, what: str) -> dict:
        """The token checked against the published keys (fetched by this scenario only if the copy kept lacks the
        token's key: its first use in the run, or a rotation)."""
        return self._published_keys.verify(token, what, fetch=lambda: self.jwks().json())

    def jwks(self) -> Exchange:
        """The gateway's published signing keys (JWKS), as any client fetches them."""
        return expect_status(self.api.get("/.well-known/jwks.json"), 200, "fetching the published signing keys")

    # ---- people ------------------------------------------------------------------------------------------------

    def person(self, name: str) -> Person:
        if name not in self.world.people:
            self.world.people[name] = Person(name, self.ns.email(name))
        return self.world.people[name]

    def invitation_acceptance(self, name: str, **extra) -> Exchange:
        """The person accepts their invitation (sending any extra fields too); the answer unchecked."""
        person = self.person(name)
        token = self.world.invitations.get(name)
        if token is None:
            raise AssertionError(f"{name} has no invitation in this scenario")
        return self.api.post(f"/invitations/{token}/accept",
                             json_body={"name": name, "password": person.password, **extra})

    def accept_invitation(self, name: str) -> Exchange:
        """The person accepts their invitation, which signs them in: a person holding no tokens yet keeps the pair
        the answer carries (checked against the published keys), so they need not log in. A deployment whose
        acceptance carries no tokens still works: the person logs in when a token is first needed."""
        exchange = expect_status(self.invitation_acceptance(name), 200, f"{name} accepting the invitation")
        answer, person = exchange.json(), self.person(name)
        person.user_id = answer["user_id"]
        if person.access_token is None and answer.get("access_token") and answer.get("refresh_token"):
            self._keep_tokens(name, answer, f"on accepting the invitation [request id {exchange.request_id}]")
        return exchange

    def login(self, name: str) -> Exchange:
        person = self.person(name)
        exchange = self.api.post("/auth/login", json_body={"email": person.email, "password": person.password})
        expect_status(exchange, 200, f"{name} logging in")
        self._keep_tokens(name, exchange.json(), f"at login [request id {exchange.request_id}]")
        return exchange

    def _keep_tokens(self, name: str, tokens: dict, when: str) -> None:
        """The person's new pair, its access token checked first (signing drift is caught at once)."""
        self.verify_token(tokens["access_token"], f"the access token issued to {name} {when}")
        person = self.person(name)
        person.access_token, person.refresh_token = tokens["access_token"], tokens["refresh_token"]

    def access_token(self, name: str) -> str:
        person = self.person(name)
        if person.access_token is None:
            self.login(name)
        return person.access_token

    # ---- orgs --------------------------------------------------------------------------------------------------

    def create_org(self, name: str, owner: str, budget_micros: int | None = None) -> OrgRecord:
        owner_person = self.person(owner)
        body = {"slug": self.ns.slug(name), "name": name, "owner_email": owner_person.email}
        if budget_micros is not None:
            body["budget_micros"] = budget_micros
        exchange = self.api.post("/admin/orgs", token=self.keys.admin_token(), json_body=body)
        expect_status(exchange, 201, f"a platform admin creating the org {name!r}")
        created = exchange.json()
        org = OrgRecord(name, created["slug"], created["account_id"], created["owner_invitation"]["token"])
        self.world.orgs[name] = org
        self.world.invitations[owner] = org.owner_invitation
        return org

    def org_with_owner(self, name: str, owner: str, budget_micros: int | None = None) -> OrgRecord:
        org = self.create_org(name, owner, budget_micros)
        self.accept_invitation(owner)
        return org

    def invite(self, inviter: str, org_name: str, invitee: str, role: str) -> Exchange:
        org = self.world.org(org_name)
        exchange = self.api.post(f"/orgs/{org.slug}/invitations", token=self.access_token(inviter),
                                 json_body={"email": self.person(invitee).email, "role": role})
        if exchange.status == 201:
            self.world.invitations[invitee] = exchange.json()["token"]
        return exchange

    def add_member(self, org_name: str, person: str, role: str) -> None:
        """Someone joins the org with a role: invited by the org's owner, and accepted."""
        owner = self.owner_of(org_name)
        expect_status(self.invite(owner, org_name, person, role), 201, f"{owner} inviting {person} as {role}")
        self.accept_invitation(person)

    def owner_of(self, org_name: str) -> str:
        org = self.world.org(org_name)
        for person, token in self.world.invitations.items():
            if token == org.owner_invitation:
                return person
        raise AssertionError(f"The scenario does not know who owns {org_name!r}")

    def mint(self, org_name: str, amount_micros: int, reason: str = "acceptance credit") -> Exchange:
        org = self.world.org(org_name)
        exchange = self.api.post("/admin/billing/mint", token=self.keys.admin_token(),
                                 json_body={"account_id": org.account_id, "amount_micros": amount_micros,
                                            "reason": reason})
        return expect_status(exchange, 201, f"minting credit for {org_name!r}")

    def usage(self, org_name: str, as_person: str | None = None) -> Exchange:
        org = self.world.org(org_name)
        reader = as_person or self.owner_of(org_name)
        return expect_status(self.api.get(f"/orgs/{org.slug}/usage", token=self.access_token(reader)), 200,
                             f"reading the usage of {org_name!r}")

    def set_budget(self, person: str, org_name: str, limit_micros: int | None) -> Exchange:
        """PUT /orgs/{slug}/budget as that person (the answer is returned unchecked)."""
        org = self.world.org(org_name)
        return self.api.put(f"/orgs/{org.slug}/budget", token=self.access_token(person),
                            json_body={"limit_micros": limit_micros})

    def audit(self, org_name: str, **filters) -> list[dict]:
        org = self.world.org(org_name)
        query = "&".join(f"{k}={v}" for k, v in filters.items() if v is not None)
        exchange = self.api.get(f"/orgs/{org.slug}/audit?limit=1000{'&' + query if query else ''}",
                                token=self.access_token(self.owner_of(org_name)))
        return expect_status(exchange, 200, f"reading the audit log of {org_name!r}").json()["events"]

    # ---- keys --------------------------------------------------------------------------------------------------

    def issue_key(self, person: str, org_name: str, key_name: str) -> Exchange:
        org = self.world.org(org_name)
        exchange = self.api.post(f"/orgs/{org.slug}/keys", token=self.access_token(person),
                                 json_body={"name": key_name})
        if exchange.status == 201:
            body = exchange.json()
            self.world.keys[key_name] = KeyRecord(key_name, body["id"], body["key"], body["prefix"], org_name)
        return exchange

    # ---- model traffic -----------------------------------------------------------------------------------------

    def chat(self, key_name: str, model: str, **body) -> Exchange:
        """A chat completion with the key, for the model the gateway knows as `model` (see chat_body)."""
        return self.api.post("/v1/chat/completions", token=self.world.key(key_name).secret,
                             json_body=chat_body(model, **body))
