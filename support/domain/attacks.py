"""The gateway attacked as a penetration tester would (features/security), in business operations: guessing
passwords, holding invitations, removing members, looking for secrets at rest and in answers.

An attacker plays a client address of its own: the suite's stacks trust the suite's address as a proxy
(TRUSTED_PROXIES), so the address in X-Forwarded-For is the one the gateway throttles and samples by, and one
scenario's attacker never slows another scenario down. Addresses come from the IPv6 documentation prefix
(2001:db8::/32), so no two scenarios of a run share one.
"""
from __future__ import annotations

import base64
import re
import secrets

from support.client.api import Exchange
from support.client.assertions import expect_status, expect_true, problem_field
from support.database.reflection import Database
from support.domain.identity import Identity
from support.harness.world import Attacks

THROTTLED = 429
# A P-256 private key in PKCS8 DER starts with these bytes; base64 of them in any column is a key in the clear.
PKCS8_P256 = base64.b64encode(bytes.fromhex("308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b0201010420"))
PEM_PRIVATE = "PRIVATE KEY-----"


def attacker_address() -> str:
    return f"2001:db8:{secrets.token_hex(2)}:{secrets.token_hex(2)}::{secrets.randbelow(0xffff):x}"


class Attacker:
    """An attacker's moves against the gateway, and what the scenario checks about them."""

    def __init__(self, identity: Identity, db: Database, attacks: Attacks):
        self.identity = identity
        self.platform = identity.platform
        self.api = identity.api
        self.world = identity.world
        self.db = db
        self.attacks = attacks

    def _as_attacker(self, path: str, body: dict) -> Exchange:
        if self.attacks.address is None:
            self.attacks.address = attacker_address()
        return self.api.post(path, json_body=body, headers={"X-Forwarded-For": self.attacks.address})

    # ---- guessing passwords -------------------------------------------------------------------------------------

    def guess_password(self, name: str, times: int) -> None:
        email = self.platform.person(name).email
        for number in range(times):
            self.attacks.tries.append(self._as_attacker("/auth/login", {"email": email,
                                                                        "password": f"guess-{number:04d}-x"}))

    def spray(self, accounts: int) -> None:
        """One password tried on many emails from one client address."""
        for number in range(accounts):
            email = self.platform.ns.email(f"Target{number}")
            self.attacks.tries.append(self._as_attacker("/auth/login", {"email": email,
                                                                        "password": "Summer2024!-x"}))

    def expect_throttled_before(self, limit: int) -> list[Exchange]:
        """Some try before the `limit`th was refused with 429 and a Retry-After, and every later one too; the
        refused tries are returned."""
        statuses = [t.status for t in self.attacks.tries]
        first = next((i for i, status in enumerate(statuses) if status == THROTTLED), None)
        expect_true(first is not None and first < limit - 1, f"Expected the attacker to be refused with 429 before "
                    f"the try number {limit}, but the tries were answered {statuses}", self.attacks.tries[-1])
        refused = self.attacks.tries[first:]
        for exchange in refused:
            expect_status(exchange, THROTTLED, "a try once the attacker is throttled")
            retry = exchange.response_headers.get("Retry-After", "")
            expect_true(retry.isdigit() and int(retry) >= 1, f"Expected the 429 to say when to retry (Retry-After in "
                        f"whole seconds), but Retry-After was {retry!r}", exchange)
        return refused

    def login_from_attacker(self, name: str) -> Exchange:
        person = self.platform.person(name)
        return self._as_attacker("/auth/login", {"email": person.email, "password": person.password})

    def login_from_elsewhere(self, name: str) -> Exchange:
        person = self.platform.person(name)
        return self.api.post("/auth/login", json_body={"email": person.email, "password": person.password},
                             headers={"X-Forwarded-For": attacker_address()})

    def expect_one_event_for(self, refused: list[Exchange]) -> None:
        """Exactly one audit event, denied, for all the refused tries together."""
        found = []
        for exchange in refused:
            events, _ = self.identity.platform_audit_for(exchange.request_id)
            found += [(exchange.request_id, e) for e in events]
        expect_true(len(found) == 1 and found[0][1].get("outcome") == "denied",
                    f"Expected one denied audit event for the {len(refused)} refused tries (request ids "
                    f"{refused[0].request_id} to {refused[-1].request_id}), but found {len(found)}: "
                    f"{[(rid, e.get('action'), e.get('outcome'), e.get('reason')) for rid, e in found]}")

    # ---- invitations --------------------------------------------------------------------------------------------

    def hold_invitation_for(self, inviter: str, org_name: str, name: str) -> None:
        """The inviter invites the email of someone who has an account elsewhere, and keeps the token."""
        exchange = self.api.post(f"/orgs/{self.world.org(org_name).slug}/invitations",
                                 token=self.platform.access_token(inviter),
                                 json_body={"email": self.platform.person(name).email, "role": "admin"})
        self.attacks.held_invitation = expect_status(exchange, 201, f"{inviter} inviting {name}'s email").json()["token"]

    def try_held_invitation(self, passwords: int) -> None:
        for number in range(passwords):
            self.attacks.tries.append(self._as_attacker(f"/invitations/{self.attacks.held_invitation}/accept",
                                                        {"name": "Whoever", "password": f"guess-{number:04d}-x"}))

    def accept_held_invitation_as(self, name: str) -> Exchange:
        person = self.platform.person(name)
        return self._as_attacker(f"/invitations/{self.attacks.held_invitation}/accept",
                                 {"name": name, "password": person.password})

    def expect_tries_say_nothing_about(self, name: str, org_name: str) -> None:
        person = self.platform.person(name)
        org = self.world.org(org_name)
        telling = [person.email, person.name, org.slug, org.name, "exists", "account"]
        for exchange in self.attacks.tries:
            expect_true(exchange.status in (403, 410), f"Expected a wrong password on the invitation to be refused "
                        f"(403, or 410 once used up), but it answered {exchange.status}", exchange)
            said = [word for word in telling if word.lower() in exchange.text.lower()]
            expect_true(not said, f"Expected the refusal to say nothing about {name}, her account or her org, but "
                        f"it mentions {said}", exchange)

    def invitation_of(self, name: str) -> str:
        token = self.world.invitations.get(name)
        expect_true(token is not None, f"{name} has no invitation in this scenario")
        return token

    def invitations(self, actor: str, org_name: str) -> Exchange:
        return expect_status(self.api.get(f"/orgs/{self.world.org(org_name).slug}/invitations",
                                          token=self.platform.access_token(actor)), 200,
                             f"{actor} listing the invitations of {org_name!r}")

    def invitation_listed(self, actor: str, org_name: str, name: str) -> tuple[dict, Exchange]:
        answer = self.invitations(actor, org_name)
        email = self.platform.person(name).email
        listed = [i for i in answer.json().get("invitations", []) if i.get("email") == email]
        expect_true(len(listed) == 1, f"Expected one invitation for {name} ({email}) in the list, but found "
                    f"{len(listed)}", answer)
        return listed[0], answer

    def revoke_invitation(self, actor: str, org_name: str, name: str) -> Exchange:
        listed, _ = self.invitation_listed(actor, org_name, name)
        exchange = self.api.delete(f"/orgs/{self.world.org(org_name).slug}/invitations/{listed['id']}",
                                   token=self.platform.access_token(actor))
        return expect_status(exchange, 200, f"{actor} revoking {name}'s invitation")

    def try_invitation(self, name: str) -> Exchange:
        return self._as_attacker(f"/invitations/{self.invitation_of(name)}/accept",
                                 {"name": name, "password": self.platform.person(name).password})

    # ---- removal ------------------------------------------------------------------------------------------------

    def remove(self, actor: str, org_name: str, name: str) -> Exchange:
        return expect_status(self.identity.remove_member(actor, org_name, name), 204,
                             f"{actor} removing {name} from {org_name!r}")

    def expect_not_a_member(self, name: str, org_name: str, removal: Exchange | None = None) -> None:
        members, listing = self.identity.members_answer(org_name)
        expect_true(self.platform.person(name).email not in members, f"Expected {name} not to be a member of "
                    f"{org_name!r}" + (f" once removed (request id {removal.request_id})" if removal else "") +
                    f", but its members are {members}", listing)

    # ---- secrets at rest and in answers ---------------------------------------------------------------------------

    def publish_signing_key(self, add_cleanup) -> str:
        """A signing key the gateway makes and publishes, which its database is then seen to hold (by its kid)."""
        admin = self.platform.keys.admin_token()
        exchange = expect_status(self.api.post("/admin/signing-keys", token=admin), 201, "publishing a signing key")
        kid = exchange.json()["kid"]
        add_cleanup(lambda: self.api.post(f"/admin/signing-keys/{kid}/retire", token=self.platform.keys.admin_token()))
        expect_true(bool(self.db.columns_holding(kid)), f"Expected the gateway's database to hold the signing key "
                    f"{kid} it published, but no column holds that kid", exchange)
        return kid

    def private_keys_in_the_clear(self) -> list[str]:
        """Every table.column holding a private key in the clear: a PEM, a PKCS8 P-256 key in base64, or the
        keys folder's own private key."""
        own = "".join(line for line in self.platform.keys.private_pem.splitlines() if not line.startswith("-----"))
        found = []
        for needle in (PEM_PRIVATE, PKCS8_P256.decode()[:40], own[:60]):
            found += self.db.columns_holding(needle)
        return sorted(set(found))

    def expect_never_cached(self, answers: list[Exchange]) -> None:
        for exchange in answers:
            cache = exchange.response_headers.get("Cache-Control", "")
            expect_true("no-store" in cache, f"Expected an answer carrying a secret to forbid caching "
                        f"(Cache-Control: no-store), but Cache-Control was {cache!r}", exchange)
            sniff = exchange.response_headers.get("X-Content-Type-Options", "")
            expect_true(sniff.lower() == "nosniff", f"Expected X-Content-Type-Options: nosniff, but it was "
                        f"{sniff!r}", exchange)

    def expect_refusal_words(self, exchange: Exchange, status: int, doing: str, *words: str) -> None:
        expect_status(exchange, status, doing)
        detail = str(problem_field(exchange, "detail") or "")
        missing = [w for w in words if not re.search(re.escape(w), detail, re.I)]
        expect_true(not missing, f"Expected the refusal to say {missing}, but it said {detail!r}", exchange)
