"""Counters of the billing ledger's moves, counted when they commit (a move rolled back is not counted).

`gateway_billing_moves_total{move}`: reserve, finalize, release, expire, late_charge, void, whoever made them (chat
requests, the billing API, the expiry sweeper, the settlement journal, platform admins). A move made in a
SQLAlchemy session is noted on the session (`note`) and counted by the session's `after_commit`; the chat path's
PostgreSQL statements run in autocommit and are counted when they return (`count`).
"""
from __future__ import annotations

from prometheus_client import Counter
from sqlalchemy import event
from sqlalchemy.orm import Session

from gateway.metrics import REGISTRY

MOVES = ("reserve", "finalize", "release", "expire", "late_charge", "void")
BILLING_MOVES = Counter("gateway_billing_moves_total", "Ledger moves of reservations, counted when committed "
                        "(reserve, finalize, release, expire, late_charge, void)", ["move"], registry=REGISTRY)
for _move in MOVES:  # every label from the start: a scrape before the first move reads 0, not nothing
    BILLING_MOVES.labels(_move)

_NOTED = "gateway_billing_moves"


def note(session: Session, move: str) -> None:
    """Count `move` once the session's transaction commits."""
    session.info.setdefault(_NOTED, []).append(move)


def count(move: str, amount: int = 1) -> None:
    BILLING_MOVES.labels(move).inc(amount)


@event.listens_for(Session, "after_commit")
def _count_committed(session: Session) -> None:
    for move in session.info.pop(_NOTED, ()):
        BILLING_MOVES.labels(move).inc()


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_NOTED, None)
