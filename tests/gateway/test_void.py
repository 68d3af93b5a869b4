"""Voiding a charge (gateway/services/ledger.py `void`): whole or in part, from spent back to available, never past
the charge, and only a charge; against SQLite, and PostgreSQL when a server answers."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.errors import ApiError
from gateway.services import ledger
from tests.gateway.test_ledger import USD, balances, db, funded, mine, reconcile, reserve  # noqa: F401 (db: fixture)


def charged(db, account: str, held: int, actual: int) -> str:
    res = reserve(db, account, held)
    with db.transaction() as s:
        ledger.finalize(s, res, actual)
    return res


def void(db, res: str, amount: int | None):
    with db.transaction() as s:
        reservation, given = ledger.void(s, res, amount)
    return reservation, given


def refusal(db, res: str, amount: int | None) -> tuple[int, str, str]:
    with pytest.raises(ApiError) as refused:
        void(db, res, amount)
    return refused.value.status, refused.value.code, refused.value.message


def test_a_partial_void_gives_back_part_and_a_second_gives_back_the_rest(db):
    account = funded(db, 10 * USD)
    res = charged(db, account, 3 * USD, 2 * USD)
    reservation, given = void(db, res, USD // 2)
    assert (reservation.status, reservation.voided_micros, given) == ("finalized", USD // 2, USD // 2)
    assert balances(db, account) == (10 * USD, 8 * USD + USD // 2, 0, USD + USD // 2)
    reservation, given = void(db, res, None)
    assert (reservation.status, reservation.voided_micros, given) == ("voided", 2 * USD, USD + USD // 2)
    assert balances(db, account) == (10 * USD, 10 * USD, 0, 0)
    assert not mine(reconcile(db), account)


def test_more_than_is_left_of_the_charge_is_refused_and_moves_nothing(db):
    account = funded(db, 10 * USD)
    res = charged(db, account, 3 * USD, 2 * USD)
    void(db, res, USD)
    status, code, message = refusal(db, res, USD + 1)
    assert (status, code) == (422, "void_exceeds_charge")
    assert "2.00 USD charged, 1.00 USD voided already, 1.00 USD left" in message
    assert balances(db, account) == (10 * USD, 9 * USD, 0, USD)


def test_only_a_charge_can_be_voided(db):
    account = funded(db, 10 * USD)
    pending = reserve(db, account, USD)
    assert refusal(db, pending, None)[:2] == (409, "reservation_not_charged")
    assert "pending" in refusal(db, pending, None)[2]
    whole = charged(db, account, USD, USD)
    void(db, whole, None)
    assert refusal(db, whole, 1)[:2] == (409, "reservation_voided")
    assert refusal(db, "res_unknown", 1)[:2] == (404, "reservation_not_found")


def test_voids_racing_each_other_never_pass_the_charge(db):
    account = funded(db, 10 * USD)
    res = charged(db, account, 3 * USD, 3 * USD)

    def attempt(_):
        try:
            void(db, res, USD)
            return "voided"
        except ApiError as exc:
            return exc.code
    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(attempt, range(6)))
    assert outcomes.count("voided") == 3, outcomes
    assert balances(db, account) == (10 * USD, 10 * USD, 0, 0)
    assert not mine(reconcile(db), account)
