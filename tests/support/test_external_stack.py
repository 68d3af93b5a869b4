"""An external deployment is looked at once: one that is down, or is not a gateway, stops the run at once with one
line; one that says it is not ready yet is waited for until ready_timeout."""
from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler

import pytest

from support.harness.config import SuiteSetupError, load
from support.stacks import make_stack


class Answers(BaseHTTPRequestHandler):
    """/healthz 200; /readyz whatever the server's `readyz` list says next (its last answer repeats)."""

    def do_GET(self):
        status = 200 if self.path == "/healthz" else self.server.readyz.pop(0) if len(self.server.readyz) > 1 \
            else self.server.readyz[0]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": "not_ready", "reason": "config_sync: waiting"}' if status == 503 else b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture()
def deployment(serving):
    with serving(Answers) as server:
        server.readyz = [200]
        yield server


def external(server, **options):
    return make_stack(load({"stack": "external", "base_url": f"http://127.0.0.1:{server.server_port}", **options},
                           environ={}))


def test_a_gateway_that_is_down_is_one_line_at_once():
    started = time.monotonic()
    with pytest.raises(SuiteSetupError) as problem:
        make_stack(load({"stack": "external", "base_url": "http://127.0.0.1:9"}, environ={})).up()
    assert str(problem.value) == ("the gateway at http://127.0.0.1:9 is down (connection refused): start it, or fix "
                                  "-D base_url")
    assert time.monotonic() - started < 2


def test_something_that_is_not_a_gateway_is_named_at_once(deployment):
    deployment.readyz = [404]
    with pytest.raises(SuiteSetupError, match="answered 404, not 200 or 503: is -D base_url the gateway's address"):
        external(deployment).up()


def test_a_gateway_that_is_starting_is_waited_for(deployment):
    deployment.readyz = [503, 503, 200]
    assert external(deployment).up().base_url.endswith(str(deployment.server_port))


def test_a_gateway_that_stays_unready_times_out_quoting_its_reason(deployment):
    deployment.readyz = [503]
    with pytest.raises(SuiteSetupError, match="config_sync: waiting"):
        external(deployment, ready_timeout="0.5").up()
