"""Broken answers a deployment could give, made by the corrupting proxy (tools/prove/proxy.py) out of its real ones:
a status flipped, a header dropped, a number changed in a JSON body, a stream cut short. Each names the features
expected to notice."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Callable

F = "features/"


@dataclass
class Exchange:
    """An answer on its way back through the proxy (`body` is read once the answer is not a stream)."""
    method: str
    path: str
    status: int
    headers: dict[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class Corruption:
    name: str
    what: str
    caught_by: tuple[str, ...]
    path: str  # a regular expression the whole request path matches
    method: str | None = None  # None: any method
    status: int | None = None  # only answers with this status
    change: Callable[[Exchange], bool] | None = None  # changes the answer in place; True when it changed it
    event: Callable[[bytes], bytes | None] | None = field(default=None)  # one event of a stream: kept, changed, None

    def matches(self, exchange: Exchange) -> bool:
        return (self.method in (None, exchange.method) and self.status in (None, exchange.status)
                and re.fullmatch(self.path, exchange.path) is not None)

    def corrupt(self, exchange: Exchange) -> bool:
        return self.change(exchange) if self.change is not None else False

    def corrupt_event(self, event: bytes) -> bytes | None:
        return self.event(event) if self.event is not None else event


def status_to(new: int) -> Callable[[Exchange], bool]:
    def change(exchange: Exchange) -> bool:
        exchange.status = new
        return True
    return change


def without_header(name: str) -> Callable[[Exchange], bool]:
    def change(exchange: Exchange) -> bool:
        found = [k for k in exchange.headers if k.lower() == name.lower()]
        for key in found:
            del exchange.headers[key]
        return bool(found)
    return change


def json_edit(edit: Callable[[dict], bool]) -> Callable[[Exchange], bool]:
    """`edit(body)` changes the parsed JSON object in place and says whether it did."""
    def change(exchange: Exchange) -> bool:
        try:
            body = json.loads(exchange.body)
        except ValueError:
            return False
        if not isinstance(body, dict) or not edit(body):
            return False
        exchange.body = json.dumps(body).encode()
        return True
    return change


def add_to(key: str, amount: int, within: str | None = None) -> Callable[[dict], bool]:
    def edit(body: dict) -> bool:
        holder = body.get(within) if within else body
        if not isinstance(holder, dict) or type(holder.get(key)) is not int:
            return False
        holder[key] += amount
        return True
    return edit


def reversed_list(key: str) -> Callable[[dict], bool]:
    def edit(body: dict) -> bool:
        items = body.get(key)
        if not isinstance(items, list) or len(items) < 2:
            return False
        items.reverse()
        return True
    return edit


def set_value(key: str, value) -> Callable[[dict], bool]:
    def edit(body: dict) -> bool:
        if key not in body or body[key] == value:
            return False
        body[key] = value
        return True
    return edit


def dropped_check(name: str) -> Callable[[dict], bool]:
    def edit(body: dict) -> bool:
        checks = body.get("checks")
        return isinstance(checks, dict) and checks.pop(name, None) is not None
    return edit


def private_half(body: dict) -> bool:
    keys = body.get("keys")
    if not isinstance(keys, list) or not keys:
        return False
    for key in keys:
        key["d"] = key.get("x")  # a private scalar's place, filled with something of its shape
    return True


def extra_model(body: dict) -> bool:
    models = body.get("data")
    if not isinstance(models, list):
        return False
    models.append({"id": "a-model-of-another-org", "object": "model", "owned_by": "gateway"})
    return True


def without_done(event: bytes) -> bytes | None:
    return None if event.strip() == b"data: [DONE]" else event


def without_usage(event: bytes) -> bytes | None:
    return None if b'"usage":{' in event.replace(b" ", b"") and b'"choices":[]' in event.replace(b" ", b"") \
        else event


def first_letter_doubled(event: bytes) -> bytes:
    """A content piece whose text changed on the way: its first character written twice."""
    return re.sub(rb'("content":\s*")(\w)', rb"\1\2\2", event, count=1)


CHAT = r"/v1/chat/completions"
CORRUPTIONS: list[Corruption] = [
    Corruption("unauthenticated-as-forbidden", "a refusal for a missing or bad credential says 403, not 401",
               (F + "keys/keys.lifecycle.feature",), r"/.*", status=401, change=status_to(403)),
    Corruption("over-budget-as-rate-limited", "a refusal over budget says 429 instead of 402",
               (F + "budgets/budgets.limits.feature",), CHAT, status=402, change=status_to(429)),
    Corruption("created-as-ok", "a reservation that was created says 200 instead of 201",
               (F + "billing/billing.reservations.feature",), r"/billing/reservations", "POST", 201, status_to(200)),
    Corruption("request-id-header-dropped", "answers lose their X-Request-ID",
               (F + "audit/audit.correlation.feature",), r"/.*", change=without_header("X-Request-ID")),
    Corruption("no-store-dropped", "answers that carry tokens may be cached (Cache-Control dropped)",
               (F + "security/security.secrets.feature",), r"/.*", change=without_header("Cache-Control")),
    Corruption("retry-after-dropped", "a rate-limited key is not told when to retry",
               (F + "budgets/budgets.rate-limits.feature",), CHAT, status=429, change=without_header("Retry-After")),
    Corruption("usage-one-token-more", "a completion's usage says one completion token more than was charged",
               (F + "budgets/budgets.charging.feature",), CHAT, "POST", 200,
               json_edit(add_to("completion_tokens", 1, within="usage"))),
    Corruption("available-balance-inflated", "an account's balance shows a cent more available than it has",
               (F + "billing/billing.reservations.feature",), r"/billing/accounts/[^/]+", "GET", 200,
               json_edit(add_to("available_micros", 10_000))),
    Corruption("audit-page-reversed", "a page of the audit log comes oldest first",
               (F + "audit/audit.queries.feature",), r"/orgs/[^/]+/audit", "GET", 200,
               json_edit(reversed_list("events"))),
    Corruption("reconciliation-always-balanced", "reconciliation says balanced whatever it found",
               (F + "billing/billing.reconciliation.feature",), r"/admin/billing/reconciliation", "GET", 200,
               json_edit(lambda body: set_value("balanced", True)(body) | set_value("discrepancies", [])(body))),
    Corruption("readiness-without-database", "the readiness probe no longer names the database",
               (F + "health/health.probes.feature",), r"/readyz", "GET", change=json_edit(dropped_check("database"))),
    Corruption("jwks-with-private-half", "the published keys carry a private part",
               (F + "health/health.signing-keys.feature",), r"/\.well-known/jwks\.json", "GET", 200,
               json_edit(private_half)),
    Corruption("model-list-padded", "the model list shows a model the org may not use",
               (F + "routing/routing.requests.feature",), r"/v1/models", "GET", 200, json_edit(extra_model)),
    Corruption("stream-without-done", "a stream ends without [DONE]",
               (F + "streaming/streaming.answers.feature",), CHAT, "POST", 200, event=without_done),
    Corruption("stream-without-usage", "a stream that was asked for its usage ends without it",
               (F + "streaming/streaming.answers.feature",), CHAT, "POST", 200, event=without_usage),
    Corruption("stream-text-altered", "a streamed piece of text is changed on its way",
               (F + "streaming/streaming.answers.feature",), CHAT, "POST", 200, event=first_letter_doubled),
]
