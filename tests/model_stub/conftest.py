"""Fixtures of the model stub's tests: one stub process per test module, a client, a fresh namespace per test."""

from __future__ import annotations

import uuid

import httpx
import pytest
from stub_helpers import Stub, start_stub, stop


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory):
    started = start_stub(tmp_path_factory.mktemp("model_stub"))
    yield started
    stop(started.proc)
    assert "Traceback" not in started.stderr(), started.stderr()


@pytest.fixture
def client(stub: Stub):
    with httpx.Client(base_url=stub.url, timeout=10) as c:
        yield c


@pytest.fixture
def ns(client: httpx.Client):
    name = f"t-{uuid.uuid4().hex[:12]}"
    yield name
    client.delete(f"/_stub/{name}")
