"""Where the gateway runs: stack backends `local` (embedded, the default), `compose` (Docker) and `external` (a
deployment by URL), the processes and config repository they manage, and the database outages a stack that owns
its database can take (outages).

Imports support.harness, client, tokens and database."""
from __future__ import annotations

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


__all__ = ["Endpoints", "Stack", "make_stack"]
