"""The suite's own budget helpers: reading amounts out of a refusal's message, the books' self-check, the wait a
rate-limit refusal tells."""
import pytest
from requests.structures import CaseInsensitiveDict

from support.client.api import Exchange
from support.domain.budgets import mentions_amount
from support.domain.rate_limits import told_by, told_seconds
from support.harness.money import cost_micros as cost
from support.database.spend import Books


def test_an_amount_is_recognised_in_dollars_or_micros():
    assert mentions_amount("limit 0.014 USD, spent 0.014 USD", 14_000)
    assert mentions_amount("limit $0.014", 14_000)
    assert mentions_amount("limit_micros=14000", 14_000)
    assert mentions_amount("limit 2.50 USD", 2_500_000)
    assert not mentions_amount("limit 0.015 USD", 14_000)


def test_books_agree_only_when_every_bucket_matches_its_postings():
    postings = {"issuance": -5_000_000, "available": 4_986_000, "held": 0, "spent": 14_000}
    assert Books("a", 5_000_000, 4_986_000, 0, 14_000, postings).disagreements() == []
    off = Books("a", 5_000_000, 4_986_000, 0, 15_000, postings).disagreements()
    assert off == ["spent: balance 15000, postings 14000"]


def test_a_completion_costs_its_usage_at_the_price_rounded_up():
    assert cost({"prompt_tokens": 3, "completion_tokens": 20}, 1_000_000, 2_000_000) == 43_000
    assert cost({"prompt_tokens": 1, "completion_tokens": 0}, 1_500, 0) == 2  # 1.5 micro-USD rounds up


def _refusal(**headers) -> Exchange:
    return Exchange("POST", "http://gw/v1/chat/completions", "/v1/chat/completions", {}, None, "r.1", status=429,
                    response_headers=CaseInsensitiveDict(headers))


def test_the_wait_a_refusal_tells_is_retry_after_ms_when_sent_else_retry_after():
    assert told_seconds(_refusal(**{"Retry-After": "1", "retry-after-ms": "873"})) == 0.873
    assert told_by(_refusal(**{"Retry-After": "1", "Retry-After-Ms": "873"})) == "retry-after-ms"
    assert told_seconds(_refusal(**{"Retry-After": "2"})) == 2
    for wrong in ({"Retry-After": "soon"}, {"Retry-After": "1", "retry-after-ms": "0"}, {}):
        with pytest.raises(AssertionError, match="a number above 0"):
            told_seconds(_refusal(**wrong))
