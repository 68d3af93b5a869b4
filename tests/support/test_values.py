import pytest

from support.harness.money import micros, usd
from support.harness.namespace import Namespace
from support.harness.waits import WaitTimeout, wait_until


@pytest.mark.parametrize("text, expected", [("10.00 USD", 10_000_000), ("0.000001 USD", 1), ("2 USD", 2_000_000)])
def test_amounts_in_sentences_become_micros(text, expected):
    assert micros(text) == expected
    assert micros(usd(expected)) == expected


def test_an_amount_without_currency_is_refused():
    with pytest.raises(ValueError, match="is not an amount"):
        micros("10.00")


def test_namespaces_differ_per_scenario_and_per_run():
    a, b, c = Namespace("r1", "f.feature:3:A"), Namespace("r1", "f.feature:9:B"), Namespace("r2", "f.feature:3:A")
    assert len({a.slug("Acme"), b.slug("Acme"), c.slug("Acme")}) == 3
    assert a.email("Olive").endswith("@example.test")
    assert a.slug("Acme Corp!").startswith("acme-corp-")


def test_waiting_returns_as_soon_as_the_condition_holds():
    values = iter([1, 2, 3, 4])
    assert wait_until("the counter to reach 3", lambda: next(values), lambda v: v >= 3, timeout=5) == 3


def test_a_timeout_says_what_was_awaited_and_what_was_last_seen():
    with pytest.raises(WaitTimeout) as timeout:
        wait_until("the reservation to expire", lambda: "pending", lambda v: v == "expired", timeout=0.2)
    assert "the reservation to expire" in str(timeout.value) and "'pending'" in str(timeout.value)
