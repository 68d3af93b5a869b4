"""The reconciler: applies the config repository's branch head (gateway.yaml, orgs/*.yaml, models/*.yaml)."""
from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass, field

import yaml
from sqlalchemy import select

from gateway import audit
from gateway.models import ConfigState, Model, Org, utcnow
from gateway.security import new_id
from gateway.services import ledger

log = logging.getLogger("gateway.config")


class ConfigError(Exception):
    """A commit that cannot be applied; the message names the file (and line when known)."""


@dataclass
class Declared:
    revision: str
    settings: dict = field(default_factory=dict)
    orgs: dict[str, dict] = field(default_factory=dict)
    models: dict[str, dict] = field(default_factory=dict)


def _git(repo: str, *args: str) -> str:
    done = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise ConfigError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def read_head(repo: str, branch: str) -> Declared:
    revision = _git(repo, "rev-parse", f"refs/heads/{branch}").strip()
    declared = Declared(revision)
    for path in _git(repo, "ls-tree", "-r", "--name-only", revision).splitlines():
        if not path.endswith((".yaml", ".yml")):
            continue
        text = _git(repo, "show", f"{revision}:{path}")
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}, line {mark.line + 1}" if mark else path
            raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}")
        if not isinstance(doc, dict):
            raise ConfigError(f"{path}: must be a mapping")
        stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        if path in ("gateway.yaml", "gateway.yml"):
            declared.settings = doc
        elif path.startswith("orgs/"):
            declared.orgs[stem] = doc
        elif path.startswith("models/"):
            declared.models[stem] = doc
    return declared


def apply(session, declared: Declared) -> None:
    for name, spec in declared.models.items():
        model = session.get(Model, name) or Model(name=name)
        model.prompt_price_per_1k_micros = int(spec["price"]["prompt_per_1k_micros"])
        model.completion_price_per_1k_micros = int(spec["price"]["completion_per_1k_micros"])
        model.backends = list(spec["backends"])
        model.default_max_tokens = int(spec.get("default_max_tokens", 256))
        model.managed_by = "git"
        session.add(model)
    for slug, spec in declared.orgs.items():
        org = session.scalar(select(Org).where(Org.slug == slug))
        if org is None:
            account = ledger.create_account(session)
            org = Org(id=new_id("org"), slug=slug, account_id=account.id)
        org.name = spec.get("name", slug)
        org.budget_limit_micros = spec.get("budget_micros")
        org.allowed_models = spec.get("models")
        limit = spec.get("rate_limit") or {}
        org.rate_limit_requests = limit.get("requests")
        org.rate_limit_window_seconds = limit.get("window_seconds")
        org.managed_by = "git"
        session.add(org)


class Reconciler:
    def __init__(self, rt):
        self.rt = rt

    @property
    def interval(self) -> float:
        with self.rt.db.sessions() as session:
            state = session.get(ConfigState, 1)
        settings = (state.settings if state else None) or {}
        return float(settings.get("reconcile_interval_seconds") or self.rt.settings.default_reconcile_interval_seconds)

    def sync(self) -> dict:
        repo, branch = self.rt.settings.config_repo, self.rt.settings.config_branch
        with self.rt.db.transaction() as session:
            state = session.get(ConfigState, 1) or ConfigState(id=1, status="Unknown")
            session.add(state)
            state.last_attempt_at = utcnow()
            if not repo:
                state.status, state.error = "Unknown", "no CONFIG_REPO is configured"
                return status_json(state)
            try:
                declared = read_head(repo, branch)
                state.target_revision = declared.revision
                if declared.revision != state.revision:
                    apply(session, declared)
                    audit.record(session, audit.SYSTEM, "config.apply", target=f"revision:{declared.revision}")
                state.revision, state.settings = declared.revision, declared.settings
                state.status, state.error, state.drift = "Synced", None, []
                state.last_synced_at = utcnow()
            except (ConfigError, KeyError, TypeError, ValueError) as exc:
                state.error = str(exc)
                state.status = "OutOfSync" if state.revision else "Unknown"
                log.warning("config sync failed: %s", exc)
            return status_json(state)


def status_json(state: ConfigState | None) -> dict:
    if state is None:
        return {"status": "Unknown", "revision": None, "target_revision": None, "last_synced_at": None,
                "drift": [], "error": None}
    return {"status": state.status, "revision": state.revision, "target_revision": state.target_revision,
            "last_synced_at": ledger.as_utc(state.last_synced_at).isoformat() if state.last_synced_at else None,
            "drift": state.drift or [], "error": state.error}
