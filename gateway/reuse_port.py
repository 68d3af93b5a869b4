"""Several worker processes, each listening on a socket of its own on the one port (SO_REUSEPORT), so that the kernel
spreads new connections over them.

uvicorn's own multi-process mode binds one socket that every worker accepts from: connections that come together (a
load balancer opening its pool, a burst of clients) all go to whichever worker wakes first, which drains the queue,
and keep-alive connections stay where they landed. Measured with 16 connections opened at once (scripts/bench-gateway
--workers 2): one worker served nearly all of them and 2 workers gave less than 1. With a socket per worker the
kernel hashes each connection to one of them. A worker that dies takes its socket with it (no connection waits on a
socket nobody accepts from), and uvicorn's supervisor starts a new one, which binds again.
"""
from __future__ import annotations

import logging
import socket
import sys

from uvicorn.config import Config
from uvicorn.supervisors import multiprocess
from uvicorn.supervisors.multiprocess import Multiprocess, Process

STARTUP_FAILURE = 3  # uvicorn's: the supervisor stops instead of restarting a worker that cannot bind

log = logging.getLogger("gateway")


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
        try:
            sock = listening_socket(self.config.host, self.config.port)
        except OSError as exc:
            log.error("gateway worker cannot listen on %s:%s: %s", self.config.host, self.config.port, exc)
            sys.exit(STARTUP_FAILURE)
        super().target([sock])


def run(config: Config) -> None:
    """uvicorn's supervisor of `config.workers` processes, each on its own socket."""
    multiprocess.Process = OwnSocketProcess  # the class the supervisor starts (and restarts) its workers with
    Multiprocess(config, sockets=[]).run()
