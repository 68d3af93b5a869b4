"""Runs leave nothing behind: the admin routes that retire orgs and people (gateway/routers/admin_cleanup.py), and
support.domain.cleanup, which finds a run's orgs and people by its run id and retires them, on an embedded stack."""
from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone

import pytest

from support.client.api import ApiClient
from support.domain.cleanup import SUITE_MADE, Leftovers
from support.domain.platform_api import Platform
from support.harness.namespace import Namespace
from support.harness.world import World
from support.tokens.signing_keys import KeyMaterial


class Run:
    """A pretend run of the suite: its own run id, two scenarios' namespaces, an admin's client."""

    def __init__(self, stack):
        self.run_id = f"r{datetime.now():%m%d%H%M%S}{secrets.token_hex(2)}"
        self.keys = KeyMaterial(stack.endpoints.keys_dir)
        self.api = ApiClient(stack.endpoints.base_url, request_id_prefix=f"t.cleanup.{self.run_id}",
                             trace_id=secrets.token_hex(16), timeout=10)
        self.leftovers = Leftovers(stack.endpoints.base_url, self.keys)

    def platform(self, scenario: str) -> Platform:
        return Platform(self.api, self.keys, Namespace(self.run_id, scenario), World())

    def admin(self, method: str, path: str):
        return self.api.request(method, path, token=self.keys.admin_token())


@pytest.fixture()
def run(stack):
    made = Run(stack)
    yield made
    made.api.close()
    made.leftovers.close()


def test_deactivating_an_org_takes_every_way_in_away_and_is_audited(run):
    acme = run.platform("acme")
    org = acme.org_with_owner("Acme", "Olive")
    acme.add_member("Acme", "Mia", "member")
    assert acme.issue_key("Olive", "Acme", "ci").status == 201
    assert acme.invite("Olive", "Acme", "Ivan", "viewer").status == 201
    olive_token = acme.access_token("Olive")

    done = run.admin("DELETE", f"/admin/orgs/{org.slug}")
    assert done.status == 200, done.summary()
    assert done.json() == {"slug": org.slug, "active": False, "keys_revoked": 1, "invitations_revoked": 1,
                           "members_removed": 2, "people_removed": 2}
    assert acme.chat("ci", "any-model").status == 401  # the key is revoked
    assert run.api.get(f"/orgs/{org.slug}", token=olive_token).status == 401  # Olive no longer exists
    assert run.api.post("/auth/login", json_body={"email": acme.world.people["Mia"].email,
                                                  "password": acme.world.people["Mia"].password}).status == 401
    listed = run.admin("GET", f"/admin/orgs?slug_contains={org.slug}").json()["orgs"]
    assert [(o["slug"], o["active"]) for o in listed] == [(org.slug, False)]
    again = run.admin("DELETE", f"/admin/orgs/{org.slug}")
    assert again.json()["keys_revoked"] == 0 and again.json()["people_removed"] == 0
    events = run.admin("GET", f"/admin/audit?action=org.deactivate&limit=10").json()["events"]
    mine = [e for e in events if e["target"] == f"org:{org.slug}"]
    assert len(mine) == 2 and mine[0]["actor"]["type"] == "admin", mine


def test_a_person_who_still_belongs_to_an_org_is_not_removed(run):
    acme = run.platform("acme")
    acme.org_with_owner("Acme", "Olive")
    olive = acme.world.people["Olive"]
    refused = run.admin("DELETE", f"/admin/users/{olive.user_id}")
    assert refused.status == 409 and refused.json()["code"] == "user_has_orgs", refused.summary()
    assert run.admin("DELETE", "/admin/users/usr_nobody").status == 404
    assert run.admin("DELETE", "/admin/orgs/no-such-org").status == 404


def test_only_an_admin_may_list_or_retire(run):
    acme = run.platform("acme")
    org = acme.org_with_owner("Acme", "Olive")
    for method, path in (("GET", "/admin/orgs"), ("DELETE", f"/admin/orgs/{org.slug}"), ("GET", "/admin/users")):
        assert run.api.request(method, path, token=acme.access_token("Olive")).status == 401
        assert run.api.request(method, path).status == 401


def test_a_run_is_retired_by_its_run_id_and_other_runs_are_left_alone(run, stack):
    first, second = run.platform("first scenario"), run.platform("second scenario")
    first.org_with_owner("Acme", "Olive")
    first.issue_key("Olive", "Acme", "ci")
    second.org_with_owner("Globex", "Gus")
    second.add_member("Globex", "Mia", "admin")
    left_member = second.world.people["Mia"]
    assert run.api.delete(f"/orgs/{second.world.org('Globex').slug}/members/{left_member.user_id}",
                          token=second.access_token("Gus")).status == 204  # Mia now belongs to no org
    other = Run(stack)
    other.platform("bystander").org_with_owner("Initech", "Ian")

    removed = run.leftovers.remove(run.run_id)
    assert (removed.orgs, removed.keys, removed.people, removed.refused) == (2, 1, 3, []), removed.describe()
    assert run.leftovers.active(run.run_id) == {"orgs": 0, "people": 0}
    assert other.leftovers.active(other.run_id) == {"orgs": 1, "people": 1}
    assert run.leftovers.remove(run.run_id).describe().startswith("0 org(s)")

    later = datetime.now(timezone.utc) + timedelta(seconds=1)
    assert other.leftovers.remove(created_before=later).orgs >= 1  # every run's, by the shape of its names
    assert other.leftovers.active(other.run_id) == {"orgs": 0, "people": 0}
    other.api.close()
    other.leftovers.close()


def test_the_suites_names_are_told_apart_from_anyone_elses():
    ns = Namespace("r1129191153d9b3w1", "features/x.feature:3:A scenario")
    assert SUITE_MADE.search(ns.slug("Acme")) and SUITE_MADE.search(ns.email("Olive"))
    for name in ("acme", "acme-prod-123456", "olive@example.test", "acme-r1129-abcdef"):
        assert not SUITE_MADE.search(name), name
