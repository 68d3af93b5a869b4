"""How each declared field maps onto an org or model row: read it, write it, compare it, fingerprint it."""
from __future__ import annotations

from typing import Callable

from sqlalchemy import select

from gateway.models import Model, Org


def _rate_limit(org: Org):
    if org.rate_limit_requests is None or org.rate_limit_window_seconds is None:
        return None
    return {"requests": org.rate_limit_requests, "window_seconds": org.rate_limit_window_seconds}


def _set_rate_limit(org: Org, value) -> None:
    org.rate_limit_requests = value["requests"] if value else None
    org.rate_limit_window_seconds = value["window_seconds"] if value else None


def _same_list(a, b) -> bool:
    return a == b or (isinstance(a, list) and isinstance(b, list) and sorted(map(str, a)) == sorted(map(str, b)))


# field -> (read effective, write declared, read declared from spec, compare)
ORG_FIELDS: dict[str, tuple[Callable, Callable, Callable, Callable]] = {
    "name": (lambda o: o.name, lambda o, v: setattr(o, "name", v), lambda s: s["name"], lambda a, b: a == b),
    "budget_micros": (lambda o: o.budget_limit_micros, lambda o, v: setattr(o, "budget_limit_micros", v),
                      lambda s: s["budget_micros"], lambda a, b: a == b),
    "models": (lambda o: o.allowed_models, lambda o, v: setattr(o, "allowed_models", v), lambda s: s["models"],
               _same_list),
    "rate_limit": (_rate_limit, _set_rate_limit, lambda s: s["rate_limit"], lambda a, b: a == b),
}

MODEL_FIELDS: dict[str, tuple[Callable, Callable, Callable, Callable]] = {
    "price.prompt_per_1k_micros": (lambda m: m.prompt_price_per_1k_micros,
                                   lambda m, v: setattr(m, "prompt_price_per_1k_micros", v),
                                   lambda s: s["price"]["prompt_per_1k_micros"], lambda a, b: a == b),
    "price.completion_per_1k_micros": (lambda m: m.completion_price_per_1k_micros,
                                       lambda m, v: setattr(m, "completion_price_per_1k_micros", v),
                                       lambda s: s["price"]["completion_per_1k_micros"], lambda a, b: a == b),
    "backends": (lambda m: m.backends, lambda m, v: setattr(m, "backends", list(v)), lambda s: s["backends"],
                 lambda a, b: a == b),
    "default_max_tokens": (lambda m: m.default_max_tokens, lambda m, v: setattr(m, "default_max_tokens", v),
                           lambda s: s["default_max_tokens"], lambda a, b: a == b),
}


ORG_COLUMNS = (Org.id, Org.slug, Org.name, Org.budget_limit_micros, Org.allowed_models, Org.rate_limit_requests,
               Org.rate_limit_window_seconds, Org.managed_by)
MODEL_COLUMNS = (Model.name, Model.prompt_price_per_1k_micros, Model.completion_price_per_1k_micros, Model.backends,
                 Model.default_max_tokens, Model.managed_by)


def effective_rows(session, columns: tuple, key, declared: dict) -> dict:
    """The effective values of every object managed from git, and of declared ones not (yet) marked so."""
    rows = {getattr(r, key.key): r for r in session.execute(select(*columns).where(columns[-1] == "git"))}
    missing = [name for name in declared if name not in rows]
    for start in range(0, len(missing), 500):
        chunk = missing[start:start + 500]
        rows.update({getattr(r, key.key): r for r in session.execute(select(*columns).where(key.in_(chunk)))})
    return rows


def _canonical(value):
    return sorted(map(str, value)) if isinstance(value, list) and all(isinstance(v, str) for v in value) else value


def fingerprint(fields: dict, obj, *, reader: int) -> tuple:
    """The declared fields' values, comparable in one go (allowlists in any order)."""
    return tuple(repr(_canonical(accessors[reader](obj))) for accessors in fields.values())


def declared_fingerprint(fields: dict, spec: dict) -> tuple:
    cached = spec.get("_fingerprint")
    if cached is None:
        cached = spec["_fingerprint"] = fingerprint(fields, spec, reader=2)
    return cached
