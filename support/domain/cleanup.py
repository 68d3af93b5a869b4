"""What a run leaves behind, removed through the platform admin API: the orgs it created are deactivated (keys and
invitations revoked, members' access removed, people left with no org removed) and the people it made who belong
to no org any more are removed (docs/contract.md, "Retiring orgs and people").

A run's orgs and people carry its run id (support.harness.namespace: slug `acme-<run id>-<scenario>`, email
`olive+<run id>-<scenario>@example.test`), so they are found by that mark; `older_than` finds every run's (the
run id's shape) created before a moment, for the leftovers of runs that crashed. Used at the end of a run
(environment.py) and by scripts/cleanup (tools/cleanup.py)."""
from __future__ import annotations

import re
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlencode

import requests

from support.client.api import ApiClient, Exchange, GatewayUnreachable
from support.client.assertions import expect_status
from support.domain.platform_api import Platform
from support.tokens.signing_keys import KeyMaterial

PAGE = 1000  # the most one admin list answers with
# A slug or email the suite made: `-<run id>-<6 hex>` before the end (slug) or before `@` (email), with a run id
# of the shape support.harness.config generates (r + MMDDhhmmss + 4 hex, then a worker's name, if any).
SUITE_MADE = re.compile(r"[-+](r\d{10}[0-9a-f]{4}[a-z0-9]*)-[0-9a-f]{6}(@example\.test)?$")


@dataclass
class Removed:
    orgs: int = 0
    keys: int = 0
    invitations: int = 0
    people: int = 0
    refused: list[str] = field(default_factory=list)  # what the gateway would not remove, with its answer

    def describe(self) -> str:
        text = (f"{self.orgs} org(s) deactivated ({self.keys} key(s) and {self.invitations} invitation(s) revoked), "
                f"{self.people} person(s) removed")
        if self.refused:
            text += f"; {len(self.refused)} refused: " + "; ".join(self.refused[:5])
        return text


class Leftovers:
    """Finds and removes what one run (or every run, before a moment) created, as a platform admin."""

    def __init__(self, base_url: str, keys: KeyMaterial, *, timeout: float = 15.0, parallel: int = 4):
        self.api = ApiClient(base_url, request_id_prefix=f"cleanup.{secrets.token_hex(3)}",
                             trace_id=secrets.token_hex(16), timeout=timeout)
        self.keys = keys
        self.parallel = parallel
        self.sessions = threading.local()  # one HTTP session per thread of the pool

    def remove(self, run_id: str | None = None, created_before: datetime | None = None) -> Removed:
        """Deactivate the run's active orgs, then remove its people who belong to no org. run_id None: every run's
        made before `created_before`."""
        removed = Removed()
        orgs = self._listed("orgs", "slug", run_id, created_before, active="true")
        self._each(orgs, lambda org: self._send("DELETE", f"/admin/orgs/{org['slug']}"), removed, self._count_org)
        people = [person for person in self._listed("users", "email", run_id, created_before) if person["orgs"] == 0]
        self._each(people, lambda person: self._send("DELETE", f"/admin/users/{person['id']}"), removed,
                   self._count_person)
        return removed

    def found(self, run_id: str | None = None, created_before: datetime | None = None) -> dict[str, list[str]]:
        """What `remove` would retire: the active orgs' slugs and the people's emails."""
        return {"active orgs": [o["slug"] for o in self._listed("orgs", "slug", run_id, created_before,
                                                                 active="true")],
                "people": [p["email"] for p in self._listed("users", "email", run_id, created_before)]}

    def active(self, run_id: str) -> dict[str, int]:
        """How many of the run's orgs are still active and how many of its people are left."""
        return {"orgs": len(self._listed("orgs", "slug", run_id, None, active="true")),
                "people": len(self._listed("users", "email", run_id, None))}

    def close(self) -> None:
        self.api.close()

    # ---- the admin API ---------------------------------------------------------------------------------------------

    def _listed(self, kind: str, named_by: str, run_id: str | None, created_before: datetime | None,
                **filters) -> list[dict]:
        """Every org or person of the run (or of any run, made before the moment), page by page."""
        query = dict(filters)
        if run_id:
            query[f"{named_by}_contains"] = f"{'-' if kind == 'orgs' else '+'}{run_id.lower()}-"
        if created_before is not None:
            query["created_before"] = created_before.isoformat()
        found, offset = [], 0
        while True:
            page = self._send("GET", f"/admin/{kind}?{urlencode({**query, 'offset': offset, 'limit': PAGE})}")
            items = page.json()[kind]
            found += [item for item in items if run_id or SUITE_MADE.search(item[named_by])]
            if len(items) < PAGE:
                return found
            offset += PAGE

    def _send(self, method: str, path: str) -> Exchange:
        exchange = self.api.prepare(method, path, token=self.keys.admin_token())
        if not hasattr(self.sessions, "session"):
            self.sessions.session = requests.Session()
        self.api.send(exchange, session=self.sessions.session)
        if exchange.status not in (200, 409):
            raise CleanupRefused(f"{method} {path} answered {exchange.status} [request id {exchange.request_id}]: "
                                 f"{exchange.text[:300]}")
        return exchange

    def _each(self, items: list[dict], call, removed: Removed, count) -> None:
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            for exchange in pool.map(call, items):
                if exchange.status == 409:
                    removed.refused.append(f"{exchange.path}: {exchange.json().get('detail', exchange.text)}")
                else:
                    count(removed, exchange.json())

    @staticmethod
    def _count_org(removed: Removed, answer: dict) -> None:
        removed.orgs += 1
        removed.keys += answer["keys_revoked"]
        removed.invitations += answer["invitations_revoked"]
        removed.people += answer["people_removed"]

    @staticmethod
    def _count_person(removed: Removed, answer: dict) -> None:
        removed.people += 1


class Retirement:
    """A platform admin retiring one of the scenario's orgs, and what its people and keys meet afterwards."""

    def __init__(self, platform: Platform):
        self.platform = platform
        self.api = platform.api

    def deactivate(self, org_name: str) -> Exchange:
        slug = self.platform.world.org(org_name).slug
        return self.api.delete(f"/admin/orgs/{slug}", token=self.platform.keys.admin_token())

    def listing(self, org_name: str) -> tuple[dict | None, Exchange]:
        """The org as the platform admin's list shows it (None: not listed), and the exchange."""
        slug = self.platform.world.org(org_name).slug
        exchange = expect_status(self.api.get(f"/admin/orgs?slug_contains={slug}",
                                              token=self.platform.keys.admin_token()), 200, "listing the orgs")
        return next((org for org in exchange.json()["orgs"] if org["slug"] == slug), None), exchange

    def open_again(self, org_name: str) -> Exchange:
        """A platform admin tries to open an org under the same slug (the answer unchecked)."""
        org = self.platform.world.org(org_name)
        return self.api.post("/admin/orgs", token=self.platform.keys.admin_token(),
                             json_body={"slug": org.slug, "name": org.name, "owner_email": "new@example.test"})

    def login(self, name: str) -> Exchange:
        """The person tries to log in with the password they had (the answer unchecked)."""
        person = self.platform.person(name)
        return self.api.post("/auth/login", json_body={"email": person.email, "password": person.password})


class CleanupRefused(Exception):
    """The gateway refused a cleanup request (or does not have the admin routes)."""


def after_run(base_url: str, keys: KeyMaterial, run_id: str) -> str:
    """Retire what the run created; one line saying what was done (or what stopped it, and how to finish)."""
    started = time.monotonic()
    leftovers = Leftovers(base_url, keys)
    try:
        removed = leftovers.remove(run_id)
    except (CleanupRefused, GatewayUnreachable) as problem:
        return f"not finished ({problem}); scripts/cleanup --run-id {run_id} retires the rest"
    finally:
        leftovers.close()
    return f"{removed.describe()} in {time.monotonic() - started:.1f} s"
