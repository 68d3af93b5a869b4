"""Seeding the gateway's database directly, in business terms, through the reflected live schema."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import delete, insert, update

from support.database.reflection import Database


def seed_model(db: Database, name: str, *, prompt_price_per_1k: int, completion_price_per_1k: int,
               backends: list[dict], default_max_tokens: int = 256) -> None:
    """A routed model with its price and its backends in route order ([{name, url, timeout_seconds?}])."""
    models = db.table("models")
    with db.engine.begin() as conn:
        conn.execute(delete(models).where(models.c.name == name))
        conn.execute(insert(models).values(name=name, prompt_price_per_1k_micros=prompt_price_per_1k,
                                           completion_price_per_1k_micros=completion_price_per_1k,
                                           backends=backends, default_max_tokens=default_max_tokens,
                                           managed_by=None, created_at=datetime.now(timezone.utc)))


def remove_model(db: Database, name: str) -> None:
    models = db.table("models")
    with db.engine.begin() as conn:
        conn.execute(delete(models).where(models.c.name == name))


def set_model_backends(db: Database, name: str, backends: list[dict]) -> None:
    """Reroute a seeded model: its backends in route order, replaced."""
    models = db.table("models")
    with db.engine.begin() as conn:
        done = conn.execute(update(models).where(models.c.name == name).values(backends=backends))
    if done.rowcount != 1:
        raise AssertionError(f"Cannot reroute the model {name!r}: it is not in the gateway's database")


KEEP = object()


def seed_org_policy(db: Database, slug: str, *, allowed_models=KEEP, rate_limit=KEEP) -> None:
    """An org's model allowlist (a list of model names, or None for every model) and its per-key rate limit
    ((requests, window_seconds), or None for no limit), written straight into its row."""
    orgs = db.table("orgs")
    values = {}
    if allowed_models is not KEEP:
        values["allowed_models"] = allowed_models
    if rate_limit is not KEEP:
        values["rate_limit_requests"], values["rate_limit_window_seconds"] = rate_limit or (None, None)
    with db.engine.begin() as conn:
        done = conn.execute(update(orgs).where(orgs.c.slug == slug).values(**values))
    if done.rowcount != 1:
        raise AssertionError(f"Cannot set the policy of org {slug!r}: it is not in the gateway's database")
