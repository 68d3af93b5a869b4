"""Child processes of the embedded stack, each logging to its own file."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections import deque
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ChildProcess:
    def __init__(self, name: str, argv: list[str], *, env: dict, log_path: Path, cwd: Path):
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.cwd = cwd
        self.process: subprocess.Popen | None = None
        self.asked_to_stop = False

    def start(self) -> None:
        self.asked_to_stop = False
        log = open(self.log_path, "ab")
        # A session of its own, so Ctrl-C on the suite does not reach the child before the suite stops it.
        self.process = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        log.close()

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
