"""Prometheus metrics: requests by route and status, latency, reservations by state, and the chat path's own:
streamed requests by outcome, time to first token, and charges beyond the hold (overruns). With several worker
processes (PROMETHEUS_MULTIPROC_DIR set) every process's counts are summed into each /metrics answer. The text is
written by gateway/metrics_exposition.py (what generate_latest writes, at a fraction of the cost)."""
from __future__ import annotations

import glob
import os
import re
import threading
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

from gateway.metrics_exposition import Exposition, ProcessFiles
from gateway.models import Reservation

REGISTRY = CollectorRegistry()
REQUESTS = Counter("gateway_http_requests_total", "HTTP requests served", ["method", "route", "status"],
                   registry=REGISTRY)
LATENCY = Histogram("gateway_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
                    registry=REGISTRY,
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
UPSTREAM = Counter("gateway_upstream_calls_total", "Calls to model backends", ["backend", "outcome"],
                   registry=REGISTRY)
TIME_TO_FIRST_TOKEN = Histogram(
    "gateway_chat_time_to_first_token_seconds", "Streamed chat completions: from the request's arrival to the first "
    "chunk with generated text passed on", ["backend"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
STREAMS = Counter("gateway_chat_streams_total", "Streamed chat completions by how they ended "
                  "(completed, backend_failed, client_disconnected)", ["outcome"], registry=REGISTRY)
OVERRUNS = Counter("gateway_chat_overruns_total", "Chat completions whose reported usage cost more than their hold "
                   "(charged in full)", ["backend"], registry=REGISTRY)
OVERRUN_MICROS = Counter("gateway_chat_overrun_micros_total", "Micro-USD charged beyond the holds of overruns",
                         ["backend"], registry=REGISTRY)

_runtime = None


class ReservationStates:
    """Reservations by state, counted at most once per METRICS_REFRESH_SECONDS whoever scrapes (an unauthenticated
    flood of scrapes costs no more than one query per interval)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._counted_at = float("-inf")

    def _fresh_counts(self) -> dict[str, int]:
        refresh = getattr(getattr(_runtime, "settings", None), "metrics_refresh_seconds", 5.0)
        with self._lock:
            if _runtime is not None and time.monotonic() - self._counted_at >= refresh:
                self._counted_at = time.monotonic()
                try:
                    with _runtime.db.sessions() as session:
                        self._counts = dict(session.execute(
                            select(Reservation.status, func.count()).group_by(Reservation.status)).all())
                except Exception:  # a metrics scrape must not fail because the database blinked
                    pass
            return self._counts

    def collect(self):
        family = GaugeMetricFamily("gateway_reservations", "Reservations by state", labels=["state"])
        counts = {state: 0 for state in ("pending", "finalized", "released", "expired", "voided")}
        counts.update(self._fresh_counts())
        for state, count in counts.items():
            family.add_metric([state], count)
        yield family


# Collectors that read the database rather than this process's counts (in multiprocess mode they are rendered
# beside the processes' files, once).
DATABASE_COLLECTORS = [ReservationStates()]
for _collector in DATABASE_COLLECTORS:
    REGISTRY.register(_collector)


def multiprocess_dir() -> str | None:
    """PROMETHEUS_MULTIPROC_DIR: set (by `python -m gateway` with GATEWAY_WORKERS above 1) when the gateway's
    processes share their counts through files there, so any process's /metrics shows every process's."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


EXPOSITION = Exposition()
_process_files: ProcessFiles | None = None
_process_files_lock = threading.Lock()


def render(rt) -> tuple[bytes, str]:
    global _runtime, _process_files
    _runtime = rt
    lines: list[str] = []
    folder = multiprocess_dir()
    if folder is None:
        EXPOSITION.registry(REGISTRY, lines)
    else:
        with _process_files_lock:
            if _process_files is None or _process_files.folder != folder:
                _process_files = ProcessFiles(folder, EXPOSITION)
            files = _process_files
        files.render(lines)
        for collector in DATABASE_COLLECTORS:
            EXPOSITION.families(collector.collect(), lines)
    return "".join(lines).encode("utf-8"), CONTENT_TYPE_LATEST


def forget_dead_processes() -> None:
    """Drop the live-only gauges (gateway_leader) of processes that died without saying so (SIGKILL), so the sum
    over live processes counts only the living."""
    folder = multiprocess_dir()
    if folder is None:
        return
    for path in glob.glob(os.path.join(folder, "gauge_live*_*.db")):
        pid = int(re.search(r"_(\d+)\.db$", path).group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, folder)
        except PermissionError:  # alive, another user's
            pass


def observe(method: str, route: str, status: int, seconds: float) -> None:
    REQUESTS.labels(method, route, str(status)).inc()
    LATENCY.labels(method, route).observe(seconds)
