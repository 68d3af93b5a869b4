"""The security findings of issue 19 over HTTP, on the embedded stack (test settings: THROTTLE_FAILURES_PER_ACCOUNT 5,
THROTTLE_FAILURES_PER_ADDRESS 20, INVITATION_MAX_FAILED_ATTEMPTS 3, the audit budget of GATEWAY_TEST_SETTINGS, the
suite's address a trusted proxy). Each test plays a client address of its own through X-Forwarded-For."""
from __future__ import annotations

import asyncio
import ipaddress
import itertools
import math
import secrets
import time

import pytest
from sqlalchemy import bindparam, text

from support.client.api import ApiClient
from support.client.keep_alive import Connection
from support.database.reflection import Database
from support.domain.platform_api import Platform
from support.harness.namespace import Namespace
from support.harness.waits import wait_until
from support.harness.world import World
from support.stacks.base import GATEWAY_TEST_SETTINGS
from support.tokens.signing_keys import KeyMaterial


# Each test's client address, distinct from every other test's: the throttles count failures per address on the one
# stack all of them share (a random pick among a few hundred addresses collided in about one run in six).
BENCHMARKING_NETWORK = ipaddress.IPv4Network("198.18.0.0/15")
_addresses = itertools.count(secrets.randbelow(BENCHMARKING_NETWORK.num_addresses // 2))


class Scene:
    """One test's client address, people and orgs on the module's stack."""

    def __init__(self, stack, name: str):
        self.address = str(BENCHMARKING_NETWORK[next(_addresses) + 1])
        self.api = ApiClient(stack.endpoints.base_url, request_id_prefix=f"t.sec.{name}",
                             trace_id=secrets.token_hex(16), timeout=10)
        self.world = World()
        self.platform = Platform(self.api, KeyMaterial(stack.endpoints.keys_dir),
                                 Namespace("sec" + secrets.token_hex(3), name), self.world)
        self.db = Database(stack.endpoints.database_url)

    def post(self, path: str, body: dict, **kw):
        return self.api.post(path, json_body=body, headers={"X-Forwarded-For": self.address}, **kw)

    def invite_account(self, inviter: str, org: str, person: str, role: str) -> str:
        """The token of an invitation to `org` for the email of `person`, who already has an account."""
        invited = self.api.post(f"/orgs/{self.world.org(org).slug}/invitations",
                                token=self.platform.access_token(inviter),
                                json_body={"email": self.world.people[person].email, "role": role})
        assert invited.status == 201, invited.text
        return invited.json()["token"]

    def events(self, *request_ids: str) -> list:
        with self.db.engine.connect() as conn:
            return conn.execute(text("SELECT action, outcome, target, reason, org, request_id FROM audit_events "
                                     "WHERE request_id IN :ids").bindparams(bindparam("ids", expanding=True)),
                                {"ids": list(request_ids)}).all()


@pytest.fixture()
def scene(stack, request):
    made = Scene(stack, request.node.name[:20])
    yield made
    made.api.close()
    made.db.dispose()


def test_guessing_a_members_password_is_throttled_and_the_burst_audited_once(scene):
    scene.platform.org_with_owner("Acme", "Olive")
    email = scene.world.people["Olive"].email
    tries = [scene.post("/auth/login", {"email": email, "password": f"guess-{i}"}) for i in range(9)]
    assert [t.status for t in tries] == [401] * 5 + [429] * 4
    assert all(1 <= int(t.response_headers["Retry-After"]) <= 300 for t in tries[5:])
    right = scene.post("/auth/login", {"email": email, "password": scene.world.people["Olive"].password})
    assert right.status == 429  # the account waits out the window, whoever asks
    throttled = scene.events(*[t.request_id for t in tries[5:]] + [right.request_id])
    assert len(throttled) == 1 and throttled[0].outcome == "denied" and "Too many failed logins" in throttled[0].reason


def test_one_address_guessing_many_accounts_is_throttled(scene):
    tries = [scene.post("/auth/login", {"email": f"nobody-{i}-{secrets.token_hex(3)}@example.test",
                                        "password": "password-1"}) for i in range(22)]
    assert [t.status for t in tries] == [401] * 20 + [429] * 2
    assert "this client address" in tries[-1].json()["detail"]


def test_an_invitation_tells_its_holder_nothing_about_another_orgs_member_and_is_used_up(scene):
    scene.platform.org_with_owner("Acme", "Olive")
    scene.platform.org_with_owner("Evil", "Eve")
    olive = scene.world.people["Olive"]
    token = scene.invite_account("Eve", "Evil", "Olive", "admin")
    guesses = [scene.post(f"/invitations/{token}/accept", {"name": "x", "password": f"guess-{i:04d}"}) for i in range(4)]
    assert [g.status for g in guesses] == [403, 403, 403, 410]
    for guess in guesses:
        assert olive.email not in guess.text and "exists" not in guess.text and "Acme" not in guess.text
    assert "used up" in guesses[0].json()["detail"] and "too many wrong passwords" in guesses[3].json()["detail"]
    right = scene.post(f"/invitations/{token}/accept", {"name": "Olive", "password": olive.password})
    assert right.status == 410
    assert olive.user_id not in str(scene.events(*[g.request_id for g in guesses]))  # Evil's log names no account


def test_accepting_an_invitation_signs_an_existing_account_in_and_a_refused_acceptance_gives_no_tokens(scene):
    scene.platform.org_with_owner("Acme", "Olive")
    scene.platform.org_with_owner("Globex", "Gina")
    olive = scene.world.people["Olive"]
    token = scene.invite_account("Gina", "Globex", "Olive", "member")
    wrong = scene.post(f"/invitations/{token}/accept", {"name": "Olive", "password": "not-her-password"})
    assert wrong.status == 403 and "access_token" not in wrong.text and "refresh_token" not in wrong.text
    right = scene.post(f"/invitations/{token}/accept", {"name": "Olive", "password": olive.password})
    assert right.status == 200
    body = right.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    me = scene.api.get("/auth/me", token=body["access_token"])
    assert me.status == 200 and {o["slug"] for o in me.json()["orgs"]} == {
        scene.world.org("Acme").slug, scene.world.org("Globex").slug}
    refreshed = scene.api.post("/auth/refresh", json_body={"refresh_token": body["refresh_token"]})
    assert refreshed.status == 200
    again = scene.api.post("/auth/refresh", json_body={"refresh_token": body["refresh_token"]})
    assert again.status == 401  # a pair like a login's: each refresh token buys one new pair


def test_admins_list_and_revoke_invitations_and_a_revoked_one_no_longer_works(scene):
    scene.platform.org_with_owner("Acme", "Olive")
    slug = scene.world.org("Acme").slug
    owner = scene.platform.access_token("Olive")
    invited = scene.platform.invite("Olive", "Acme", "Ian", "member").json()
    listed = scene.api.get(f"/orgs/{slug}/invitations", token=owner).json()["invitations"]
    assert {i["id"]: i["state"] for i in listed}[invited["id"]] == "pending"
    assert invited["token"] not in str(listed) and "token" not in listed[0]
    revoked = scene.api.delete(f"/orgs/{slug}/invitations/{invited['id']}", token=owner)
    assert revoked.status == 200 and revoked.json()["state"] == "revoked"
    refused = scene.post(f"/invitations/{invited['token']}/accept", {"name": "Ian", "password": "password-1"})
    assert refused.status == 410 and refused.json()["code"] == "invitation_revoked"


def test_an_admin_cannot_revoke_an_owners_invitation(scene):
    scene.platform.org_with_owner("Acme", "Olive")
    scene.platform.add_member("Acme", "Ada", "admin")
    invited = scene.platform.invite("Olive", "Acme", "Otto", "owner").json()
    refused = scene.api.delete(f"/orgs/{scene.world.org('Acme').slug}/invitations/{invited['id']}",
                               token=scene.platform.access_token("Ada"))
    assert refused.status == 403


def test_a_removed_admin_loses_their_invitations_keys_and_the_org(scene):
    scene.platform.org_with_owner("Acme", "Olive")
    scene.platform.add_member("Acme", "Ada", "admin")
    slug = scene.world.org("Acme").slug
    invitation = scene.platform.invite("Ada", "Acme", "Ian", "admin").json()
    assert scene.platform.issue_key("Ada", "Acme", "ada-ci").status == 201
    key = scene.world.keys["ada-ci"].secret
    assert scene.api.get("/v1/models", token=key).status == 200
    scene.platform.login("Ada")
    ada = scene.world.people["Ada"]
    removed = scene.api.delete(f"/orgs/{slug}/members/{ada.user_id}", token=scene.platform.access_token("Olive"))
    assert removed.status == 204
    assert scene.post(f"/invitations/{invitation['token']}/accept", {"name": "Ian", "password": "pw-12345678"}
                      ).status == 410
    assert scene.api.get("/v1/models", token=key).status == 401
    refreshed = scene.api.post("/auth/refresh", json_body={"refresh_token": ada.refresh_token})
    assert refreshed.status == 200  # Ada keeps her account ...
    assert scene.api.get(f"/orgs/{slug}", token=refreshed.json()["access_token"]).status == 404  # ... not the org
    [event] = scene.events(removed.request_id)
    assert event.action == "members.remove"


def test_secrets_are_not_cached_or_sniffed_and_never_logged(scene, stack):
    scene.platform.org_with_owner("Acme", "Olive")
    login = scene.platform.login("Olive")
    assert login.response_headers["Cache-Control"] == "no-store"
    assert login.response_headers["X-Content-Type-Options"] == "nosniff"
    assert scene.api.get("/healthz").response_headers["X-Content-Type-Options"] == "nosniff"
    token = scene.world.invitations["Olive"]
    log = "\n".join(stack.logs(100_000)["gateway"])
    assert token not in log and "/invitations/[redacted invitation-token]/accept" in log


def test_a_flood_of_bad_tokens_from_one_address_writes_at_most_its_audit_budget(scene, stack):
    window, budget = (float(GATEWAY_TEST_SETTINGS[name]) for name in ("AUDIT_SAMPLING_WINDOW_SECONDS",
                                                                      "AUDIT_UNAUTHENTICATED_PER_ADDRESS"))
    request_ids = [f"t.sec.flood.{secrets.token_hex(4)}.{n}" for n in range(300)]

    async def flood() -> list[int]:  # over one keep-alive connection: fast enough to outrun the budget
        connection = Connection(stack.endpoints.base_url)
        try:
            return [(await connection.request("GET", "/auth/me", {
                "Authorization": f"Bearer eyJ{secrets.token_hex(8)}.x.y", "X-Forwarded-For": scene.address,
                "X-Request-ID": request_id})).status for request_id in request_ids]
        finally:
            connection.close()

    # Begin in a fresh sampling window (the gateway's windows are steps of the system's monotonic clock): the budget
    # for all addresses is shared, and an earlier test's refusals in the same window would leave this one less.
    fresh = (time.monotonic() // window + 1) * window
    wait_until("a new audit sampling window", time.monotonic, lambda now: now >= fresh, timeout=window + 1,
               max_interval=0.01)
    started = time.monotonic()
    statuses = asyncio.run(flood())
    windows = math.ceil((time.monotonic() - started) / window) + 1
    assert set(statuses) == {401}
    assert budget <= len(scene.events(*request_ids)) <= min(budget * windows, len(request_ids) - 1)
