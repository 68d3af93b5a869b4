"""Where the gateway runs: stack backends `local` (embedded, the default), `compose` (Docker) and `external` (a
deployment by URL), the processes and config repository they manage, and the database outages a stack that owns
its database can take (outages).

Imports support.harness, client, tokens and database."""
from __future__ import annotations

import atexit

from support.harness import config as suite_config
from support.harness.config import SuiteConfig
from support.stacks.base import Endpoints, Stack


def make_stack(config: SuiteConfig) -> Stack:
    if config.stack == "local":
        from support.stacks.local import LocalStack
        return LocalStack(config)
    if config.stack == "external":
        from support.stacks.external import ExternalStack
        return ExternalStack(config)
    from support.stacks.compose import ComposeStack
    return ComposeStack(config)


def launch(userdata: dict, report: str | None = None) -> Stack:
    """Read the run's configuration, print it once, start its stack without waiting for it (its up() waits). A bad
    option raises SuiteSetupError with one line that says what to do."""
    config = suite_config.load(userdata)
    print(config.describe(report), flush=True)
    stack = make_stack(config)
    atexit.register(stack.down)
    try:
        stack.launch()
    except suite_config.SuiteSetupError:
        stack.down()
        raise
    return stack


__all__ = ["Endpoints", "Stack", "launch", "make_stack"]
