"""Assertions whose failure messages quote what was expected, what came back, and the request id."""
from __future__ import annotations

from support.client.api import Exchange


def expect_status(exchange: Exchange, expected: int, doing: str) -> Exchange:
    if exchange.status != expected:
        raise AssertionError(f"Expected {doing} to answer {expected}, but it answered {exchange.status}.\n"
                             f"{exchange.summary()}")
    return exchange


def expect_equal(actual, expected, what: str, exchange: Exchange | None = None) -> None:
    if actual != expected:
        where = f"\n{exchange.summary()}" if exchange is not None else ""
        raise AssertionError(f"Expected {what} to be {expected!r}, but it was {actual!r}.{where}")


def expect_true(condition: bool, message: str, exchange: Exchange | None = None) -> None:
    if not condition:
        where = f"\n{exchange.summary()}" if exchange is not None else ""
        raise AssertionError(message + where)


def problem_field(exchange: Exchange, name: str):
    """A field of an error body, whichever shape the route uses (OpenAI under /v1/, problem+json elsewhere)."""
    body = exchange.json()
    if isinstance(body.get("error"), dict):
        return body["error"].get({"detail": "message"}.get(name, name))
    return body.get(name)
