"""The embedded stack's warm standby: a restart promotes a gateway that has already loaded what it needs, and starts
the next one; a dead standby gives way to a cold start; nothing is left behind."""
import os
import signal

import requests

from support.harness.config import load
from support.harness.waits import wait_until
from support.stacks import make_stack


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _ready(stack) -> int:
    return requests.get(f"{stack.endpoints.base_url}/readyz", timeout=5).status_code


def _fresh_standby(stack) -> int:
    gateway = stack.processes["gateway"]
    gateway.start_standby()
    return gateway.standby.pid


def test_a_restart_promotes_the_standby_and_starts_the_next_one(stack):
    standby = _fresh_standby(stack)
    killed = stack.kill_gateway()
    assert stack.gateway_pid() is None and _alive(standby), "a kill stops the serving gateway only"
    stack.restart_gateway()
    assert stack.gateway_pid() == standby != killed
    assert _ready(stack) == 200
    next_standby = stack.processes["gateway"].standby
    assert next_standby is not None and next_standby.pid not in (standby, killed) and next_standby.poll() is None


def test_a_standby_whose_stdin_ends_exits_quietly(stack):
    _fresh_standby(stack)
    standby = stack.processes["gateway"].standby
    standby.stdin.close()  # as when the suite that started it goes away
    assert standby.wait(timeout=20) == 0


def test_a_dead_standby_gives_way_to_a_cold_start(stack):
    gateway = stack.processes["gateway"]
    dead = _fresh_standby(stack)
    os.killpg(dead, signal.SIGKILL)
    wait_until("the standby to be gone", gateway.standby.poll, lambda code: code is not None, timeout=10)
    stack.restart_gateway()
    assert stack.gateway_pid() not in (None, dead)
    assert _ready(stack) == 200


def test_taking_the_stack_down_stops_the_standby_too():
    local = make_stack(load({}, environ={}))
    local.up()
    try:
        serving, standby = local.gateway_pid(), local.processes["gateway"].standby.pid
    finally:
        local.down()
    assert not _alive(serving) and not _alive(standby)
