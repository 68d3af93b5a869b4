"""behave hooks: bring the stack up once, give each scenario its own namespace and cleanup, attach evidence on
failure, bring the stack down."""
from __future__ import annotations

import atexit
import os
import secrets
import sys

from support.harness import config as suite_config
from support.client import evidence
from support.client import failure_dossier
from support.client.api import ApiClient
from support.harness.config import SuiteSetupError
from support.database.reflection import Database
from support.tokens.signing_keys import KeyMaterial
from support.domain.model_backends import ModelBackends
from support.harness.namespace import Namespace
from support.domain.platform_api import Platform
from support.stacks import make_stack
from support.harness.world import World


def _stop_run(context, message: str) -> None:
    """A set-up problem ends the run at once with one line that says what to do."""
    stack = getattr(context, "stack", None)
    if stack is not None:
        stack.down()
    sys.stderr.write(f"acceptance suite: {message}\n")
    sys.stderr.flush()
    os._exit(2)


def before_all(context):
    evidence.install(context)  # failure messages and log records are masked from here on
    try:
        context.config_suite = suite_config.load(context.config.userdata)
        print(context.config_suite.describe(), flush=True)
        context.stack = make_stack(context.config_suite)
        atexit.register(context.stack.down)
        context.endpoints = context.stack.up()
        if not context.endpoints.keys_dir:
            raise SuiteSetupError("this stack gave no keys folder: pass -D keys_dir=... (the folder scripts/keygen "
                                  "wrote for the deployment)")
        context.keys = KeyMaterial(context.endpoints.keys_dir)
        context.db = Database(context.endpoints.database_url)
        evidence.describe_run(stack=context.stack.name, base_url=context.endpoints.base_url,
                              database=(context.endpoints.database_url or "none").split(":", 1)[0].split("+")[0],
                              run_id=context.config_suite.run_id, worker=context.config_suite.worker)
        context.backends = ModelBackends(context.endpoints.stub_url, context.endpoints.backend_base_url)
    except SuiteSetupError as problem:
        _stop_run(context, str(problem))


def before_scenario(context, scenario):
    cfg = context.config_suite
    context.ns = Namespace(cfg.run_id + cfg.worker, f"{scenario.filename}:{scenario.line}:{scenario.name}")
    context.api = ApiClient(context.endpoints.base_url, request_id_prefix=context.ns.request_id_prefix,
                            trace_id=secrets.token_hex(16), timeout=cfg.request_timeout,
                            diagnose=context.stack.last_words)
    context.world = World()
    context.platform = Platform(context.api, context.keys, context.ns, context.world)
    context.add_cleanup(context.api.close)
    if "needs_config_repo" in scenario.effective_tags and not context.endpoints.config_repo:
        scenario.skip("needs the gateway's config repository on this machine: use the local stack, or pass "
                      "-D config_repo=PATH (a working copy of the repository the gateway reads)")


def after_step(context, step):
    if step.status.has_failed():
        failure_dossier.attach(context, step)


def after_all(context):
    stack = getattr(context, "stack", None)
    if stack is not None:
        if getattr(context, "db", None) is not None:
            context.db.dispose()
        stack.down()
