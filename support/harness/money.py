"""Money in the suite's sentences ("10.00 USD") and in the contract (integer micro-USD)."""
from __future__ import annotations

import re
from decimal import Decimal

_AMOUNT = re.compile(r"^\s*(\d+(?:\.\d{1,6})?)\s*USD\s*$")


def micros(text: str) -> int:
    match = _AMOUNT.match(text)
    if not match:
        raise ValueError(f"{text!r} is not an amount like '10.00 USD'")
    return int(Decimal(match.group(1)) * 1_000_000)


def usd(amount_micros: int | None) -> str:
    if amount_micros is None:
        return "no limit"
    whole, frac = divmod(abs(amount_micros), 1_000_000)
    return f"{'-' if amount_micros < 0 else ''}{whole}.{f'{frac:06d}'.rstrip('0').ljust(2, '0')} USD"


def cost_micros(usage: dict, prompt_price_per_1k: int, completion_price_per_1k: int) -> int:
    """The contract's charge for a completion: its usage at the model's price, rounded up to a micro-USD."""
    total = usage["prompt_tokens"] * prompt_price_per_1k + usage["completion_tokens"] * completion_price_per_1k
    return -(-total // 1000)
