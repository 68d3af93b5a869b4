"""The audit log as the suite reads it: per org (owners and admins), platform-wide (admin token) and straight from
the database; and the secrets a scenario handled, to prove none of them ever reaches the log."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import urlencode

from sqlalchemy import select

from support.client.api import ApiClient, Exchange
from support.client.assertions import expect_status, expect_true
from support.database.reflection import Database
from support.tokens.signing_keys import KeyMaterial
from support.domain.platform_api import Platform
from support.harness.world import World

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
ACTORS = {"the platform": "admin", "the service": "service", "an anonymous caller": "anonymous"}
HEX32 = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class Actor:
    """Who an event should name: a type, and an id when the scenario knows which one."""
    type: str
    id: str | None = None

    def matches(self, event: dict) -> bool:
        actor = event.get("actor") or {}
        return actor.get("type") == self.type and (self.id is None or actor.get("id") == self.id)

    def __str__(self) -> str:
        return f"{self.type} {self.id}" if self.id else self.type


def last_audited_request(api: ApiClient) -> Exchange:
    """The scenario's latest request that must leave an event: a mutation, or any refused request (a successful
    read made meanwhile, such as fetching signing keys to check a token, is passed over)."""
    for exchange in reversed(api.exchanges):
        if exchange.method in MUTATING or (exchange.status or 0) >= 400:
            return exchange
    raise AssertionError("The scenario has made no change and had no request refused yet, so there is no request "
                         "whose audit event could be checked")


class AuditTrail:
    def __init__(self, platform: Platform, db: Database):
        self.platform = platform
        self.api = platform.api
        self.keys = platform.keys
        self.world = platform.world
        self.db = db

    def actor(self, words: str) -> Actor:
        """'the platform' -> a platform admin; 'the service' -> a billing service (S2S token); 'the key "ci"' ->
        that API key; 'an anonymous caller'; a name -> that person."""
        if words in ACTORS:
            return Actor(ACTORS[words])
        if words.startswith('the key "'):
            return Actor("api_key", self.world.key(words.split('"')[1]).id)
        return Actor("user", self.world.person(words).user_id)

    def last_audited_request(self) -> Exchange:
        return last_audited_request(self.api)

    def secrets_handled(self) -> dict[str, str]:
        return secrets_handled(self.api, self.keys, self.world)

    # ---- reading -----------------------------------------------------------------------------------------------

    def org_page(self, org_name: str, reader: str | None = None, **query) -> Exchange:
        """One page of an org's audit log, as its owner (or `reader`); the answer unchecked."""
        org = self.world.org(org_name)
        reader = reader or self.platform.owner_of(org_name)
        params = urlencode({k: v for k, v in query.items() if v is not None})
        return self.api.get(f"/orgs/{org.slug}/audit{'?' + params if params else ''}",
                            token=self.platform.access_token(reader))

    def org_events(self, org_name: str, reader: str | None = None, **query) -> list[dict]:
        exchange = self.org_page(org_name, reader, limit=1000, **query)
        expect_status(exchange, 200, f"reading the audit log of {org_name!r}")
        return exchange.json()["events"]

    def event_of(self, org_name: str, exchange: Exchange) -> dict:
        """The one event a request of the org left, as its owner reads it."""
        events = self.org_events(org_name, request_id=exchange.request_id)
        expect_true(len(events) == 1, f"Expected one event for request {exchange.request_id}, found {events}",
                    exchange)
        return events[0]

    def org_pages(self, org_name: str, size: int, reader: str | None = None) -> list[Exchange]:
        """Every page of an org's audit log, following next_cursor until it is null."""
        pages, cursor = [], None
        while True:
            page = self.org_page(org_name, reader, limit=size, cursor=cursor)
            expect_status(page, 200, f"reading page {len(pages) + 1} of the audit log of {org_name!r}")
            pages.append(page)
            cursor = page.json().get("next_cursor")
            if cursor is None:
                return pages
            expect_true(len(pages) < 1000, f"Expected the audit log of {org_name!r} to end, but it gave 1000 pages "
                        f"of {size} and still a next_cursor", page)

    def platform_events(self, **query) -> tuple[list[dict], Exchange]:
        params = urlencode({"limit": 1000, **{k: v for k, v in query.items() if v is not None}})
        exchange = self.api.get(f"/admin/audit?{params}", token=self.keys.admin_token())
        expect_status(exchange, 200, "a platform admin reading the audit log")
        return exchange.json()["events"], exchange

    def stored_events(self, *, request_ids: list[str] | None = None,
                      request_id_prefix: str | None = None) -> list[dict]:
        """Audit rows straight from the gateway's database (every column, as stored)."""
        table = self.db.table("audit_events")
        query = select(table).order_by(table.c.id)
        if request_ids is not None:
            query = query.where(table.c.request_id.in_(request_ids))
        if request_id_prefix is not None:
            query = query.where(table.c.request_id.like(request_id_prefix.replace("_", r"\_") + "%", escape="\\"))
        with self.db.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [json.loads(json.dumps(dict(row), default=str)) for row in rows]

    # ---- checking one request's event ----------------------------------------------------------------------------

    def expect_one_event(self, exchange: Exchange, *, action: str, actor: Actor, outcome: str) -> dict:
        """The request left exactly one event of its caller, with everything an auditor needs, in every view."""
        rid = exchange.request_id
        expect_true(exchange.served_request_id == rid, f"Expected the answer to carry X-Request-ID {rid!r} (the "
                    f"request id the suite sent), but it carried {exchange.served_request_id!r}", exchange)
        events, read = self.platform_events(request_id=rid)
        own = [e for e in events if (e.get("actor") or {}).get("type") != "system"]
        expect_true(len(own) == 1, f"Expected exactly one audit event for request {rid} ({exchange.method} "
                    f"{exchange.path} -> {exchange.status}), but the platform's audit log holds {len(own)}: "
                    f"{_brief(own)}", read)
        event = own[0]
        got = (event.get("action"), str(Actor(**(event.get("actor") or {"type": None}))), event.get("outcome"))
        expect_true(event.get("action") == action and actor.matches(event) and event.get("outcome") == outcome,
                    f"Expected the event of request {rid} to be {action} by {actor}, {outcome}; it was {got}", read)
        expect_true(event.get("request_id") == rid, f"Expected the event to carry request id {rid!r}, but it "
                    f"carried {event.get('request_id')!r}", read)
        expect_true(event.get("trace_id") == self.api.trace_id, f"Expected the event of request {rid} to carry the "
                    f"trace id of the traceparent the suite sent ({self.api.trace_id}), but it carried "
                    f"{event.get('trace_id')!r}", read)
        target = str(event.get("target") or "")
        method, _, route = target.partition(" ")
        named = route if method in MUTATING | {"GET"} and route.startswith("/") else target.split(":", 1)[-1]
        known = [str((event.get("actor") or {}).get("id"))] + [
            " ".join([e.path, json.dumps(e.request_body, default=str), e.text]) for e in self.api.exchanges]
        expect_true(bool(named) and any(named in text for text in known), f"Expected the event's target to name "
                    f"what request {rid} was aimed at (a route, or something this scenario created or named), but "
                    f"the target was {target!r}", read)
        if outcome != "allowed":
            expect_true(bool((event.get("reason") or "").strip()), f"Expected the {outcome} event of request {rid} "
                        f"to give a reason, but it gave {event.get('reason')!r}", read)
        expect_true(bool(event.get("at")), f"Expected the event of request {rid} to say when it happened", read)
        if self.db.url is not None:  # a deployment reached only over HTTP is checked through its API alone
            stored = [row for row in self.stored_events(request_ids=[rid]) if row.get("actor_type") != "system"]
            expect_true(len(stored) == 1 and stored[0].get("action") == action,
                        f"Expected the database to hold exactly the one {action} event for request {rid}, but it "
                        f"held {[(r.get('action'), r.get('outcome')) for r in stored]}", read)
        self._expect_in_org_view(event, read)
        return event

    def _expect_in_org_view(self, event: dict, read: Exchange) -> None:
        """An event of an org shows in that org's own audit log, read by its owner."""
        orgs = {org.slug: name for name, org in self.world.orgs.items()}
        if event.get("org") not in orgs:
            return
        name = orgs[event["org"]]
        if not self.world.people.get(self.platform.owner_of(name)) or \
                self.world.person(self.platform.owner_of(name)).user_id is None:
            return  # the owner has not joined yet: nobody can read the org's log
        seen = self.org_events(name, request_id=event["request_id"])
        expect_true(any(e.get("id") == event.get("id") for e in seen), f"Expected event {event.get('id')} of org "
                    f"{name!r} in that org's own audit log, but its owner sees {_brief(seen)}", read)


def _brief(events: list[dict]) -> list:
    return [(e.get("action"), (e.get("actor") or {}).get("type"), e.get("outcome"), e.get("target")) for e in events]


# ---- secrets a scenario handled ------------------------------------------------------------------------------------

JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+")
SECRET_FIELDS = {"password": "password", "access_token": "access token", "refresh_token": "refresh token"}


def secrets_handled(api: ApiClient, keys: KeyMaterial | None, world: World | None) -> dict[str, str]:
    """Every secret that went over the wire in this scenario (raw, from the client's own record), plus the
    harness's keys: value -> kind (password, access token, refresh token, API key, invitation token, bearer token,
    HS256 secret, private key)."""
    found: dict[str, str] = {}

    def add(value, kind):
        if isinstance(value, str) and len(value) >= 8:
            found.setdefault(value, kind)

    for exchange in api.exchanges:
        header = str(exchange.request_headers.get("Authorization") or "")
        if header.lower().startswith("bearer "):
            credential = header[7:].strip()
            add(credential, "API key" if credential.startswith("tg_") else "bearer token")
        invitation = re.match(r"^/invitations/([^/?]+)/accept", exchange.path)
        if invitation:
            add(invitation.group(1), "invitation token")
        for document in (_parsed(exchange.request_body), _parsed(exchange.text)):
            _walk(document, add)
    if world is not None:
        for person in world.people.values():
            add(person.password, "password")
            add(person.access_token, "access token")
            add(person.refresh_token, "refresh token")
        for key in world.keys.values():
            add(key.secret, "API key")
        for token in world.invitations.values():
            add(token, "invitation token")
    if keys is not None:
        add(keys.internal_secret, "HS256 secret")
        add(keys.admin_secret, "HS256 secret")
        body = "".join(line for line in keys.private_pem.splitlines() if line and not line.startswith("-----"))
        add(body, "private key")
        for line in keys.private_pem.splitlines():
            if not line.startswith("-----") and len(line) >= 40:
                add(line, "private key")
    return found


def _parsed(body):
    if isinstance(body, (dict, list)):
        return body
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if isinstance(body, str) and body[:1] in "{[":
        try:
            return json.loads(body)
        except ValueError:
            return None
    return None


def _walk(document, add, key: str = "") -> None:
    if isinstance(document, dict):
        for name, value in document.items():
            _walk(value, add, str(name))
    elif isinstance(document, list):
        for value in document:
            _walk(value, add, key)
    elif isinstance(document, str):
        if key in SECRET_FIELDS:
            add(document, SECRET_FIELDS[key])
        elif key == "key" and document.startswith("tg_"):
            add(document, "API key")
        elif key == "token" and document.startswith("inv_"):
            add(document, "invitation token")
        elif JWT.fullmatch(document):
            add(document, "bearer token")


def leaks(text: str, secrets: dict[str, str]) -> list[str]:
    """The kinds of the secrets that appear in text (never the secrets themselves)."""
    return sorted({kind for value, kind in secrets.items() if value in text})
