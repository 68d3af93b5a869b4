"""A stack started on its own, outside a behave run, so several behave processes can share it as `external`.

Used by scripts/stack (one stack in the foreground until Ctrl-C / SIGTERM) and scripts/run-parallel (one stack
for all its workers). The stack is chosen and configured exactly as in a behave run: `-D stack=...`,
`-D database_url=...` and the other suite options, falling back to SUITE_* environment variables.
"""
from __future__ import annotations

import dataclasses

from support.harness import config as suite_config
from support.harness.redaction import mask_url
from support.stacks import Endpoints, Stack, make_stack

# The suite options that say where an already running stack is (what `-D stack=external` needs).
ENDPOINT_OPTIONS = ("base_url", "database_url", "keys_dir", "stub_url", "config_repo", "backend_base_url",
                    "replica_urls")


def start(userdata: dict[str, str]) -> tuple[Stack, Endpoints]:
    """Bring up the stack that these -D options describe. On failure the stack is taken down again and the
    one-line SuiteSetupError is raised."""
    config = suite_config.load(userdata)
    stack = make_stack(config)
    stack.warm_restarts = False  # used as `external`, whose scenarios cannot restart its gateway
    try:
        endpoints = stack.up()
    except BaseException:
        stack.down()
        raise
    return stack, endpoints


def external_defines(endpoints: Endpoints, stack: Stack | None = None) -> dict[str, str]:
    """The -D options with which a behave process uses this running stack as `external` (plus, for a stack
    whose processes log into files here, where those logs are, so steps that read the gateway's log work)."""
    defines = {"stack": "external"}
    for name in ENDPOINT_OPTIONS:
        value = getattr(endpoints, name)
        if value:
            defines[name] = ",".join(value) if isinstance(value, tuple) else str(value)
    logs_dir = logs_folder(stack)
    if logs_dir:
        defines["logs_dir"] = logs_dir
    config = getattr(stack, "config", None)
    for name in ("gateway_workers", "gateway_replicas"):  # how many processes serve: @scale scenarios need several
        if config is not None and getattr(config, name) > 1:
            defines[name] = str(getattr(config, name))
    return defines


def logs_folder(stack: Stack | None) -> str | None:
    """The folder holding the stack's <process>.log files, when it keeps them on this machine."""
    if stack is None:
        return None
    if getattr(stack, "config", None) is not None and stack.config.stack == "external":
        return stack.config.logs_dir
    processes = getattr(stack, "processes", None) or {}
    folders = {str(p.log_path.parent) for p in processes.values() if getattr(p, "log_path", None)}
    return folders.pop() if len(folders) == 1 else None


def describe(stack: Stack, endpoints: Endpoints) -> dict:
    """What scripts/stack prints and writes: the endpoints plus the behave arguments that use them."""
    defines = external_defines(endpoints, stack)
    return {
        "stack": stack.name,
        **dataclasses.asdict(endpoints),
        "logs_dir": logs_folder(stack),
        "behave_args": [arg for name, value in defines.items() for arg in ("-D", f"{name}={value}")],
    }


def masked(endpoints: Endpoints) -> str:
    """One line for a log: where the stack is, with any database password masked."""
    parts = [f"gateway {endpoints.base_url}"]
    if endpoints.database_url:
        parts.append(f"database {mask_url(endpoints.database_url)}")
    if endpoints.stub_url:
        parts.append(f"model stub {endpoints.stub_url}")
    return ", ".join(parts)
