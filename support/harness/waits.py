"""Waiting for something to become true: poll until a deadline, never sleep blindly."""
from __future__ import annotations

from typing import Callable, TypeVar

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_exponential

T = TypeVar("T")


class WaitTimeout(AssertionError):
    pass


def wait_until(awaited: str, probe: Callable[[], T], holds: Callable[[T], bool], *, timeout: float,
               describe: Callable[[T], str] = repr, max_interval: float = 0.1) -> T:
    """Call `probe` until `holds(result)`, backing off to at most `max_interval` between calls; on timeout, say
    what was awaited and what was last seen. The short default interval matters: a scenario's time is mostly
    spent noticing what it waits for, and a probe (one HTTP or SQL read) costs far less than a late look."""
    last: dict = {}

    def attempt():
        last["value"] = probe()
        return last["value"]

    retrying = Retrying(stop=stop_after_delay(timeout), wait=wait_exponential(multiplier=0.01, max=max_interval),
                        retry=retry_if_result(lambda value: not holds(value)), reraise=False)
    try:
        return retrying(attempt)
    except RetryError:
        seen = describe(last["value"]) if "value" in last else "nothing (the probe never returned)"
        raise WaitTimeout(f"Timed out after {timeout:g} s waiting for {awaited}; last seen: {seen}") from None
