"""Fixtures shared across the test folders."""
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
