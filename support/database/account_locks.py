"""An account the database refuses to change: a trigger on the gateway's `accounts` table that aborts every UPDATE
of that one row, as a database rule (or a stuck migration, or an operator's lock) would. The gateway meets it as a
refusal, not an outage, which is what turns a settlement into a dead letter. Only the named account is touched,
so scenarios running beside it are not; the trigger's name carries the scenario's namespace."""
from __future__ import annotations

import re

from sqlalchemy import text

from support.database.reflection import Database

REFUSAL = "the acceptance suite locked this account against changes"


def _trigger_name(name: str) -> str:
    cleaned = re.sub(r"[^a-z0-9_]", "_", name.lower())
    return f"suite_lock_{cleaned}"[:60]


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def lock(db: Database, account_id: str, name: str) -> str:
    """Every change to the account is refused from now on; returns the trigger's name (for `unlock`)."""
    trigger = _trigger_name(name)
    with db.engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.execute(text(f"CREATE TRIGGER {trigger} BEFORE UPDATE ON accounts WHEN OLD.id = {_quoted(account_id)} "
                              f"BEGIN SELECT RAISE(ABORT, {_quoted(REFUSAL)}); END"))
        else:
            conn.execute(text(f"CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                              f"RAISE EXCEPTION {_quoted(REFUSAL)}; END $$"))
            conn.execute(text(f"CREATE TRIGGER {trigger} BEFORE UPDATE ON accounts FOR EACH ROW "
                              f"WHEN (OLD.id = {_quoted(account_id)}) EXECUTE FUNCTION {trigger}()"))
    return trigger


def unlock(db: Database, trigger: str) -> None:
    """The account takes changes again (nothing happens when it was not locked)."""
    with db.engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.execute(text(f"DROP TRIGGER IF EXISTS {trigger}"))
        else:
            conn.execute(text(f"DROP TRIGGER IF EXISTS {trigger} ON accounts"))
            conn.execute(text(f"DROP FUNCTION IF EXISTS {trigger}()"))
