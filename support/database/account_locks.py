"""An account whose spend the database refuses to change: a trigger on the gateway's `accounts` table that aborts
every UPDATE of that one row changing `spent_micros`, as a database rule (or a stuck migration, or an operator's
lock) would. Holds still pass (they move available to held); charges do not. The gateway meets it as a refusal, not
an outage, which is what turns a settlement into a dead letter. Only the named account is touched, so scenarios
running beside it are not; the trigger's name carries the scenario's namespace."""
from __future__ import annotations

import re

from sqlalchemy import text

from support.database.reflection import Database

REFUSAL = "the acceptance suite locked what this account has spent"


def _trigger_name(name: str) -> str:
    cleaned = re.sub(r"[^a-z0-9_]", "_", name.lower())
    return f"suite_lock_{cleaned}"[:60]


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def lock(db: Database, account_id: str, name: str) -> str:
    """Every change to what the account has spent is refused from now on; returns the trigger's name (for
    `unlock`)."""
    trigger = _trigger_name(name)
    with db.engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.execute(text(f"CREATE TRIGGER {trigger} BEFORE UPDATE OF spent_micros ON accounts "
                              f"WHEN OLD.id = {_quoted(account_id)} AND NEW.spent_micros != OLD.spent_micros "
                              f"BEGIN SELECT RAISE(ABORT, {_quoted(REFUSAL)}); END"))
        else:
            conn.execute(text(f"CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                              f"RAISE EXCEPTION {_quoted(REFUSAL)}; END $$"))
            conn.execute(text(f"CREATE TRIGGER {trigger} BEFORE UPDATE ON accounts FOR EACH ROW WHEN (OLD.id = "
                              f"{_quoted(account_id)} AND NEW.spent_micros IS DISTINCT FROM OLD.spent_micros) "
                              f"EXECUTE FUNCTION {trigger}()"))
    return trigger


def unlock(db: Database, trigger: str) -> None:
    """The account's spend changes again (nothing happens when it was not locked)."""
    with db.engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.execute(text(f"DROP TRIGGER IF EXISTS {trigger}"))
        else:
            conn.execute(text(f"DROP TRIGGER IF EXISTS {trigger} ON accounts"))
            conn.execute(text(f"DROP FUNCTION IF EXISTS {trigger}()"))
