"""Child processes of the embedded stack, each logging to its own file."""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from contextlib import suppress
from pathlib import Path

PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Looked up here, not in the forked child (where loading a library could deadlock on a lock another thread held).
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _die_with_the_suite() -> None:
    """Run in the child before it starts: SIGTERM when the suite (the thread that started it) dies, however it dies,
    so a suite killed with SIGTERM leaves no gateway serving or standby waiting."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ChildProcess:
    def __init__(self, name: str, argv: list[str], *, env: dict, log_path: Path, cwd: Path,
                 standby_env: dict | None = None):
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.cwd = cwd
        self.process: subprocess.Popen | None = None
        self.asked_to_stop = False
        # Warm standbys (started with standby_env): copies that have loaded what they need and wait for a line on
        # their stdin, which start() gives the oldest instead of starting cold. None: every start is cold.
        self.standby_env = standby_env
        self.standbys: list[subprocess.Popen] = []

    def _popen(self, env: dict, stdin=None) -> subprocess.Popen:
        log = open(self.log_path, "ab")
        try:
            # A session of its own, so Ctrl-C on the suite does not reach the child before the suite stops it.
            return subprocess.Popen(self.argv, env=env, cwd=self.cwd, stdin=stdin, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=_die_with_the_suite if _prctl else None)
        finally:
            log.close()

    def start(self) -> None:
        """Promote the oldest live standby (one still loading is still ahead of a cold start), else start cold."""
        self.asked_to_stop = False
        self.process = self._promote_standby() or self._popen(self.env)

    def start_standby(self, keep: int = 1) -> None:
        """Start warm standbys beside the running process until `keep` are alive (none if none is wanted)."""
        for standby in [s for s in self.standbys if s.poll() is not None]:
            self._drop(standby)
        while self.standby_env is not None and len(self.standbys) < keep:
            self.standbys.append(self._popen(self.standby_env, stdin=subprocess.PIPE))

    def _promote_standby(self) -> subprocess.Popen | None:
        while self.standbys:
            standby = self.standbys.pop(0)
            try:
                standby.stdin.write(b"serve\n")
                standby.stdin.close()
                return standby
            except OSError:  # it died (its own lines in the log say why): the next one, or a cold start
                self._drop(standby)
        return None

    def drop_standbys(self) -> None:
        """Kill the standbys: they serve nothing and hold nothing yet."""
        while self.standbys:
            self._drop(self.standbys.pop())

    def _drop(self, standby: subprocess.Popen) -> None:
        if standby in self.standbys:
            self.standbys.remove(standby)
        if standby.poll() is None:
            os.killpg(standby.pid, signal.SIGKILL)
        standby.wait(timeout=10)
        with suppress(OSError):
            standby.stdin.close()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def describe(self) -> str:
        if self.process is None:
            return "not started"
        code = self.process.poll()
        return f"running (pid {self.process.pid})" if code is None else f"exited with code {code}"

    def ask_to_stop(self) -> None:
        """SIGTERM, once, without waiting (stop() waits): processes asked together wind down together."""
        if self.running() and not self.asked_to_stop:
            self.process.send_signal(signal.SIGTERM)
            self.asked_to_stop = True

    def stop(self, timeout: float = 10) -> None:
        if not self.running():
            return
        self.ask_to_stop()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.running():
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def tail(self, lines: int) -> list[str]:
        if not self.log_path.exists():
            return []
        with open(self.log_path, errors="replace") as handle:
            return [line.rstrip("\n") for line in deque(handle, maxlen=lines)]
