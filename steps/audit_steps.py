"""The audit log: one event per change and per refusal, correlation ids, secrets kept out, queries and paging."""
import json
import re
from datetime import datetime

from behave import given, then, when

from support.client.assertions import expect_equal, expect_status, expect_true
from support.domain.audit_trail import HEX32, Actor, leaks
from support.harness import step_types  # noqa: F401  (registers {name:Name}, {pronoun:Pronoun}, ...)
from support.harness.waits import wait_until

TARGETS = {"a key": "key", "an invitation": "invitation", "the org": "org", "a user": "user", "a model": "model",
           "an account": "account", "a reservation": "reservation", "its route": None}
OUTCOMES = ("allowed", "denied", "failed")
BAD_TRACEPARENT = "00-" + "g" * 32 + "-00f067aa0ba902b7-01"


# ---- one event per request -------------------------------------------------------------------------------------

@then('the request leaves exactly one audit event: {action} by {actor} on {target}, {outcome}')
def one_event(context, action, actor, target, outcome):
    expect_true(outcome in OUTCOMES, f"The outcome {outcome!r} is none of {OUTCOMES}")
    expect_true(target in TARGETS, f"The target {target!r} is none of {sorted(TARGETS)}")
    audit = context.state.audit
    exchange = audit.last_audited_request()
    event = audit.expect_one_event(exchange, action=action, actor=audit.actor(actor), outcome=outcome)
    shown = str(event.get("target") or "")
    kind = TARGETS[target]
    if kind is None:
        expect_true(shown == f"{exchange.method} {exchange.path}", f"Expected the event's target to be the route "
                    f"called ({exchange.method} {exchange.path}), but it was {shown!r}", exchange)
    else:
        expect_true(shown.startswith(f"{kind}:") and len(shown) > len(kind) + 1, f"Expected the event's target to "
                    f"name {target} ({kind}:<id>), but it was {shown!r}", exchange)
    context.state.world.audit.event = event


@then('the audit log of "{org}" shows, each with the request id the suite sent:')
def audit_shows(context, org):
    state = context.state
    events = state.platform.audit(org)
    read = state.api.exchanges[-1]
    sent = {e.request_id: e for e in state.api.exchanges}
    for row in context.table:
        actor = state.audit.actor(row["actor"])
        matches = [e for e in events if e["action"] == row["action"] and e["outcome"] == row["outcome"]
                   and actor.matches(e)]
        expect_true(bool(matches), f"Expected an audit event {row['action']} by {row['actor']} with outcome "
                    f"{row['outcome']} in {org!r}, but the log held: "
                    f"{[(e['action'], e['actor'], e['outcome'], e['request_id']) for e in events]}", read)
        foreign = [m["request_id"] for m in matches if m["request_id"] not in sent]
        expect_true(not foreign, f"Expected the {row['action']} event to carry a request id the suite sent, but it "
                    f"carried {foreign}; the suite sent {sorted(sent)}")


@when('{name:Name} accepts {pronoun:Pronoun} invitation')
def accepts_invitation(context, name, pronoun):
    state = context.state
    state.world.last.answer = state.platform.accept_invitation(name)


@when('a caller without credentials asks to issue an API key for "{org}"')
def anonymous_key_request(context, org):
    state = context.state
    state.world.last.answer = state.identity.issue_key_as(None, org, "anonymous")
    expect_status(state.world.last.answer, 401, "a request without credentials to issue an API key")


# ---- correlation -------------------------------------------------------------------------------------------------

@then("the answer, its audit event and the model's backend carry the request id and the trace the caller sent")
def correlated_everywhere(context):
    state = context.state
    exchange = state.world.answer()
    expect_status(exchange, 200, "the chat completion")
    rid, trace = exchange.request_id, state.api.trace_id
    expect_equal(exchange.served_request_id, rid, "the X-Request-ID of the answer", exchange)
    bearer = exchange.request_headers.get("Authorization", "").partition(" ")[2]
    [key] = [k for k in state.world.keys.values() if k.secret == bearer]
    event = state.audit.expect_one_event(exchange, action="chat.completion", actor=Actor("api_key", key.id),
                                         outcome="allowed")
    expect_equal(event["trace_id"], trace, "the trace id of the audit event", exchange)
    backend = exchange.response_headers.get("X-Gateway-Backend") or "primary"
    calls = state.routing.calls_with_request_id(backend, rid)
    expect_true(len(calls) == 1, f"Expected the {backend} backend to have been called once with X-Request-ID "
                f"{rid}, but it saw {len(calls)} such call(s)", exchange)
    headers = {k.lower(): v for k, v in calls[0]["headers"].items()}
    parent = headers.get("traceparent") or ""
    parts = parent.split("-")
    expect_true(len(parts) == 4 and parts[1] == trace, f"Expected the backend to get a traceparent in trace "
                f"{trace}, but it got {parent!r}", exchange)
    sent_parent = exchange.request_headers["traceparent"].split("-")[2]
    expect_true(parts[2] != sent_parent, f"Expected the gateway to call the backend from a span of its own, not the "
                f"caller's span {sent_parent}", exchange)


@then("every gateway log line about that request is a JSON object with its request id and trace id")
def log_lines_correlated(context):
    state = context.state
    exchange = state.audit.last_audited_request()
    if not state.stack.logs(1).get("gateway"):
        context.scenario.skip(f"the {state.stack.name} stack offers no gateway log to read")
        return
    # The access line is written once the answer has gone out, so it may trail the answer by a moment.
    lines = wait_until(f"the gateway's access line for request {exchange.request_id}",
                       lambda: state.stack.logs(2000).get("gateway") or [],
                       lambda seen: any(exchange.request_id in line and exchange.path in line for line in seen),
                       timeout=5, describe=lambda seen: f"{len(seen)} lines, the last: {seen[-3:]}")
    parsed, not_json = [], []
    for line in lines:
        start = line.find("{")
        try:
            parsed.append(json.loads(line[start:]) if start >= 0 else None)
        except ValueError:
            parsed.append(None)
        if parsed[-1] is None or not isinstance(parsed[-1], dict):
            not_json.append(line)
    expect_true(not not_json, f"Expected every gateway log line to be one JSON object, but {len(not_json)} of the "
                f"last {len(lines)} were not, e.g. {not_json[:3]}", exchange)
    mine = [p for p in parsed if p.get("request_id") == exchange.request_id]
    expect_true(any(p.get("path") == exchange.path for p in mine), f"Expected the gateway's access line for "
                f"{exchange.method} {exchange.path} to carry request id {exchange.request_id}, but the lines with "
                f"that id were {mine}", exchange)
    about = [p for p in parsed if p.get("path") == exchange.path and p.get("method") == exchange.method]
    strays = [p for p in about if p.get("request_id") != exchange.request_id]
    expect_true(not strays, f"Expected every log line about {exchange.method} {exchange.path} to carry request id "
                f"{exchange.request_id}, but these carried another: {strays}", exchange)
    wrong_trace = [p for p in mine if p.get("trace_id") != state.api.trace_id]
    expect_true(not wrong_trace, f"Expected the log lines of request {exchange.request_id} to carry trace id "
                f"{state.api.trace_id}, but these did not: {wrong_trace}", exchange)


@when('{name:Name} issues the API key "{key}" for "{org}" with no request id')
def issues_key_anonymously(context, name, key, org):
    state = context.state
    state.world.last.answer = state.identity.issue_key_as(name, org, key, headers={"X-Request-ID": None})
    expect_status(state.world.last.answer, 201, f"{name} issuing the API key {key!r} without a request id")


@when('{name:Name} issues the API key "{key}" for "{org}" with a malformed trace context')
def issues_key_with_bad_trace(context, name, key, org):
    state = context.state
    state.world.audit.bad_traceparent = BAD_TRACEPARENT
    state.world.last.answer = state.identity.issue_key_as(name, org, key, headers={"traceparent": BAD_TRACEPARENT})
    expect_status(state.world.last.answer, 201, f"{name} issuing the API key {key!r} with a malformed traceparent")


@then("the gateway answers with a request id it made up, and the audit event carries that id")
def made_up_request_id(context):
    state = context.state
    exchange = state.world.answer()
    expect_true("X-Request-ID" not in exchange.request_headers, "The request was meant to go without a request id, "
                "but the suite sent one", exchange)
    made_up = exchange.served_request_id
    expect_true(bool(made_up) and re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", made_up or "") is not None,
                f"Expected the answer to carry a request id made up by the gateway, but X-Request-ID was "
                f"{made_up!r}", exchange)
    events, read = state.audit.platform_events(request_id=made_up)
    expect_true(len(events) == 1 and events[0]["action"] == "keys.create", f"Expected exactly the keys.create "
                f"event under the made-up request id {made_up}, but found {events}", read)


@then("the gateway starts a new trace for the request, and the audit event carries that trace")
def new_trace(context):
    state = context.state
    exchange = state.world.answer()
    events, read = state.audit.platform_events(request_id=exchange.request_id)
    expect_true(len(events) == 1, f"Expected one audit event for request {exchange.request_id}, found {events}",
                read)
    trace = events[0].get("trace_id") or ""
    expect_true(HEX32.match(trace) is not None and set(trace) != {"0"}, f"Expected the audit event to carry a new "
                f"valid trace id (32 lowercase hex digits), but it carried {trace!r}", read)
    expect_true(trace not in (state.api.trace_id, "g" * 32), f"Expected a new trace, not the one the caller sent "
                f"({trace})", read)


# ---- secrets -----------------------------------------------------------------------------------------------------

REQUIRED_KINDS = ("password", "access token", "refresh token", "API key", "invitation token", "HS256 secret")


@then('none of the secrets this scenario handled appears in the audit log of "{org}", read through the API or '
      'from the database')
def no_secrets(context, org):
    state = context.state
    audit = state.audit
    held = audit.secrets_handled()
    kinds = set(held.values())
    missing = [k for k in REQUIRED_KINDS if k not in kinds]
    expect_true(not missing, f"Expected this scenario to have handled every kind of secret ({', '.join(REQUIRED_KINDS)}"
                f") so the check means something, but it handled none of: {missing}")
    owner_view = audit.org_page(org, limit=1000)
    expect_status(owner_view, 200, f"the owner reading the audit log of {org!r}")
    admin_views = [audit.platform_events(request_id=e.request_id)[1] for e in state.api.exchanges
                   if e.method in ("POST", "PUT", "PATCH", "DELETE")]
    stored = audit.stored_events(request_id_prefix=state.api.request_id_prefix)
    expect_true(len(stored) >= 6, f"Expected the scenario's changes in the database's audit log, but found only "
                f"{len(stored)} event(s) under request ids {state.api.request_id_prefix}.*", owner_view)
    for name, text in ([("the org's audit log", owner_view.text)]
                       + [(f"the platform's audit log for {v.path}", v.text) for v in admin_views]
                       + [("the database's audit rows", json.dumps(stored, default=str))]):
        leaked = leaks(text, held)
        expect_true(not leaked, f"Expected no secret in {name}, but it holds: {', '.join(leaked)} (the values are "
                    f"in the scenario's exchanges, masked)", owner_view)


# ---- queries and paging ------------------------------------------------------------------------------------------

@given('{name:Name} has made {count:d} changes to "{org}", one after another')
@given('{name:Name} has made {count:d} change to "{org}", one after another')
def made_changes(context, name, count, org):
    state = context.state
    state.world.audit.changes = []
    for number in range(1, count + 1):
        exchange = state.platform.issue_key(name, org, f"change-{number}")
        expect_status(exchange, 201, f"{name} making change {number} (issuing a key)")
        state.world.audit.changes.append(exchange)


@when('{name:Name} looks for the denied "{action}" events of "{org}"')
def looks_for_denied(context, name, action, org):
    state = context.state
    state.world.audit.found = state.audit.org_events(org, name, action=action, outcome="denied")


@then("{name:Name} finds exactly {other:Name}'s attempt")
def finds_attempt(context, name, other):
    world = context.state.world
    attempt = world.answer()
    found = world.audit.found
    expect_true([e["request_id"] for e in found] == [attempt.request_id], f"Expected {name} to find exactly "
                f"{other}'s attempt (request {attempt.request_id}), but the search found "
                f"{[(e['action'], e['outcome'], e['request_id']) for e in found]}", attempt)
    expect_equal(found[0]["actor"]["id"], world.person(other).user_id, "the actor of the event found")


@when('{name:Name} reads the audit log of "{org}" from the second change until the third')
def reads_range(context, name, org):
    state = context.state
    reads = state.world.audit
    second, third = (state.audit.event_of(org, e) for e in reads.changes[1:3])
    start, end = datetime.fromisoformat(second["at"]), datetime.fromisoformat(third["at"])
    expect_true(start < end, f"Expected the second change ({second['at']}) to be stamped before the third "
                f"({third['at']})")
    reads.expected = [second]
    reads.found = state.audit.org_events(org, name, since=second["at"], until=third["at"])
    reads.range_read = state.api.exchanges[-1]


@then("{name:Name} finds exactly the second change")
def finds_second(context, name):
    reads = context.state.world.audit
    found = [(e["id"], e["action"]) for e in reads.found]
    expected = [(e["id"], e["action"]) for e in reads.expected]
    expect_equal(found, expected, "the events between the second change and the third (since inclusive, until "
                 "exclusive)", reads.range_read)


@when('{name:Name} reads the audit log of "{org}" {size:d} events at a time')
def reads_pages(context, name, org, size):
    state = context.state
    reads = state.world.audit
    reads.page_size = size
    reads.pages = state.audit.org_pages(org, size, name)
    reads.whole_log = state.audit.org_events(org, name)


@then("the pages hold every event of the log exactly once, newest first, and the last page says there is no more")
def pages_hold_everything(context):
    reads = context.state.world.audit
    pages, size = reads.pages, reads.page_size
    ids = [e["id"] for page in pages for e in page.json()["events"]]
    expected = [e["id"] for e in reads.whole_log]
    expect_true(len(pages) >= 2, f"Expected the log of {len(expected)} events to take several pages of {size}, "
                f"but it came in {len(pages)}", pages[-1])
    expect_equal(ids, expected, f"the event ids over {len(pages)} pages of {size} (the whole log, read at once, "
                 f"newest first)", pages[-1])
    # The same order twice proves consistency, not the order: each event must be older than the one before it.
    events = [(e["id"], datetime.fromisoformat(e["at"]), page) for page in pages for e in page.json()["events"]]
    for (newer, newer_at, _), (older, older_at, page) in zip(events, events[1:]):
        expect_true(older < newer and older_at <= newer_at, f"Expected the log newest first, but event {older} "
                    f"({older_at.isoformat()}) came after event {newer} ({newer_at.isoformat()})", page)
    for page in pages[:-1]:
        expect_equal(len(page.json()["events"]), size, "the number of events on a page that is not the last", page)
    expect_equal(pages[-1].json().get("next_cursor"), None, "the next_cursor of the last page", pages[-1])


@when("a platform admin looks up the request of {name:Name}'s change in the platform's audit log")
def admin_looks_up(context, name):
    state = context.state
    reads = state.world.audit
    reads.found, reads.lookup = state.audit.platform_events(request_id=reads.changes[-1].request_id)


@then('the platform admin finds exactly that change, in the org "{org}"')
def admin_finds(context, org):
    world = context.state.world
    reads = world.audit
    change, found = reads.changes[-1], reads.found
    expect_true(len(found) == 1 and found[0]["action"] == "keys.create", f"Expected exactly the keys.create event "
                f"of request {change.request_id}, but the platform's log gave {found}", reads.lookup)
    expect_equal(found[0]["org"], world.org(org).slug, "the org of the event", reads.lookup)
