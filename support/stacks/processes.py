"""Child processes of the embedded stack, each logging to its own file."""
from __future__ import annotations

import ctypes
import os
import select
import signal
import socket
import subprocess
import sys
import time
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


def alive(pid: int) -> bool:
    """Running: a zombie (dead, not yet reaped by its parent) is not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone; or going while read (ESRCH)
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


class Standby:
    """A warm standby (`python -m gateway` with GATEWAY_STANDBY=1): it has loaded the code once and forks a gateway
    for each line on its stdin, telling on a pipe of its own each fork's pid and, once one ends, its exit code."""

    def __init__(self, process: subprocess.Popen, replies: int):
        self.process = process
        self.replies = replies  # the read end of the pipe the standby writes "started PID" and "ended PID CODE" to
        self.ended: dict[int, int] = {}
        self._started: list[int] = []
        self._partial = b""

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def fork(self) -> "ForkedGateway":
        """Ask for a gateway, without waiting: it is forked once the standby has loaded, and ForkedGateway learns
        its pid then."""
        try:
            self.process.stdin.write(b"serve\n")
            self.process.stdin.flush()
        except OSError:
            pass  # the standby is gone: the ForkedGateway says so, with the standby's exit code
        return ForkedGateway(self)

    def started(self) -> int | None:
        """The pid of the next fork not yet claimed, if the standby has said it started."""
        self.read_replies()
        return self._started.pop(0) if self._started else None

    def read_replies(self, wait: float = 0.0) -> None:
        """What the standby has said since (waiting up to `wait` seconds for a first line)."""
        if self.replies < 0 or not select.select([self.replies], [], [], wait)[0]:
            return
        try:
            chunk = os.read(self.replies, 65536)
        except BlockingIOError:
            return
        if not chunk:  # the standby is gone: nothing more will come
            os.close(self.replies)
            self.replies = -1
            return
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for word, *numbers in (line.decode().split() for line in lines if line.strip()):
            if word == "started":
                self._started.append(int(numbers[0]))
            elif word == "ended":
                self.ended[int(numbers[0])] = int(numbers[1])

    def drop(self) -> None:
        """Kill the standby: it serves nothing itself (what it forked ends with it)."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        with suppress(OSError):
            self.process.stdin.close()
        if self.replies >= 0:
            os.close(self.replies)
            self.replies = -1


class ForkedGateway:
    """A gateway asked of the standby: not this process's child, so it is watched through what the standby tells
    (and /proc, once the standby is gone). Answers as much of subprocess.Popen as the stack uses; until the standby
    has forked it, it is "starting", and if the standby ends first, it ended as the standby did."""

    def __init__(self, standby: Standby):
        self.standby = standby
        self._pid: int | None = None
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        """Its pid, once forked (waiting up to a minute while the standby loads); else the standby's."""
        deadline = time.monotonic() + 60
        while not self.forked() and self.standby.alive() and time.monotonic() < deadline:
            self.standby.read_replies(wait=0.2)
        return self._pid if self._pid is not None else self.standby.pid

    def forked(self) -> bool:
        if self._pid is None:
            self._pid = self.standby.started()
        return self._pid is not None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._exit_code()
        return self.returncode

    def _exit_code(self) -> int | None:
        if not self.forked():
            if self.standby.alive():
                return None  # the standby is still loading
            if not self.forked():  # (it may have told of the fork as it ended)
                return self.standby.process.returncode
        self.standby.read_replies()
        if self._pid not in self.standby.ended and not alive(self._pid):
            self.standby.read_replies(wait=0.5 if self.standby.alive() else 0)  # its exit code, if it tells
            return self.standby.ended.get(self._pid, -signal.SIGKILL)
        return self.standby.ended.get(self._pid)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"gateway {self._pid}", timeout)
            self.standby.read_replies(wait=0.05)  # a reply ends the wait at once
        return self.returncode

    def send_signal(self, how: int) -> None:
        with suppress(ProcessLookupError):
            os.kill(self.pid, how)


class ChildProcess:
    def __init__(self, name: str, argv: list[str], *, env: dict, log_path: Path, cwd: Path,
                 standby_env: dict | None = None):
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.cwd = cwd
        self.process: subprocess.Popen | ForkedGateway | None = None
        self.asked_to_stop = False
        # A warm standby (started with standby_env), which start() asks for a fork instead of starting cold.
        # None: every start is cold.
        self.standby_env = standby_env
        self.standby: Standby | None = None

    def _popen(self, env: dict, stdin=None, pass_fds=()) -> subprocess.Popen:
        log = open(self.log_path, "ab")
        try:
            # A session of its own, so Ctrl-C on the suite does not reach the child before the suite stops it.
            return subprocess.Popen(self.argv, env=env, cwd=self.cwd, stdin=stdin, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True, pass_fds=pass_fds,
                                    preexec_fn=_die_with_the_suite if _prctl else None)
        finally:
            log.close()

    def start(self) -> None:
        """A fork of the warm standby (one still loading is still ahead of a cold start), else a cold start; either
        way without waiting for it to be ready."""
        self.asked_to_stop = False
        warm = self.standby is not None and self.standby.alive()
        self.process = self.standby.fork() if warm else self._popen(self.env)

    def start_standby(self) -> None:
        """Start the warm standby, unless one is alive or none is wanted."""
        if self.standby is not None and not self.standby.alive():
            self.drop_standby()
        if self.standby_env is None or self.standby is not None:
            return
        replies, told = os.pipe()
        try:
            process = self._popen({**self.standby_env, "GATEWAY_STANDBY_REPLIES": str(told)}, stdin=subprocess.PIPE,
                                  pass_fds=(told,))
        finally:
            os.close(told)
        os.set_blocking(replies, False)
        self.standby = Standby(process, replies)

    def drop_standby(self) -> None:
        standby, self.standby = self.standby, None
        if standby is not None:
            standby.drop()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def describe(self) -> str:
        if self.process is None:
            return "not started"
        code = self.process.poll()
        if code is not None:
            return f"exited with code {code}"
        if isinstance(self.process, ForkedGateway) and not self.process.forked():
            return f"starting (its standby, pid {self.process.standby.pid}, is still loading)"
        return f"running (pid {self.process.pid})"

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
