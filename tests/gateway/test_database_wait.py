"""`python -m gateway` with DATABASE_WAIT_SECONDS: a container started beside its database retries the first
connection for that long, then gives up with one line; without it, nothing waits."""
import socket
import time

import pytest

from gateway.__main__ import wait_for_database


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_no_wait_configured_returns_at_once_even_without_a_database():
    started = time.monotonic()
    wait_for_database(f"postgresql+psycopg://postgres:pw@127.0.0.1:{_closed_port()}/gateway", 0)
    assert time.monotonic() - started < 0.5


def test_a_database_that_never_answers_ends_the_wait_with_one_line():
    started = time.monotonic()
    with pytest.raises(SystemExit) as stop:
        wait_for_database(f"postgresql+psycopg://postgres:pw@127.0.0.1:{_closed_port()}/gateway", 0.6)
    assert 0.3 < time.monotonic() - started < 5
    assert str(stop.value).startswith("gateway: the database did not answer within DATABASE_WAIT_SECONDS=0.6: ")
    assert "\n" not in str(stop.value)


def test_a_database_that_answers_ends_the_wait(tmp_path):
    started = time.monotonic()
    wait_for_database(f"sqlite:///{tmp_path / 'gateway.db'}", 30)
    assert time.monotonic() - started < 5
