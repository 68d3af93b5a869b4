"""The suite's side of several gateway processes: the options and their one-line errors, the @scale need, the
metrics of several replicas put together, and bursts sent until they have reached several processes."""
from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from support.client.api import Exchange, Request
from support.client.deployment_metrics import combined
from support.harness.config import SuiteSetupError, load
from support.stacks import needs
from support.stacks.base import Endpoints
from support.stress.burst import Burst
from support.stress.process_spread import PROCESS_HEADER, ProcessSpread, processes

ENDPOINTS = Endpoints("http://gw", "postgresql://db", "/keys", "http://stub", "/repo")


# ---- options ---------------------------------------------------------------------------------------------------------

def test_several_workers_on_sqlite_stop_the_run_with_one_line():
    with pytest.raises(SuiteSetupError, match="gateway_workers=2 needs PostgreSQL"):
        load({"gateway_workers": "2"}, environ={})


def test_workers_and_replicas_count_the_processes_and_compose_has_two_replicas_unless_told():
    assert load({"gateway_workers": "2", "database_url": "postgresql://u@h/d"}, environ={}).gateway_processes == 2
    assert load({"stack": "compose"}, environ={}).gateway_replicas == 2
    assert load({"stack": "compose", "gateway_replicas": "3", "gateway_workers": "2"},
                environ={}).gateway_processes == 6
    with pytest.raises(SuiteSetupError, match="not a whole number of at least 1"):
        load({"gateway_workers": "two"}, environ={})
    with pytest.raises(SuiteSetupError, match="use -D stack=compose"):
        load({"gateway_replicas": "2"}, environ={})


def test_scale_scenarios_are_skipped_with_the_option_to_pass_on_one_process():
    one = load({}, environ={})
    several = load({"gateway_workers": "2", "database_url": "postgresql://u@h/d"}, environ={})
    assert needs.missing(["scale"], ENDPOINTS, one) == needs.NEEDS["scale"].reason
    assert "-D gateway_workers=2" in needs.NEEDS["scale"].reason
    assert needs.missing(["scale"], ENDPOINTS, several) is None
    assert needs.missing(["needs_one_process"], ENDPOINTS, several) is not None
    assert needs.missing(["needs_replica_control"], ENDPOINTS, several) is not None  # compose only


def test_an_external_deployment_names_its_replicas_for_the_metrics():
    from support.stacks.external import ExternalStack
    config = load({"stack": "external", "base_url": "http://lb", "replica_urls": "http://r1/, http://r2"}, environ={})
    stack = ExternalStack(config)
    stack._check_alive = lambda url: None
    stack.wait_ready = lambda url, timeout: None
    assert stack.up().replica_urls == ("http://r1", "http://r2")


# ---- the metrics of several replicas ---------------------------------------------------------------------------------

def _exposition(requests: int, latency: float, pending: int) -> str:
    registry = CollectorRegistry()
    Counter("gateway_http_requests_total", "served", ["route"], registry=registry).labels("/healthz").inc(requests)
    Histogram("latency_seconds", "latency", registry=registry).observe(latency)
    Gauge("gateway_reservations", "by state", ["state"], registry=registry).labels("pending").set(pending)
    return generate_latest(registry).decode()


def _samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_counters_and_histograms_of_the_replicas_add_up_and_a_gauge_is_the_first_replicas():
    samples = _samples(combined([_exposition(3, 0.2, 5), _exposition(4, 0.7, 6)]))
    assert samples[("gateway_http_requests_total", (("route", "/healthz"),))] == 7
    assert samples[("latency_seconds_count", ())] == 2
    assert samples[("latency_seconds_bucket", (("le", "0.25"),))] == 1
    assert samples[("gateway_reservations", (("state", "pending"),))] == 5


# ---- bursts until they spread ----------------------------------------------------------------------------------------

def _answered_by(*names: str) -> list[Exchange]:
    exchanges = []
    for n, name in enumerate(names):
        exchange = Exchange("GET", "http://gw/healthz", "/healthz", {}, None, f"r.{n}", status=200)
        exchange.response_headers = {PROCESS_HEADER: name}
        exchanges.append(exchange)
    return exchanges


def test_bursts_go_on_until_enough_processes_answered():
    waves = iter([["a"] * 8, ["a"] * 7 + ["b"], ["c"] * 8])
    sent = []

    def at_once(batch, title):
        sent.append(title)
        return Burst(_answered_by(*next(waves)))
    spread = ProcessSpread(2, 10, at_once)
    exchanges = spread.reaching_every_process(Request("GET", "/healthz"), "probes")
    assert len(sent) == 2 and processes(exchanges) == {"a": 15, "b": 1}
    spread.expect_every(exchanges, "the probes")


def test_a_burst_that_reached_one_process_fails_naming_what_answered():
    spread = ProcessSpread(2, 10, lambda batch, title: Burst(_answered_by("a", "a")))
    with pytest.raises(AssertionError, match=r"reach more than one of the 2 gateway processes.*\{'a': 2\}"):
        spread.expect_several(_answered_by("a", "a"), "the burst")
