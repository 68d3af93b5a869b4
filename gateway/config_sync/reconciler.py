"""The reconcile loop: one pass reads git, then, in one database transaction, applies, converges and records."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from gateway import audit
from gateway.config_sync.convergence import apply_changes, converge
from gateway.config_sync.repository import Declared, RepoReader, list_tree
from gateway.config_sync.validation import ConfigError
from gateway.models import ConfigState, utcnow
from gateway.services import ledger

log = logging.getLogger("gateway.config")


@dataclass
class Pass:
    """What one pass learnt from git before touching the database."""
    applied: str | None
    target: str | None = None
    declared: Declared | None = None  # the target's declarations, when they validate
    error: str | None = None  # why they do not
    before: dict[str, str] | None = None  # the applied revision's tree, to find the changed files
    in_force: Declared | None = None  # the applied revision's declarations, while the target is broken
    fatal: str | None = None  # git itself failed


class Reconciler:
    def __init__(self, rt):
        self.rt = rt
        self._lock = threading.Lock()
        self._reader: RepoReader | None = None
        self._settings: dict | None = None
        self._failed_target: str | None = None  # the broken head already audited
        self._revision: str | None = None  # the applied revision, as of this process's last pass
        self._revision_loaded = False
        self.last_pass_ms: float | None = None  # how long this process's last pass took

    @property
    def applied_settings(self) -> dict:
        """The gateway.yaml this process applied last ({} before its first pass)."""
        return self._settings or {}

    @property
    def interval(self) -> float:
        settings = self._settings
        if settings is None:
            with self.rt.db.sessions() as session:
                state = session.get(ConfigState, 1)
            settings = (state.settings if state else None) or {}
        return float(settings.get("reconcile_interval_seconds") or self.rt.settings.default_reconcile_interval_seconds)

    def _repo(self) -> RepoReader:
        if self._reader is None or self._reader.repo != self.rt.settings.config_repo:
            self._reader = RepoReader(self.rt.settings.config_repo)
        return self._reader

    def sync(self, actor: audit.Actor = audit.SYSTEM) -> dict:
        """One pass; passes never overlap (the interval loop and POST /admin/config/sync share a lock)."""
        with self._lock:
            started = time.perf_counter()
            result = self._pass(actor)
            self.last_pass_ms = round((time.perf_counter() - started) * 1000, 1)
        return {**result, "last_pass_ms": self.last_pass_ms}

    def _known_revision(self) -> str | None:
        if not self._revision_loaded:
            with self.rt.db.sessions() as session:
                state = session.get(ConfigState, 1)
                self._revision = state.revision if state else None
            self._revision_loaded = True
        return self._revision

    def _read_git(self, reader: RepoReader, branch: str, applied: str | None) -> Pass:
        """Everything that needs git, done before the database transaction opens (SQLite has one writer)."""
        work = Pass(applied=applied)
        try:
            work.target = reader.head(branch)
        except ConfigError as exc:
            work.fatal = f"cannot read branch {branch!r} of the config repository: {exc}"
            return work
        try:
            work.declared = reader.read(work.target)
        except ConfigError as exc:
            work.error = str(exc)
        if work.declared is not None and work.target != applied:
            work.before = self._tree(reader, applied)
        elif work.declared is None and applied is not None:
            work.in_force = _declared_or_none(reader, applied)
        return work

    @staticmethod
    def _tree(reader: RepoReader, revision: str | None) -> dict[str, str] | None:
        if revision is None:
            return None
        try:
            return reader.read(revision).tree
        except ConfigError:
            try:
                return list_tree(reader.repo, revision)
            except ConfigError:
                return None  # the old revision is gone (force-push): everything counts as changed

    def _pass(self, actor: audit.Actor) -> dict:
        repo, branch = self.rt.settings.config_repo, self.rt.settings.config_branch
        reader = self._repo() if repo else None
        work = self._read_git(reader, branch, self._known_revision()) if repo else None
        with self.rt.db.transaction() as session:
            state = _locked_state(session)
            state.last_attempt_at = utcnow()
            if not repo:
                state.status, state.error = "Unknown", "no CONFIG_REPO is configured"
                return status_json(state)
            if work.fatal:
                state.status, state.error = "Unknown", work.fatal
                log.warning("config sync failed: %s", work.fatal)
                return status_json(state)
            if state.revision != work.applied:  # another gateway instance moved on meanwhile: read again
                work = self._read_git(reader, branch, state.revision)
            declared, error = self._apply_target(session, state, work, reader, actor)
            self._settle(session, state, declared, error)
            result, revision = status_json(state), state.revision
        self._revision, self._revision_loaded = revision, True  # only once the transaction has committed
        return result

    def _apply_target(self, session, state: ConfigState, work: Pass, reader: RepoReader,
                      actor: audit.Actor) -> tuple[Declared | None, str | None]:
        """Apply the target revision if it validates and is new; (the declarations in force, why not the target)."""
        target, declared, error = work.target, work.declared, work.error
        state.target_revision = target
        if declared is not None and target != state.revision:
            try:
                with session.begin_nested():
                    apply_changes(session, declared, work.before, state.revision, actor)
            except Exception as exc:  # the database refused the change: nothing of it stays
                log.exception("applying revision %s failed", target)
                error = f"applying revision {target[:12]} failed: {type(exc).__name__}: {exc}"
                declared, work.in_force = None, _declared_or_none(reader, state.revision)
            else:
                state.revision = target
        if declared is not None:
            self._failed_target = None
            return declared, error
        if target != self._failed_target:  # a broken head is audited once, not on every pass
            self._failed_target = target
            audit.record(session, actor, "config.apply", target=f"revision:{target}", outcome="failed",
                         reason=error, details={"revision": target, "kept_revision": state.revision})
            log.warning("config revision %s rejected: %s", target[:12], error)
        return work.in_force, error

    def _settle(self, session, state: ConfigState, declared: Declared | None, error: str | None) -> None:
        """Converge to the declarations in force and record the pass's outcome on the state row."""
        drift = converge(session, declared) if declared is not None else []
        if declared is not None:
            state.settings = declared.settings
            self._settings = declared.settings
        state.error, state.drift = error, drift
        if state.revision is None:
            state.status = "Unknown"
        elif error or drift or state.revision != state.target_revision:
            state.status = "OutOfSync"
        else:
            state.status = "Synced"
        if error is None:
            state.last_synced_at = utcnow()


def _locked_state(session) -> ConfigState:
    state = session.get(ConfigState, 1, with_for_update=True)
    if state is None:
        state = ConfigState(id=1, status="Unknown")
        session.add(state)
    return state


def _declared_or_none(reader: RepoReader, revision: str | None) -> Declared | None:
    if revision is None:
        return None
    try:
        return reader.read(revision)
    except ConfigError:
        return None


def status_json(state: ConfigState | None) -> dict:
    if state is None:
        return {"status": "Unknown", "revision": None, "target_revision": None, "last_synced_at": None,
                "drift": [], "error": None, "last_attempt_at": None, "settings": None}
    stamp = lambda value: ledger.as_utc(value).isoformat() if value else None  # noqa: E731
    return {"status": state.status, "revision": state.revision, "target_revision": state.target_revision,
            "last_synced_at": stamp(state.last_synced_at), "drift": state.drift or [], "error": state.error,
            "last_attempt_at": stamp(state.last_attempt_at), "settings": state.settings}
