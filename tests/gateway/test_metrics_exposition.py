"""/metrics is written by gateway/metrics_exposition.py, not prometheus-client's generate_latest, for a fraction of
the cost: the text must be the same, line for line, on every scrape (one process, and several processes' files
merged), and each scrape must show the values as they are then."""
from __future__ import annotations

import math
import os

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess, values
from prometheus_client.core import GaugeMetricFamily

from gateway.metrics_exposition import Exposition, ProcessFiles


class Reservations:
    """A collector of its own, as the gateway's reservation counts are."""

    def __init__(self):
        self.pending = 2

    def collect(self):
        family = GaugeMetricFamily("test_reservations", "Reservations by state", labels=["state"])
        family.add_metric(["pending"], self.pending)
        family.add_metric(['odd "state"\\\n'], 0)
        yield family


def _metrics(registry: CollectorRegistry, **gauge):
    requests = Counter("test_requests_total", "Requests\nby route \\ status", ["route", "status"], registry=registry)
    latency = Histogram("test_latency_seconds", "Latency", ["route"], registry=registry,
                        buckets=(0.001, 0.5, 1, 2.5, 1234567))
    below_zero = Histogram("test_offsets", "Offsets", registry=registry, buckets=(-1, 0, 1))
    leader = Gauge("test_leader", "Leads", registry=registry, **gauge)
    state = Gauge("test_state", "State", ["backend", "state"], registry=registry)
    plain = Counter("test_plain", "No labels", registry=registry)
    return requests, latency, below_zero, leader, state, plain


def _move(requests, latency, below_zero, leader, state, plain, step: int) -> None:
    requests.labels("/healthz", "200").inc(step)
    requests.labels('/odd"path\\', "404").inc(0.5)
    latency.labels("/healthz").observe(0.0004 * step)
    latency.labels("/v1/chat").observe(2.0 + step)
    latency.labels("/healthz").observe(5_000_000)
    below_zero.observe(-3)
    leader.set(step % 2)
    state.labels("primary", "open").set(step)
    state.labels("primary", "closed").set(-0.0 if step == 1 else math.nan if step == 2 else 1e-7)
    plain.inc(1e15)
    if step > 1:  # series that appear later
        requests.labels(f"/route/{step}", "500").inc()
        latency.labels(f"/route/{step}").observe(math.inf)


def test_one_process_is_written_as_generate_latest_writes_it_on_every_scrape():
    registry = CollectorRegistry()
    metrics = _metrics(registry)
    reservations = Reservations()
    registry.register(reservations)
    exposition = Exposition()
    for step in range(4):
        if step:
            _move(*metrics, step=step)
            reservations.pending += step
        lines: list[str] = []
        exposition.registry(registry, lines)
        assert "".join(lines).encode() == generate_latest(registry), f"after step {step}"


class Process:
    """The metrics of a 'process' (a pid of its own) counting into files of PROMETHEUS_MULTIPROC_DIR, as gateway
    workers do. A series is given its value (and file) when first used, so each move uses this process's."""

    def __init__(self, pid: int, monkeypatch, **gauge):
        self.values, self.monkeypatch = values.MultiProcessValue(lambda: pid), monkeypatch
        self.monkeypatch.setattr(values, "ValueClass", self.values)
        self.metrics = _metrics(CollectorRegistry(), **gauge)

    def move(self, step: int) -> None:
        self.monkeypatch.setattr(values, "ValueClass", self.values)
        _move(*self.metrics, step=step)

    def count(self, route: str) -> None:
        self.monkeypatch.setattr(values, "ValueClass", self.values)
        self.metrics[0].labels(route, "200").inc()


@pytest.fixture
def processes(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    yield lambda pid, **gauge: Process(pid, monkeypatch, **gauge)


def _merged_by_prometheus_client(folder) -> bytes:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(folder))
    return generate_latest(registry)


def _merged(files: ProcessFiles) -> bytes:
    lines: list[str] = []
    files.render(lines)
    return "".join(lines).encode()


@pytest.mark.parametrize("mode", ["all", "livesum", "min", "max", "mostrecent"])
def test_several_processes_files_are_merged_as_prometheus_client_merges_them(processes, tmp_path, mode):
    files = ProcessFiles(str(tmp_path), Exposition())
    first, second = processes(101, multiprocess_mode=mode), processes(102, multiprocess_mode=mode)
    for step in range(4):
        first.move(step + 1)
        if step % 2:
            second.move(step + 2)
        assert _merged(files) == _merged_by_prometheus_client(tmp_path), f"{mode}, after step {step}"
    assert b'test_requests_total{route="/healthz",status="200"} 18.0' in _merged(files)


def test_files_that_grow_are_replaced_or_go_are_read_afresh(processes, tmp_path):
    files = ProcessFiles(str(tmp_path), Exposition())
    first = processes(101, multiprocess_mode="livesum")
    second = processes(102, multiprocess_mode="livesum")
    first.move(1)
    second.move(1)
    assert _merged(files) == _merged_by_prometheus_client(tmp_path)
    for route in range(1500):  # beyond the file's first 64 KiB: prometheus-client doubles and remaps it
        first.count(f"/many/{route}")
    assert os.path.getsize(tmp_path / "counter_101.db") > 65536
    assert _merged(files) == _merged_by_prometheus_client(tmp_path)
    multiprocess.mark_process_dead(102, str(tmp_path))  # its live gauges' file goes
    assert _merged(files) == _merged_by_prometheus_client(tmp_path)
    again = processes(102, multiprocess_mode="livesum")  # a new process of the same pid: a new file there
    again.move(3)
    assert _merged(files) == _merged_by_prometheus_client(tmp_path)
    assert b"test_leader 2.0" in _merged(files)
    multiprocess.mark_process_dead(102, str(tmp_path))
    processes(102, multiprocess_mode="livesum").move(2)  # before any scrape: the path is another file's now
    assert _merged(files) == _merged_by_prometheus_client(tmp_path)
    assert b"test_leader 1.0" in _merged(files)
