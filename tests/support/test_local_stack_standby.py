"""The embedded stack's warm standby: a restart promotes a gateway that has already loaded what it needs, and starts
the next one; a dead standby gives way to a cold start; nothing is left behind."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import requests

from support.harness.config import load
from support.harness.waits import wait_until
from support.stacks import make_stack

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


def _alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by whoever adopted it, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _ready(stack) -> int:
    return requests.get(f"{stack.endpoints.base_url}/readyz", timeout=5).status_code


def _standby(stack):
    """The standby the next restart promotes (one is started if none is alive)."""
    gateway = stack.processes["gateway"]
    gateway.start_standby()
    return gateway.standbys[0]


def test_a_restart_promotes_a_standby_and_keeps_two_ready_for_the_next_ones(stack):
    standby = _standby(stack).pid
    killed = stack.kill_gateway()
    assert stack.gateway_pid() is None and _alive(standby), "a kill stops the serving gateway only"
    stack.restart_gateway()
    assert stack.gateway_pid() == standby != killed
    assert _ready(stack) == 200
    following = [process.pid for process in stack.processes["gateway"].standbys if process.poll() is None]
    assert len(following) == 2 and not {standby, killed} & set(following)


def test_a_standby_whose_stdin_ends_exits_quietly(stack):
    standby = _standby(stack)
    standby.stdin.close()  # as when the suite that started it goes away
    assert standby.wait(timeout=20) == 0


def test_dead_standbys_give_way_to_a_cold_start(stack):
    gateway = stack.processes["gateway"]
    _standby(stack)
    dead = [standby.pid for standby in gateway.standbys]
    for standby in gateway.standbys:
        os.killpg(standby.pid, signal.SIGKILL)
        wait_until("the standby to be gone", standby.poll, lambda code: code is not None, timeout=10)
    stack.restart_gateway()
    assert dead and stack.gateway_pid() not in (None, *dead)
    assert _ready(stack) == 200


def test_taking_the_stack_down_stops_the_standby_too():
    local = make_stack(load({}, environ={}))
    local.up()
    try:
        serving, standby = local.gateway_pid(), local.processes["gateway"].standbys[0].pid
    finally:
        local.down()
    assert not _alive(serving) and not _alive(standby)


def test_a_suite_killed_outright_leaves_no_child_behind(tmp_path):
    suite = subprocess.Popen([sys.executable, "-c", SUITE, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    child = int(suite.stdout.readline())
    assert _alive(child)
    suite.kill()  # no clean-up of its own runs: the kernel tells the child (PR_SET_PDEATHSIG)
    suite.wait()
    suite.stdout.close()
    wait_until(f"the child {child} to end with the suite", lambda: _alive(child), lambda alive: not alive,
               timeout=10)
