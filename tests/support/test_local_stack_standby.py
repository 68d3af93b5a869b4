"""The embedded stack's warm standby: each restart forks a gateway from the one standby, which has loaded what serving
needs once; a dead standby gives way to a cold start; nothing is left behind."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from support.harness.config import SuiteSetupError, load
from support.harness.waits import wait_until
from support.stacks import local as local_stack, make_stack
from support.stacks import processes
from support.stacks.processes import alive

ROOT = Path(__file__).resolve().parents[2]
# A suite that starts a child process (a standby-like sleeper) and says its pid.
SUITE = """
import sys, time
from pathlib import Path
from support.stacks.processes import ChildProcess
child = ChildProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], env={}, cwd=Path("."),
                     log_path=Path(sys.argv[1]) / "sleeper.log")
child.start()
print(child.process.pid, flush=True)
time.sleep(60)
"""


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _ready(stack) -> int:
    return requests.get(f"{stack.endpoints.base_url}/readyz", timeout=5).status_code


def _standby(stack):
    """The standby the next restart forks from (one is started if none is alive)."""
    gateway = stack.processes["gateway"]
    gateway.start_standby()
    return gateway.standby


def test_each_restart_forks_the_one_standby_which_stays_loaded_for_the_next(stack):
    standby = _standby(stack)
    assert _parent(stack.gateway_pid()) == standby.pid, "the first gateway is forked by the standby too"
    killed = stack.kill_gateway()
    assert stack.gateway_pid() is None and standby.alive(), "a kill stops the serving gateway only"
    assert stack.processes["gateway"].process.poll() == -signal.SIGKILL, "the standby tells how its fork ended"
    stack.restart_gateway()
    first = stack.gateway_pid()
    assert first not in (None, killed) and _parent(first) == standby.pid
    assert _ready(stack) == 200
    stack.restart_gateway()  # a graceful stop, then the next fork of the same standby
    second = stack.gateway_pid()
    assert second not in (None, first) and _parent(second) == standby.pid
    # uvicorn winds down, then ends by the SIGTERM it was stopped with
    assert stack.processes["gateway"].standby is standby and standby.ended.get(first) == -signal.SIGTERM
    assert _ready(stack) == 200


def test_a_standby_whose_stdin_ends_exits_quietly(stack):
    standby = _standby(stack)
    standby.process.stdin.close()  # as when the suite that started it goes away
    assert standby.process.wait(timeout=20) == 0


def test_a_dead_standby_gives_way_to_a_cold_start(stack):
    standby = _standby(stack)
    os.killpg(standby.pid, signal.SIGKILL)
    wait_until("the standby to be gone", standby.process.poll, lambda code: code is not None, timeout=10)
    stack.restart_gateway()
    assert stack.gateway_pid() is not None and _parent(stack.gateway_pid()) != standby.pid
    assert _ready(stack) == 200


def test_taking_the_stack_down_stops_the_standby_too():
    local = make_stack(load({}, environ={}))
    local.up()
    try:
        local.restart_gateway()
        serving, standby = local.gateway_pid(), local.processes["gateway"].standby.pid
    finally:
        local.down()
    assert not alive(serving) and not alive(standby)


def test_a_suite_killed_outright_leaves_no_child_behind(tmp_path):
    suite = subprocess.Popen([sys.executable, "-c", SUITE, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    child = int(suite.stdout.readline())
    assert alive(child)
    suite.kill()  # no clean-up of its own runs: the kernel tells the child (PR_SET_PDEATHSIG)
    suite.wait()
    suite.stdout.close()
    wait_until(f"the child {child} to end with the suite", lambda: alive(child), lambda alive: not alive,
               timeout=10)


def test_a_gateway_that_cannot_start_is_reported_with_its_exit_code_and_last_lines(monkeypatch):
    # Read by the gateway forked from the standby: the standby loads without reading its settings.
    monkeypatch.setitem(local_stack.GATEWAY_TEST_SETTINGS, "RESERVATION_MARGIN_SECONDS", "soon")
    local = make_stack(load({}, environ={}))
    try:
        with pytest.raises(SuiteSetupError) as failed:
            local.up()
    finally:
        local.down()
    assert "the gateway process exited with code 1 while starting" in str(failed.value)
    assert "RESERVATION_MARGIN_SECONDS" in str(failed.value)


def test_a_process_that_ends_while_its_state_is_read_is_not_alive(monkeypatch):
    def vanishing(self, *args, **kwargs):
        raise ProcessLookupError(3, "No such process")  # what reading /proc/PID/stat of an exiting process can raise

    monkeypatch.setattr(processes.Path, "read_text", vanishing)
    assert not alive(os.getpid())
