"""Every mutation and every refusal leaves exactly one audit event; a successful read leaves none.

Runs the embedded stack (gateway + model stub as child processes) and drives every mutating route of the
gateway's OpenAPI description, with and without credentials, plus the refusals each router makes (role too
low, outsider, wrong password, reused refresh token, over budget, rate limit, conflicts, unknown ids). Then it
counts the audit events per request id in the database.

Rules checked per request:
- a mutation that succeeded, or any refusal (401, 402, 403, 404, 409, 410, 422 decided by the gateway, 429):
  exactly one event by the caller (events by actor `system` are consequences, e.g. a sync applying a revision);
- malformed input (invalid_json / invalid_request / unsupported / body_too_large): at most one (not required);
- a configuration sync: at least one (one per effect: config.apply, config.prune, config.drift_corrected, or
  config.sync when it changed nothing);
- a successful read: none.
"""
from __future__ import annotations

import re
import secrets
from collections import Counter

import pytest
from sqlalchemy import select

from support.client.api import ApiClient
from support.harness.config import load
from support.stacks import local, make_stack
from support.database.reflection import Database
from support.tokens.signing_keys import KeyMaterial
from support.harness.namespace import Namespace
from support.domain.platform_api import Platform
from support.harness.world import World

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
MALFORMED = {"invalid_json", "invalid_request", "unsupported", "body_too_large", "invalid_idempotency_key"}
PUBLIC_MUTATIONS = {"/auth/login", "/auth/refresh", "/invitations/{token}/accept"}


@pytest.fixture(scope="module")
def stack():
    """The embedded stack, with an audit budget above the refusals without credentials this module sends within a
    sampling window (a few dozen in a fraction of a second): it checks that each is audited once, while sampling past the
    budget is checked by tests/gateway/test_security_http.py and the flood scenarios."""
    settings = {**local.GATEWAY_TEST_SETTINGS, "AUDIT_UNAUTHENTICATED_PER_ADDRESS": "1000",
                "AUDIT_UNAUTHENTICATED_PER_WINDOW": "1000"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(local, "GATEWAY_TEST_SETTINGS", settings)
        embedded = make_stack(load({}, environ={}))
        embedded.up()
    yield embedded
    embedded.down()


@pytest.fixture(scope="module")
def run(stack):
    """Drive the gateway once; return the client (its exchanges) and the audit events by request id."""
    endpoints = stack.endpoints
    api = ApiClient(endpoints.base_url, request_id_prefix="t.once", trace_id=secrets.token_hex(16), timeout=10)
    keys = KeyMaterial(endpoints.keys_dir)
    ns = Namespace("once" + secrets.token_hex(2), "audit-once")
    world = World()
    platform = Platform(api, keys, ns, world)
    db = Database(endpoints.database_url)
    admin = {"token": keys.admin_token()}
    service = {"token": keys.service_token()}

    # -- every mutating route, without credentials and with a credential of the wrong kind ------------------------
    spec = api.get("/openapi.json").json()
    mutating_routes = sorted((method.upper(), path) for path, item in spec["paths"].items()
                             for method in item if method.upper() in MUTATING)
    filled = lambda path: re.sub(r"\{[^}]+\}", "x-unknown", path)  # noqa: E731
    for method, path in mutating_routes:
        if path in PUBLIC_MUTATIONS:
            continue
        api.request(method, filled(path), json_body={})
        api.request(method, filled(path), json_body={}, token="not-a-token")

    # -- the happy paths, route by route --------------------------------------------------------------------------
    platform.create_org("Acme", "Olive", budget_micros=2_000_000)                # POST /admin/orgs
    platform.accept_invitation("Olive")                                          # POST /invitations/{t}/accept
    platform.login("Olive")                                                      # POST /auth/login
    olive = {"token": platform.access_token("Olive")}
    refreshed = api.post("/auth/refresh", json_body={"refresh_token": world.people["Olive"].refresh_token})
    old_refresh = world.people["Olive"].refresh_token
    platform.mint("Acme", 5_000_000)                                             # POST /admin/billing/mint
    slug = world.org("Acme").slug
    account = world.org("Acme").account_id
    platform.add_member("Acme", "Mia", "member")                                 # invite + accept
    platform.add_member("Acme", "Vic", "viewer")
    mia = {"token": platform.access_token("Mia")}
    vic = {"token": platform.access_token("Vic")}
    mia_id, vic_id = world.people["Mia"].user_id, world.people["Vic"].user_id
    platform.issue_key("Olive", "Acme", "ci")                                    # POST /orgs/{slug}/keys
    platform.issue_key("Olive", "Acme", "old")
    api.put(f"/orgs/{slug}/budget", json_body={"limit_micros": 3_000_000}, **olive)
    api.patch(f"/orgs/{slug}/members/{vic_id}", json_body={"role": "member"}, **olive)
    api.patch(f"/orgs/{slug}/members/{vic_id}", json_body={"role": "viewer"}, **olive)
    api.delete(f"/orgs/{slug}/keys/{world.key('old').id}", **olive)
    api.delete(f"/orgs/{slug}/keys/{world.key('old').id}", **olive)             # revoking twice: still one each
    reserved = api.post("/billing/reservations", json_body={"account_id": account, "amount_micros": 1000}, **service)
    reservation = reserved.json()["id"]
    api.post(f"/billing/reservations/{reservation}/finalize", json_body={"actual_micros": 500}, **service)
    second = api.post("/billing/reservations", json_body={"account_id": account, "amount_micros": 1000},
                      headers={"Idempotency-Key": "k1"}, **service)
    api.post("/billing/reservations", json_body={"account_id": account, "amount_micros": 1000},
             headers={"Idempotency-Key": "k1"}, **service)                      # a replay is a request too
    api.post(f"/billing/reservations/{second.json()['id']}/release", **service)
    platform.chat("ci", "echo-small")                                            # POST /v1/chat/completions
    api.post("/admin/config/sync", **admin)

    # -- refusals -------------------------------------------------------------------------------------------------
    api.post("/auth/login", json_body={"email": world.people["Olive"].email, "password": "wrong-password"})
    api.post("/auth/login", json_body={"email": "nobody@example.test", "password": "wrong-password"})
    api.post("/auth/refresh", json_body={"refresh_token": old_refresh})          # reused: family revoked
    api.post("/auth/refresh", json_body={"refresh_token": "garbage"})
    api.post("/invitations/inv_unknownunknownunknown/accept", json_body={"name": "X", "password": "password-1"})
    api.post(f"/invitations/{world.invitations['Mia']}/accept", json_body={"name": "Mia", "password": "password-1"})
    api.post("/admin/orgs", json_body={"slug": slug, "name": "Again", "owner_email": "o@example.test"}, **admin)
    api.post(f"/orgs/{slug}/keys", json_body={"name": "nope"}, **vic)            # 403 role too low
    api.put(f"/orgs/{slug}/budget", json_body={"limit_micros": 1}, **mia)        # 403
    api.patch(f"/orgs/{slug}/members/{mia_id}", json_body={"role": "owner"}, **mia)  # 403: mass assignment
    api.post(f"/orgs/{slug}/invitations", json_body={"email": "x@example.test", "role": "owner"}, **mia)
    api.delete(f"/orgs/{slug}/members/{world.people['Olive'].user_id}", **olive)  # 409 last owner
    api.delete(f"/orgs/{slug}/members/usr_unknown", **olive)                     # 404
    api.patch(f"/orgs/{slug}/members/usr_unknown", json_body={"role": "member"}, **olive)
    api.delete(f"/orgs/{slug}/keys/key_unknown", **olive)                        # 404
    api.get(f"/orgs/{slug}/audit", **mia)                                        # 403 read refused
    platform.create_org("Other", "Otto")
    platform.accept_invitation("Otto")
    otto = {"token": platform.access_token("Otto")}
    api.get(f"/orgs/{slug}", **otto)                                             # 404 outsider read
    api.post(f"/orgs/{slug}/keys", json_body={"name": "probe"}, **otto)          # 404 outsider write
    api.post("/billing/reservations", json_body={"account_id": "acct_unknown", "amount_micros": 1}, **service)
    api.post("/billing/reservations", json_body={"account_id": account, "amount_micros": 10 ** 12}, **service)
    api.post(f"/billing/reservations/{reservation}/finalize", json_body={"actual_micros": 1}, **service)  # 409
    api.post(f"/billing/reservations/{reservation}/release", **service)          # 409
    api.post("/billing/reservations/res_unknown/release", **service)             # 404
    api.get("/billing/reservations/res_unknown", **service)                      # 404 read
    api.post("/billing/reservations", json_body={"account_id": account, "amount_micros": 2000},
             headers={"Idempotency-Key": "k1"}, **service)                      # 422 key reused
    api.post("/admin/billing/mint", json_body={"account_id": "acct_unknown", "amount_micros": 1, "reason": "x"},
             **admin)
    api.post("/admin/billing/mint", json_body={"account_id": account, "amount_micros": 1, "reason": "x"},
             **service)                                                          # S2S token on an admin route
    api.post("/billing/reservations", json_body={"account_id": account, "amount_micros": 1}, **admin)
    api.get("/auth/me", token=world.key("ci").secret)                            # API key on the platform API
    api.get("/v1/models", **olive)                                               # user token on /v1
    platform.chat("ci", "no-such-model")                                         # 404 model_not_found
    api.put(f"/orgs/{slug}/budget", json_body={"limit_micros": 1}, **olive)
    platform.chat("ci", "echo-small")                                            # 402 budget_exceeded
    api.delete(f"/orgs/{slug}/keys/{world.key('old').id}", **olive)
    platform.chat("old", "echo-small")                                           # 401 revoked key

    # -- malformed input and plain reads ----------------------------------------------------------------------
    api.post(f"/orgs/{slug}/keys", json_body={"name": ""}, **olive)
    api.post(f"/orgs/{slug}/keys", data="{not json", headers={"Content-Type": "application/json"}, **olive)
    api.post("/v1/chat/completions", data="{not json", token=world.key("ci").secret)
    api.get(f"/orgs/{slug}", **olive)
    api.get(f"/orgs/{slug}/members", **mia)
    api.get(f"/orgs/{slug}/audit", **olive)
    api.get("/auth/me", **olive)
    api.get("/admin/audit?limit=5", **admin)
    api.get(f"/billing/accounts/{account}", **service)

    # -- signing-key rotation, last: retiring the first key ends every session signed by it ------------------------
    first_kid = next(k["kid"] for k in api.get("/admin/signing-keys", **admin).json()["keys"] if k["state"] == "active")
    new_kid = api.post("/admin/signing-keys", **admin).json()["kid"]
    api.post(f"/admin/signing-keys/{new_kid}/activate", **admin)
    api.post(f"/admin/signing-keys/{new_kid}/activate", **admin)                # already active: still one event
    api.post(f"/admin/signing-keys/{first_kid}/retire", **admin)
    api.post(f"/admin/signing-keys/{first_kid}/retire", **admin)                # already retired: still one event
    api.post(f"/admin/signing-keys/{first_kid}/activate", **admin)              # 409: retired for good
    api.post(f"/admin/signing-keys/{new_kid}/retire", **admin)                  # 409: it signs
    api.post("/admin/signing-keys/kid-unknown/retire", **admin)                 # 404

    events = db.table("audit_events")
    with db.engine.connect() as conn:
        rows = conn.execute(select(events.c.request_id, events.c.actor_type, events.c.action, events.c.target,
                                   events.c.outcome, events.c.reason, events.c.trace_id)
                            .where(events.c.request_id.like("t.once.%"))).all()
    db.dispose()
    by_request: dict[str, list] = {}
    for row in rows:
        by_request.setdefault(row.request_id, []).append(row)
    api.close()
    return {"api": api, "events": by_request, "mutating_routes": mutating_routes, "refreshed": refreshed,
            "log": stack.logs(5000).get("gateway", [])}


def _code(exchange) -> str | None:
    try:
        body = exchange.json()
    except AssertionError:
        return None
    if isinstance(body, dict):
        if isinstance(body.get("error"), dict):
            return body["error"].get("code")
        return body.get("code")
    return None


# A sync may apply a revision, prune and correct drift: one event per effect, all under its request id.
EFFECTS = {("POST", "/admin/config/sync")}


def _expected(exchange) -> str:
    """'one', 'none', 'at most one' or 'at least one'."""
    status = exchange.status or 0
    if exchange.path.startswith("/openapi.json"):
        return "none"
    if (exchange.method, exchange.path) in EFFECTS and status == 200:
        return "at least one"
    if 400 <= status < 500 and _code(exchange) in MALFORMED:
        return "at most one"
    if status >= 400 or exchange.method in MUTATING:
        return "one"
    return "none"


def test_every_request_leaves_the_number_of_events_its_kind_calls_for(run):
    wrong = []
    counted = Counter()
    for exchange in run["api"].exchanges:
        own = [e for e in run["events"].get(exchange.request_id, []) if e.actor_type != "system"]
        expected = _expected(exchange)
        counted[expected] += 1
        ok = {"one": len(own) == 1, "none": not own, "at most one": len(own) <= 1,
              "at least one": len(own) >= 1}[expected]
        if not ok:
            wrong.append(f"{exchange.method} {exchange.path} -> {exchange.status} {_code(exchange)} "
                         f"[{exchange.request_id}]: expected {expected}, got {[(e.actor_type, e.action) for e in own]}")
            if (exchange.status or 0) >= 500:
                wrong.extend("    " + line[:600] for line in run["log"] if exchange.request_id in line)
    print(f"requests checked: {sum(counted.values())} ({dict(counted)})")
    assert not wrong, f"{len(wrong)} request(s) with the wrong number of audit events:\n" + "\n".join(wrong)


def test_every_mutating_route_was_exercised_with_and_without_credentials(run):
    seen = {(e.method, e.path) for e in run["api"].exchanges}
    assert len(run["mutating_routes"]) >= 15, run["mutating_routes"]
    for method, path in run["mutating_routes"]:
        pattern = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + r"(\?.*)?$")
        assert any(m == method and pattern.match(p) for m, p in seen), f"{method} {path} was never called"


def test_the_refusals_were_refusals(run):
    """Guard against the test passing vacuously: the requests meant as refusals were refused."""
    statuses = Counter(e.status for e in run["api"].exchanges)
    for status in (401, 402, 403, 404, 409, 422):
        assert statuses[status] >= 1, statuses
    assert run["refreshed"].status == 200


def test_every_event_names_its_target_and_every_refusal_its_reason(run):
    events = [e for per_request in run["events"].values() for e in per_request]
    assert len(events) >= 90
    no_target = [(e.request_id, e.action) for e in events if not e.target]
    assert not no_target, f"events without a target: {no_target}"
    no_reason = [(e.request_id, e.action) for e in events if e.outcome != "allowed" and not e.reason]
    assert not no_reason, f"refusals without a reason: {no_reason}"
    wrong_trace = [(e.request_id, e.trace_id) for e in events if e.trace_id != run["api"].trace_id]
    assert not wrong_trace, f"events not in the trace the client sent: {wrong_trace}"
