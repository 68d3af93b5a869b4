"""Seeding the gateway's database directly, in business terms, through the reflected live schema."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import delete, insert

from support.database import Database


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
