"""Correlation ids from request headers: X-Request-ID echoed or made up, W3C traceparent kept or replaced."""
import pytest

from gateway.context import correlation_from_headers

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def test_a_valid_request_id_is_echoed_and_a_missing_or_invalid_one_is_made_up():
    assert correlation_from_headers("r1.abc:def-9_x", None).request_id == "r1.abc:def-9_x"
    for bad in (None, "", "has space", "x" * 129, "semi;colon"):
        assert correlation_from_headers(bad, None).request_id.startswith("gw-")


@pytest.mark.parametrize("header", [f"00-{TRACE}-{SPAN}-01", f"00-{TRACE}-{SPAN}-00", f" 00-{TRACE}-{SPAN}-01 ",
                                    f"00-{TRACE.upper()}-{SPAN}-01", f"01-{TRACE}-{SPAN}-01-future-field"])
def test_a_valid_traceparent_keeps_its_trace_and_parent(header):
    correlation = correlation_from_headers("r", header)
    assert correlation.trace_id == TRACE and correlation.parent_span_id == SPAN
    child = correlation.child_traceparent().split("-")
    assert child[0] == "00" and child[1] == TRACE and child[2] != SPAN and len(child[2]) == 16


@pytest.mark.parametrize("header", [None, "", "garbage", f"ff-{TRACE}-{SPAN}-01", f"00-{'0' * 32}-{SPAN}-01",
                                    f"00-{TRACE}-{'0' * 16}-01", f"00-{TRACE}-{SPAN}-01-extra",
                                    f"00-{TRACE[:-1]}-{SPAN}-01", f"00-{'g' * 32}-{SPAN}-01"])
def test_an_invalid_traceparent_starts_a_new_trace(header):
    correlation = correlation_from_headers("r", header)
    assert correlation.parent_span_id is None
    assert len(correlation.trace_id) == 32 and correlation.trace_id != TRACE and set(correlation.trace_id) != {"0"}
