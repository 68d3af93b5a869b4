"""Per-request correlation: the request id and W3C trace context, visible to logs, audit and upstream calls."""
from __future__ import annotations

import re
import secrets
from contextvars import ContextVar
from dataclasses import dataclass

REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# W3C trace context: version-traceid-parentid-flags; a later version may append fields after another dash.
TRACEPARENT_PATTERN = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")


@dataclass(frozen=True)
class Correlation:
    request_id: str
    trace_id: str
    parent_span_id: str | None = None

    def child_traceparent(self) -> str:
        """The traceparent to send to a backend: same trace, a new span of ours."""
        return f"00-{self.trace_id}-{secrets.token_hex(8)}-01"


_current: ContextVar[Correlation | None] = ContextVar("correlation", default=None)


def correlation_from_headers(request_id: str | None, traceparent: str | None) -> Correlation:
    rid = request_id if request_id and REQUEST_ID_PATTERN.match(request_id) else f"gw-{secrets.token_hex(12)}"
    match = TRACEPARENT_PATTERN.match((traceparent or "").strip().lower())
    if (match and match.group(1) != "ff" and not (match.group(1) == "00" and match.group(5))
            and set(match.group(2)) != {"0"} and set(match.group(3)) != {"0"}):
        return Correlation(rid, match.group(2), match.group(3))
    return Correlation(rid, secrets.token_hex(16))


def set_current(correlation: Correlation):
    return _current.set(correlation)


def reset_current(token) -> None:
    _current.reset(token)


def current() -> Correlation | None:
    return _current.get()


def current_request_id() -> str | None:
    c = _current.get()
    return c.request_id if c else None


def current_trace_id() -> str | None:
    c = _current.get()
    return c.trace_id if c else None
