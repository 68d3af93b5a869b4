"""What a failed step carries into the report: the last exchanges, the gateway's log lines for their request ids,
the audit events those requests left, and the state of the stack.

Stack-agnostic: it asks the stack backend for `state()` and `logs()` (local, compose and external stacks each
answer what they can) and reads audit events through the database the stack named, if any. Gathering evidence
never raises: a piece that cannot be had is attached as a note saying why, so the real failure stays visible.
"""
from __future__ import annotations

import json
import re

from support.client import evidence

LAST_EXCHANGES = 5
LOG_LINES_SCANNED = 2000
LOG_TAIL = 60


def attach(state, step=None) -> None:
    """What a failed step carries into the report; `state` is the scenario's (its api, stack and db are read)."""
    api = getattr(state, "api", None)
    exchanges = api.exchanges[-LAST_EXCHANGES:] if api is not None else []
    request_ids = [e.request_id for e in exchanges]
    served_ids = [e.served_request_id for e in exchanges if e.served_request_id]
    ids = list(dict.fromkeys(request_ids + served_ids))
    _safely("Failure: summary", lambda: evidence.attach_text("Failure: summary", summary(step, exchanges, api)))
    _safely("Failure: last exchanges",
            lambda: evidence.attach_json("Failure: last exchanges", [e.evidence() for e in exchanges]))
    stack = getattr(state, "stack", None)
    _safely("Failure: stack state",
            lambda: evidence.attach_json("Failure: stack state", stack.state() if stack else {}))
    _safely("Failure: gateway log lines", lambda: _attach_logs(stack, ids))
    _safely("Failure: audit events", lambda: _attach_audit(getattr(state, "db", None), ids))


def summary(step, exchanges, api) -> str:
    lines = []
    if step is not None:
        lines.append(f"Step: {step.keyword} {step.name}  ({step.location})")
        lines.append(f"Error: {(step.error_message or '').strip()}")
    if api is not None:
        lines.append(f"Trace id sent: {api.trace_id}")
    lines.append(f"Last {len(exchanges)} exchange(s), newest last:")
    for e in exchanges:
        served = e.served_request_id
        lines.append(f"  {e.title()}" + (f" (gateway answered with request id {served})"
                                          if served and served != e.request_id else ""))
    return "\n".join(lines)


def _attach_logs(stack, ids: list[str]) -> None:
    logs = stack.logs(LOG_LINES_SCANNED) if stack is not None else {}
    if not logs:
        evidence.attach_text("Failure: gateway log lines for these requests",
                             f"(the {getattr(stack, 'name', 'current')} stack offers no process logs)")
        return
    gateway_lines = logs.get("gateway", [])
    matching = [line for line in gateway_lines if _mentions(line, ids)]
    evidence.attach_text("Failure: gateway log lines for these requests",
                         "\n".join(matching) or f"(no gateway log line carries {', '.join(ids) or 'any request id'})")
    tails = []
    for name, lines in logs.items():
        tails.append(f"==> {name} (last {min(len(lines), LOG_TAIL)} lines) <==")
        tails.extend(lines[-LOG_TAIL:])
    evidence.attach_text("Failure: log tail of every process", "\n".join(tails))


def _mentions(line: str, ids: list[str]) -> bool:
    """A JSON log line whose request_id is one of ids; for other lines, an id standing as a whole word."""
    start = line.find("{")
    if start >= 0:
        try:
            parsed = json.loads(line[start:])
            if isinstance(parsed, dict) and "request_id" in parsed:
                return parsed["request_id"] in ids
        except ValueError:
            pass
    return any(re.search(rf"(?<![\w.:-]){re.escape(rid)}(?![\w.:-])", line) for rid in ids)


def _attach_audit(db, ids: list[str]) -> None:
    if db is None or db.url is None:
        evidence.attach_text("Failure: audit events for these requests",
                             "(the stack named no database, so audit events were not read)")
        return
    if not ids:
        return
    events = db.table("audit_events")
    # Straight from the database: reading them over HTTP would add exchanges to the evidence.
    with db.engine.connect() as conn:
        rows = conn.execute(events.select().where(events.c.request_id.in_(ids))
                            .order_by(events.c.id)).mappings().all()
    evidence.attach_json("Failure: audit events for these requests",
                         [json.loads(json.dumps(dict(row), default=str)) for row in rows]
                         or f"(no audit event carries {', '.join(ids)})")


def _safely(what: str, gather) -> None:
    try:
        gather()
    except Exception as exc:  # evidence gathering must never mask the real failure
        try:
            evidence.attach_text(f"{what} (unavailable)", f"could not gather {what}: {type(exc).__name__}: {exc}")
        except Exception:
            pass
