"""What a failed step carries into the report: the last exchanges, the gateway's log lines for their request ids,
the audit events those requests left, and the state of the stack."""
from __future__ import annotations

import json

from support import evidence

LAST_EXCHANGES = 5


def attach(context) -> None:
    api = getattr(context, "api", None)
    exchanges = api.exchanges[-LAST_EXCHANGES:] if api is not None else []
    request_ids = [e.request_id for e in exchanges]
    evidence.attach_json("Failure: last exchanges", [e.evidence() for e in exchanges])
    stack = context.stack
    evidence.attach_json("Failure: stack state", stack.state())
    logs = stack.logs(400)
    gateway_lines = logs.get("gateway", [])
    matching = [line for line in gateway_lines if any(rid in line for rid in request_ids)]
    evidence.attach_text("Failure: gateway log lines for these requests",
                         "\n".join(matching) or f"(no log line mentions {', '.join(request_ids) or 'any request'})")
    evidence.attach_text("Failure: gateway log tail", "\n".join(gateway_lines[-60:]))
    audit = _audit_events(context, request_ids)
    if audit is not None:
        evidence.attach_json("Failure: audit events for these requests", audit)


def _audit_events(context, request_ids: list[str]):
    """Read audit events straight from the database (no HTTP: that would add exchanges to the evidence)."""
    db = getattr(context, "db", None)
    if db is None or db.url is None or not request_ids:
        return None
    try:
        events = db.table("audit_events")
        with db.engine.connect() as conn:
            rows = conn.execute(events.select().where(events.c.request_id.in_(request_ids))
                                .order_by(events.c.id)).mappings().all()
        return [json.loads(json.dumps(dict(row), default=str)) for row in rows]
    except Exception as exc:  # evidence gathering must never mask the real failure
        return {"error": f"could not read audit events: {type(exc).__name__}: {exc}"}
