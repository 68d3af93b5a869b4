"""Rate limits that hold across every gateway process: a sliding window per API key, kept in PostgreSQL.

One row per key (`rate_limit_hits`) holds the times, by the database's clock, of the requests counted in its window.
A request is counted by one statement: an upsert that drops the times that have left the window and appends now,
but only while fewer than the limit remain (ON CONFLICT DO UPDATE ... WHERE locks the row and judges its latest
version, so requests racing on one key from any number of processes are counted one after another, and exactly
`limit` of them pass). A refused request is not counted; the same statement says how long until the oldest counted
request leaves the window (Retry-After). The rules are the in-process limiter's (gateway/runtime.py RateLimiter):
only where the count lives differs.

The row holds at most `limit` times, so a request costs one row write of that size: cheap for limits of hundreds
per window; a limit of many thousands per window would rather want a counter per fixed window.
"""
from __future__ import annotations

from sqlalchemy import text

from gateway.services.chat_billing import PgStatement

_NOW = "(SELECT t FROM clock)"
COUNT_ONE = PgStatement(text(f"""
WITH clock AS (SELECT CAST(extract(epoch FROM clock_timestamp()) AS double precision) AS t),
counted AS (
    INSERT INTO rate_limit_hits AS r (key, hits)
    SELECT :key, ARRAY[t] FROM clock
    ON CONFLICT (key) DO UPDATE
        SET hits = array_append(ARRAY(SELECT h FROM unnest(r.hits) AS h WHERE h > {_NOW} - :window), {_NOW})
        WHERE (SELECT count(*) FROM unnest(r.hits) AS h WHERE h > {_NOW} - :window) < :limit
    RETURNING 0 AS retry_after)
SELECT retry_after FROM counted
UNION ALL
SELECT CAST(greatest(1, ceil(min(h) + :window - {_NOW})) AS integer)
FROM rate_limit_hits AS r CROSS JOIN LATERAL unnest(r.hits) AS h
WHERE r.key = :key AND h > {_NOW} - :window
HAVING NOT EXISTS (SELECT 1 FROM counted)
"""))


class SharedRateLimiter:
    """The rate limiter of gateways on PostgreSQL: `over_limit` runs COUNT_ONE on the chat store's connections."""

    def __init__(self, chat_store):
        self._chat_store = chat_store  # gateway.services.chat_billing.PgChatStore

    async def over_limit(self, key: str, limit: int, window_seconds: float) -> int | None:
        """Count one request; None when allowed, else the whole seconds (at least 1) until the key may retry."""
        row = await self._chat_store._one(COUNT_ONE, {"key": key, "limit": limit, "window": float(window_seconds)})
        return None if row is None or not row[0] else int(row[0])


def rate_limiter_for(rt):
    """The limiter the settings ask for: shared through PostgreSQL, or this process's own."""
    if rt.settings.shared_rate_limits:
        return SharedRateLimiter(rt.chat_store)
    return rt.rate_limiter
