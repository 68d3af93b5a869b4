"""Several worker processes, each listening on a socket of its own on the one port (SO_REUSEPORT), so that the kernel
spreads new connections over them.

uvicorn's own multi-process mode binds one socket that every worker accepts from: connections that come together (a
load balancer opening its pool, a burst of clients) all go to whichever worker wakes first, which drains the queue,
and keep-alive connections stay where they landed. Measured with 16 connections opened at once (scripts/bench-gateway
--workers 2): one worker served nearly all of them and 2 workers gave less than 1. With a socket per worker the
kernel hashes each connection to one of them. A worker that dies takes its socket with it (no connection waits on a
socket nobody accepts from), and uvicorn's supervisor starts a new one, which binds again.

Workers are forked, not spawned: the supervisor imports the libraries the app needs once (PRELOAD), and each worker,
started or restarted, begins with them loaded instead of importing them again (a spawned worker spent most of its
second of start-up there, two at once on two cores). The gateway's own modules are still imported in each worker:
importing them defines its metrics, which in multiprocess mode open files named after the importing process.
"""
from __future__ import annotations

import importlib
import logging
import multiprocessing
import signal
import socket
import sys

import uvicorn._subprocess
from uvicorn.config import Config
from uvicorn.supervisors import multiprocess
from uvicorn.supervisors.multiprocess import Multiprocess, Process

STARTUP_FAILURE = 3  # uvicorn's: the supervisor stops instead of restarting a worker that cannot bind

log = logging.getLogger("gateway")
# Libraries the app imports (python -X importtime -m gateway: nine tenths of a worker's import time), none of which
# starts a thread, opens a connection or makes a metric on import. A name missing here is only imported later.
PRELOAD = ("fastapi", "fastapi.routing", "starlette.responses", "pydantic", "sqlalchemy", "sqlalchemy.orm",
           "sqlalchemy.dialects.postgresql", "sqlalchemy.dialects.sqlite", "psycopg", "psycopg_pool", "aiohttp",
           "cryptography.hazmat.primitives.asymmetric.ec", "jwt", "yaml", "prometheus_client",
           "uvicorn.protocols.http.httptools_impl", "uvicorn.lifespan.on", "uvicorn.loops.auto")


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


class OwnSocketProcess(Process):
    """A uvicorn worker that binds its own SO_REUSEPORT socket instead of the supervisor's shared one."""

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # runs in the worker
        for sig in multiprocess.SIGNALS:  # forked with the supervisor's handlers, which only queue for the supervisor
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
        try:
            sock = listening_socket(self.config.host, self.config.port)
        except OSError as exc:
            log.error("gateway worker cannot listen on %s:%s: %s", self.config.host, self.config.port, exc)
            sys.exit(STARTUP_FAILURE)
        super().target([sock])


def preload(but: tuple[str, ...] = ()) -> None:
    """Import the PRELOAD libraries, except those named in `but`."""
    for name in PRELOAD:
        if name in but:
            continue
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def run(config: Config) -> None:
    """uvicorn's supervisor of `config.workers` processes, each on its own socket."""
    preload()
    uvicorn._subprocess.spawn = multiprocessing.get_context("fork")  # the context uvicorn starts its workers in
    multiprocess.Process = OwnSocketProcess  # the class the supervisor starts (and restarts) its workers with
    Multiprocess(config, sockets=[]).run()
