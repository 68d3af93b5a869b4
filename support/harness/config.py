"""Suite configuration from one place: behave `-D key=value`, else `SUITE_<KEY>` environment variables, else defaults."""
from __future__ import annotations

import os
import secrets
import textwrap
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from support.harness.redaction import mask_url

STACKS = ("local", "compose", "external")
COMPOSE_REPLICAS = 2  # the compose stack's gateway replicas unless -D gateway_replicas says otherwise


class SuiteSetupError(Exception):
    """A problem that stops the run at once; its message is one line that says what to do."""


def option(default, meaning: str, shown: str | None = None):
    """A suite option: its default, what it means, and how `behave -D help` shows the default (when the default
    is worked out at run time)."""
    return field(default=default, metadata={"meaning": meaning, "shown": shown})


@dataclass(frozen=True)
class SuiteConfig:
    stack: str = option("local", "local (gateway and model stub started here), compose (Docker) or external (a "
                                 "deployment given by -D base_url)")
    base_url: str | None = option(None, "the gateway's address, for -D stack=external")
    database_url: str | None = option(
        None, "local: a PostgreSQL server on which the run creates, and later drops, a fresh database; external: "
              "the deployment's database (scenarios tagged @needs_database are skipped without it)",
        "SQLite in a temp folder, on the local stack")
    keys_dir: str | None = option(None, "the keys folder scripts/keygen wrote for the deployment (external)",
                                  "generated per run, on the local and compose stacks")
    stub_url: str | None = option(None, "the model backend stub's control address (external; scenarios tagged "
                                        "@needs_stub_control are skipped without it)",
                                  "started per run, on the local stack")
    backend_base_url: str | None = option(None, "the stub as the gateway reaches it, when not at stub_url (a "
                                                "gateway in a container)", "stub_url")
    config_repo: str | None = option(None, "a working copy of the git repository the gateway reconciles from "
                                           "(external; scenarios tagged @needs_config_repo are skipped without it)",
                                     "created per run, on the local stack")
    logs_dir: str | None = option(None, "a folder of the running stack's <process>.log files (external; scenarios "
                                        "tagged @needs_logs are skipped without it)",
                                  "the stack's own, on the local stack")
    ready_timeout: float = option(30.0, "seconds to wait for the gateway's /readyz when the run starts")
    request_timeout: float = option(15.0, "seconds one HTTP request to the gateway may take")
    poll_timeout: float = option(10.0, "seconds a step polls for something to happen before it fails")
    run_id: str = option("", "the run's id, in every org slug, email and request id it makes (scripts/cleanup "
                             "--run-id removes what a crashed run left)", "generated (r<MMDDhhmmss><hex>)")
    worker: str = option("", "a parallel worker's name, added to the run id (set by scripts/run-parallel)")
    artifacts_dir: str = option("artifacts", "where load runs and other artifacts are written")
    keep_stack: bool = option(False, "keep the embedded stack's temp folder (logs, SQLite file, keys) after the "
                                     "run")
    cleanup: bool = option(True, "at the end of the run, deactivate the orgs, keys, invitations and users it "
                                 "created (false: leave them, to look at after a failure; not needed on the local "
                                 "stack, whose database goes with it, unless keep_stack)")
    gateway_workers: int = option(1, "worker processes of each gateway (GATEWAY_WORKERS; local: PostgreSQL only; "
                                     "external: how many the deployment runs); scenarios tagged @scale need more than "
                                     "one process in all")
    gateway_replicas: int = option(1, "gateway replicas behind the load balancer (compose; external: how many the "
                                      "deployment runs); scenarios tagged @scale need more than one process in all",
                                   "2 on the compose stack, else 1")
    replica_urls: str | None = option(None, "each replica's own address, comma-separated (external, behind a load "
                                            "balancer): the deployment's metrics are read from each and summed",
                                      "the compose stack's own")

    @property
    def gateway_processes(self) -> int:
        """How many gateway processes serve the suite's requests (workers of every replica)."""
        return self.gateway_workers * self.gateway_replicas

    def describe(self, report: str | None = None) -> str:
        """The run's first line: which stack, what it offers, the run id and where the report goes. Passwords
        masked; every option is listed by `behave -D help`."""
        if self.stack == "external":
            where = f"external stack at {mask_url(self.base_url or '?')}"
            offers = [f"database {mask_url(self.database_url)}" if self.database_url else "no database",
                      "stub control" if self.stub_url else "no stub control",
                      "config repo" if self.config_repo else "no config repo",
                      "logs" if self.logs_dir else "no logs"]
            where += f" ({', '.join(offers)})"
        elif self.stack == "compose":
            replicas = f"{self.gateway_replicas} gateway replica{'s' if self.gateway_replicas != 1 else ''}" + (
                f" of {self.gateway_workers} processes" if self.gateway_workers > 1 else "")
            where = f"compose stack ({replicas} behind a load balancer, model stub and PostgreSQL in Docker containers)"
        else:
            database = mask_url(self.database_url) if self.database_url else "SQLite in a temp folder"
            workers = f", {self.gateway_workers} gateway processes" if self.gateway_workers > 1 else ""
            where = f"local stack (gateway and model stub started here, database {database}{workers})"
        line = f"acceptance suite: {where}; run {self.run_id}{self.worker}"
        if report:
            line += f"; report: {report} (scripts/report makes the HTML)"
        return line + "; every option: behave -D help"


def options_help() -> str:
    """Every -D option with its default and meaning, read from SuiteConfig (what `behave -D help` prints)."""
    lines = ["Suite options: behave -D NAME=VALUE, else the environment variable SUITE_<NAME>, else the default.", ""]
    for f in fields(SuiteConfig):
        default = f.metadata["shown"] or (str(f.default).lower() if isinstance(f.default, bool) else f.default)
        lines.append(f"  {f.name}" + (f"  (default: {default})" if default not in (None, "") else ""))
        lines.extend(textwrap.wrap(f.metadata["meaning"], width=108, initial_indent=" " * 6,
                                   subsequent_indent=" " * 6))
    return "\n".join(lines)


def _convert(name: str, kind, raw: str):
    if kind is bool or kind == "bool":
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise SuiteSetupError(f"-D {name}={raw!r} is not a boolean: use true or false")
    if kind is int or kind == "int":
        if not raw.strip().isdigit() or int(raw) < 1:
            raise SuiteSetupError(f"-D {name}={raw!r} is not a whole number of at least 1: use e.g. -D {name}=2")
        return int(raw)
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
    if config.stack == "compose" and "gateway_replicas" not in values:
        config = _replace(config, gateway_replicas=COMPOSE_REPLICAS)
    _check_processes(config)
    if not config.run_id:
        config = _replace(config, run_id=time.strftime("r%m%d%H%M%S") + secrets.token_hex(2))
    return config


def _check_processes(config: SuiteConfig) -> None:
    if config.stack == "local" and config.gateway_workers > 1 and not (config.database_url or "").startswith(
            "postgresql"):
        raise SuiteSetupError(f"-D gateway_workers={config.gateway_workers} needs PostgreSQL (several gateway "
                              f"processes share their rate limits and leadership there): add -D database_url="
                              f"postgresql://USER@HOST:PORT/postgres, or use -D gateway_workers=1 with SQLite")
    if config.stack == "local" and config.gateway_replicas > 1:
        raise SuiteSetupError(f"-D gateway_replicas={config.gateway_replicas} needs a load balancer in front of the "
                              f"replicas: use -D stack=compose (the local stack runs one gateway; -D gateway_workers=N "
                              f"gives it N processes)")


def _replace(config: SuiteConfig, **changes) -> SuiteConfig:
    return SuiteConfig(**{**{f.name: getattr(config, f.name) for f in fields(config)}, **changes})
