"""Limits that hold across every gateway process, kept in PostgreSQL: an API key's rate limit, the credential
throttles (failed logins and invitation tries per account and per client address) and the budget of refusals without
credentials audited one by one.

The rate limit is a sliding window per API key.

One row per key (`rate_limit_hits`) holds the times, by the database's clock, of the requests counted in its window.
A request is counted by one statement: an upsert that drops the times that have left the window and appends now,
but only while fewer than the limit remain (ON CONFLICT DO UPDATE ... WHERE locks the row and judges its latest
version, so requests racing on one key from any number of processes are counted one after another, and exactly
`limit` of them pass). A refused request is not counted; the same statement says how long, in milliseconds, until the
oldest counted request leaves the window (retry-after-ms; Retry-After is that rounded up to seconds). The rules are
the in-process limiter's (gateway/runtime.py RateLimiter): only where the count lives differs.

The row holds at most `limit` times, so a request costs one row write of that size: cheap for limits of hundreds
per window; a limit of many thousands per window would rather want a counter per fixed window.

The throttles and the audit budget keep the in-process rules of gateway/throttle.py and gateway/audit.py, in rows
of the same table under keys of their own (a digest of the account or address): failures in a sliding window
(`f:`), the end of a burst of refusals whose first was audited (`b:`), refusals audited in a fixed window (`s:`).
The refusals only counted are counted, and summarised, by the process that refused them. The leader deletes rows
nobody has touched for a day (an hour for the audit windows).
"""
from __future__ import annotations

import hashlib
import math
import time

from sqlalchemy import text

from gateway.audit import RefusalSampler
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
SELECT CAST(greatest(1, ceil((min(h) + :window - {_NOW}) * 1000)) AS integer)
FROM rate_limit_hits AS r CROSS JOIN LATERAL unnest(r.hits) AS h
WHERE r.key = :key AND h > {_NOW} - :window
HAVING NOT EXISTS (SELECT 1 FROM counted)
"""))


class SharedRateLimiter:
    """The rate limiter of gateways on PostgreSQL: `over_limit` runs COUNT_ONE on the chat store's connections."""

    def __init__(self, chat_store):
        self._chat_store = chat_store  # gateway.services.chat_billing.PgChatStore

    async def over_limit(self, key: str, limit: int, window_seconds: float) -> int | None:
        """Count one request; None when allowed, else the milliseconds (rounded up, at least 1) until the key may
        retry."""
        row = await self._chat_store._one(COUNT_ONE, {"key": key, "limit": limit, "window": float(window_seconds)})
        return None if row is None or not row[0] else int(row[0])


_CLOCK = "clock AS (SELECT CAST(extract(epoch FROM clock_timestamp()) AS double precision) AS t)"
KEEP_FAILURES = 1000  # times kept per throttled account or address (tries beyond the limit are refused uncounted)
FAILED = text(f"""
WITH {_CLOCK}
INSERT INTO rate_limit_hits AS r (key, hits) SELECT :key, ARRAY[t] FROM clock
ON CONFLICT (key) DO UPDATE SET hits = array_append(ARRAY(
    SELECT h FROM unnest(r.hits) AS h WHERE h > {_NOW} - :window ORDER BY h DESC LIMIT {KEEP_FAILURES - 1}), {_NOW})
""")
RECENT_FAILURES = text(f"""
WITH {_CLOCK}
SELECT count(h), min(h), (SELECT t FROM clock)
FROM rate_limit_hits AS r CROSS JOIN LATERAL unnest(r.hits) AS h
WHERE r.key = :key AND h > {_NOW} - :window
""")
BURST_BEGINS = text(f"""
WITH {_CLOCK}
INSERT INTO rate_limit_hits AS r (key, hits) SELECT :key, ARRAY[t + :seconds] FROM clock
ON CONFLICT (key) DO UPDATE SET hits = ARRAY[{_NOW} + :seconds] WHERE r.hits[1] <= {_NOW}
RETURNING 1
""")
FORGET = text("DELETE FROM rate_limit_hits WHERE key IN (:failures, :burst)")
ADMIT_ONE_BY_ONE = text(f"""
WITH {_CLOCK}, slot AS (SELECT t, CAST(floor(t / :window) AS bigint) AS w FROM clock),
address AS (
    INSERT INTO rate_limit_hits AS r (key, hits) SELECT 's:' || w || ':' || :address, ARRAY[t] FROM slot
    ON CONFLICT (key) DO UPDATE SET hits = array_append(r.hits, {_NOW})
        WHERE cardinality(r.hits) < :per_address
    RETURNING 1),
every AS (
    INSERT INTO rate_limit_hits AS r (key, hits) SELECT 's:' || w || ':*', ARRAY[t] FROM slot
        WHERE EXISTS (SELECT 1 FROM address)
    ON CONFLICT (key) DO UPDATE SET hits = array_append(r.hits, {_NOW})
        WHERE cardinality(r.hits) < :per_window
    RETURNING 1)
SELECT EXISTS (SELECT 1 FROM every), EXISTS (SELECT 1 FROM address), w, (w + 1) * :window - t FROM slot
""")
PRUNE = text(f"""
WITH {_CLOCK}
DELETE FROM rate_limit_hits AS r
WHERE r.key ~ '^[fbs]:' AND (SELECT max(h) FROM unnest(r.hits) AS h)
    < {_NOW} - CASE WHEN r.key LIKE 's:%' THEN 3600 ELSE greatest(86400, :throttle_window) END
""")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:48]


class SharedFailureWindow:
    """gateway.throttle.FailureWindow's rules (failures per key in a sliding window, the first refusal of a burst
    audited), counted in PostgreSQL for every process."""

    def __init__(self, db, scope: str, limit: int, window_seconds: float):
        self.db, self.scope, self.limit, self.window = db, scope, limit, window_seconds

    def _keys(self, key: str) -> tuple[str, str]:
        digest = _digest(key)
        return f"f:{self.scope}:{digest}", f"b:{self.scope}:{digest}"

    def blocked_for(self, key: str) -> int | None:
        with self.db.engine.begin() as conn:
            count, oldest, now = conn.execute(RECENT_FAILURES, {"key": self._keys(key)[0],
                                                                "window": self.window}).one()
        if count < self.limit:
            return None
        return max(1, math.ceil(oldest + self.window - now))

    def first_refusal_of_burst(self, key: str, retry_after: int) -> bool:
        with self.db.engine.begin() as conn:
            return conn.execute(BURST_BEGINS, {"key": self._keys(key)[1], "seconds": retry_after}).first() is not None

    def failed(self, key: str) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(FAILED, {"key": self._keys(key)[0], "window": self.window})

    def clear(self, key: str) -> None:
        failures, burst = self._keys(key)
        with self.db.engine.begin() as conn:
            conn.execute(FORGET, {"failures": failures, "burst": burst})


class SharedRefusalSampler(RefusalSampler):
    """gateway.audit.RefusalSampler whose budgets (per address and in all, per fixed window) every process spends
    together; the refusals over budget are counted, and summarised, by the process that refused them. When the
    database does not answer, this process's own budgets decide (the audit event could not be written anyway).

    A budget the database says is spent stays spent until its window ends, so until then this process counts that
    address's refusals (or everyone's, once the window's budget is spent) without asking again: past the budget a
    refusal costs a counter here too, not a database write. The window's end is taken from the database's clock,
    measured from before the question was sent, so it is never later here than there."""

    def __init__(self, db, window: float, per_address: int, per_window: int, *, clock=time.monotonic):
        super().__init__(window, per_address, per_window, clock=clock)
        self.db = db
        self._spent_window: int | None = None  # the database's window whose spent budgets are known here
        self._spent_until = 0.0  # its end, by this process's clock
        self._spent_by: set[str] = set()
        self._all_spent = False

    def until_window_ends(self) -> float:
        """By the database's clock, as far as this process's wall clock tells it (the same host's, or the same
        kernel's in containers)."""
        return self.window - time.time() % self.window

    def admit(self, action: str, address: str) -> bool:
        with self._lock:
            spent = self._clock() < self._spent_until and (self._all_spent or address in self._spent_by)
        if spent:
            return self.count(action, address)
        asked = self._clock()
        try:
            with self.db.engine.begin() as conn:
                admitted, address_counted, window, left = conn.execute(ADMIT_ONE_BY_ONE, {
                    "window": self.window, "address": _digest(address), "per_address": self.per_address,
                    "per_window": self.per_window}).one()
        except Exception:  # noqa: BLE001 - see the class's docstring
            return super().admit(action, address)
        if admitted:
            return True
        with self._lock:
            if self._spent_window is None or window >= self._spent_window:  # not an answer about a window over
                if window != self._spent_window:
                    self._spent_window, self._spent_by, self._all_spent = window, set(), False
                    self._spent_until = asked + left
                else:
                    self._spent_until = min(self._spent_until, asked + left)
                if address_counted:
                    self._all_spent = True
                elif len(self._spent_by) < self._max_addresses:
                    self._spent_by.add(address)
        return self.count(action, address)


def share_guards(guards, db, settings) -> None:
    """The credential throttles and the audit budget of `guards` (gateway.throttle.Guards), counted in the database."""
    window = settings.throttle_window_seconds
    guards.accounts = SharedFailureWindow(db, "account", settings.throttle_failures_per_account, window)
    guards.by_address = SharedFailureWindow(db, "address", settings.throttle_failures_per_address, window)
    guards.refusals = SharedRefusalSampler(db, settings.audit_sampling_window_seconds,
                                           settings.audit_unauthenticated_per_address,
                                           settings.audit_unauthenticated_per_window)


def prune(db, settings) -> int:
    """Delete the throttles' and the audit windows' rows nobody has touched for long; how many went."""
    with db.engine.begin() as conn:
        return conn.execute(PRUNE, {"throttle_window": settings.throttle_window_seconds}).rowcount


def rate_limiter_for(rt):
    """The limiter the settings ask for: shared through PostgreSQL, or this process's own."""
    if rt.settings.shared_rate_limits:
        return SharedRateLimiter(rt.chat_store)
    return rt.rate_limiter
