"""Fixtures shared across the test folders."""
import threading
from contextlib import contextmanager
from http.server import ThreadingHTTPServer

import pytest

from support.harness.config import load
from support.stacks import make_stack


@pytest.fixture(scope="module")
def stack():
    """An embedded (local) stack of the module's own, on SQLite, with the suite's defaults."""
    local = make_stack(load({}, environ={}))
    local.up()
    yield local
    local.down()


@contextmanager
def _serving(handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def serving():
    """`with serving(Handler) as server:` an HTTP server on a free loopback port, answering from a thread of its
    own (`server.server_address[1]` is the port), shut down when the block ends."""
    return _serving
