"""Suite configuration from one place: behave `-D key=value`, else `SUITE_<KEY>` environment variables, else defaults."""
from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, fields
from pathlib import Path

from support.harness.redaction import mask_url

STACKS = ("local", "compose", "external")


class SuiteSetupError(Exception):
    """A problem that stops the run at once; its message is one line that says what to do."""


@dataclass(frozen=True)
class SuiteConfig:
    stack: str = "local"
    base_url: str | None = None
    database_url: str | None = None
    keys_dir: str | None = None
    stub_url: str | None = None
    backend_base_url: str | None = None  # the stub as the gateway reaches it, when not at stub_url (compose)
    config_repo: str | None = None
    logs_dir: str | None = None  # where a running stack's processes log (<name>.log), for `external` runs
    ready_timeout: float = 30.0
    request_timeout: float = 15.0
    poll_timeout: float = 10.0
    run_id: str = ""
    worker: str = ""
    artifacts_dir: str = "artifacts"
    keep_stack: bool = False

    def describe(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "database_url" and value:
                value = mask_url(value)
            shown.append(f"{f.name}={value}")
        return "acceptance suite: " + " ".join(shown)


def _convert(name: str, kind, raw: str):
    if kind is bool or kind == "bool":
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise SuiteSetupError(f"-D {name}={raw!r} is not a boolean: use true or false")
    if kind is float or kind == "float":
        try:
            value = float(raw)
        except ValueError:
            raise SuiteSetupError(f"-D {name}={raw!r} is not a number of seconds: use e.g. -D {name}=30")
        if value <= 0:
            raise SuiteSetupError(f"-D {name}={raw!r} must be above zero")
        return value
    return raw


def load(userdata: dict, environ: dict | None = None) -> SuiteConfig:
    environ = os.environ if environ is None else environ
    known = {f.name: f for f in fields(SuiteConfig)}
    unknown = sorted(k for k in set(userdata) - set(known) if "." not in k)  # dotted keys belong to formatters
    if unknown:
        raise SuiteSetupError(f"unknown option -D {unknown[0]}; known options: {', '.join(sorted(known))}")
    values = {}
    for name, f in known.items():
        raw = userdata.get(name)
        if raw is None:
            raw = environ.get(f"SUITE_{name.upper()}")
        if raw is None or raw == "":
            continue
        values[name] = _convert(name, f.type, str(raw))
    config = SuiteConfig(**values)
    if config.stack not in STACKS:
        raise SuiteSetupError(f"-D stack={config.stack!r} is not a stack; use one of: {', '.join(STACKS)}")
    if config.stack == "external" and not config.base_url:
        raise SuiteSetupError("-D stack=external needs the deployment's address: add -D base_url=https://...")
    if config.keys_dir and not Path(config.keys_dir).is_dir():
        raise SuiteSetupError(f"-D keys_dir={config.keys_dir} is not a folder: run scripts/keygen --out "
                              f"{config.keys_dir} or point keys_dir at the stack's keys")
    if not config.run_id:
        config = _replace(config, run_id=time.strftime("r%m%d%H%M%S") + secrets.token_hex(2))
    return config


def _replace(config: SuiteConfig, **changes) -> SuiteConfig:
    return SuiteConfig(**{**{f.name: getattr(config, f.name) for f in fields(config)}, **changes})
