"""The reconciler: converge the gateway to the config repository's branch head.

Layout of the repository (see docs/contract.md, Declarative configuration)::

    gateway.yaml          self_heal, prune, reconcile_interval_seconds
    orgs/<slug>.yaml      name, budget_micros, models (allowlist), rate_limit {requests, window_seconds},
                          sync_policy {self_heal}  (a per-org override of the global switch)
    models/<name>.yaml    price {prompt_per_1k_micros, completion_per_1k_micros}, backends [{name, url,
                          timeout_seconds?}] in route order, default_max_tokens

One pass:
1. read the branch head (git CLI; blobs are cached by id, so an unchanged file is never read or parsed twice);
2. validate every file; any error rejects the whole commit (the last good revision stays applied, `error` names
   the file and line);
3. apply the files that changed since the applied revision (an object whose file did not change is not touched,
   so a commit to one org never overwrites drift on another);
4. compare every declared field with the effective value: drift. Self-heal (global, or per org with
   `sync_policy: {self_heal: true}`) restores it and audits `config.drift_corrected`; otherwise it is reported;
5. objects managed from git whose file is gone are pruned when `prune` is on, else kept and reported as drift
   on the field `exists` (declared false, effective true).
"""
from __future__ import annotations

import logging
import re
import subprocess
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml
from sqlalchemy import delete, select

from gateway import audit
from gateway.models import ApiKey, ConfigState, Invitation, Membership, Model, Org, utcnow
from gateway.security import new_id
from gateway.services import ledger

log = logging.getLogger("gateway.config")

SETTINGS_FILE = "gateway.yaml"
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")
DEFAULT_MAX_TOKENS = 256
MAX_ERRORS_SHOWN = 5
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ConfigError(Exception):
    """A commit that cannot be applied; the message names the file (and line when known)."""


class Invalid(Exception):
    """One problem in one file: the key path it is about, so the line can be found."""

    def __init__(self, path: tuple, message: str):
        super().__init__(message)
        self.path = path


# ---- reading the repository ------------------------------------------------------------------------------------

def _git(repo: str, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(["git", "-c", "safe.directory=*", "-C", repo, *args], capture_output=True, text=True,
                          timeout=30, input=stdin)
    if done.returncode != 0:
        raise ConfigError(f"git {' '.join(args)} failed: {done.stderr.strip() or f'exit status {done.returncode}'}")
    return done.stdout


def _tracked(path: str) -> bool:
    """Files the gateway reads; anything else in the repository (README, .keep ...) is ignored."""
    if path == SETTINGS_FILE:
        return True
    return path.startswith(("orgs/", "models/")) and path.endswith((".yaml", ".yml"))


def list_tree(repo: str, revision: str) -> dict[str, str]:
    """path -> blob id of the files the gateway reads at a revision."""
    tree = {}
    for line in _git(repo, "ls-tree", "-r", "--full-tree", revision).splitlines():
        meta, _, path = line.partition("\t")
        parts = meta.split()
        if len(parts) == 3 and parts[1] == "blob" and _tracked(path):
            tree[path] = parts[2]
    return tree


def read_blobs(repo: str, blob_ids: list[str]) -> dict[str, str]:
    """Many blobs in one `git cat-file --batch` call."""
    if not blob_ids:
        return {}
    done = subprocess.run(["git", "-c", "safe.directory=*", "-C", repo, "cat-file", "--batch"],
                          input="\n".join(blob_ids).encode() + b"\n", capture_output=True, timeout=30)
    if done.returncode != 0:
        raise ConfigError(f"git cat-file failed: {done.stderr.decode(errors='replace').strip()}")
    out, pos, texts = done.stdout, 0, {}
    for blob in blob_ids:
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        if len(header) < 3 or header[1] != b"blob":
            raise ConfigError(f"git cat-file: cannot read blob {blob}: {out[pos:end].decode(errors='replace')}")
        size = int(header[2])
        texts[blob] = out[end + 1:end + 1 + size].decode("utf-8", errors="replace")
        pos = end + 1 + size + 1
    return texts


# ---- validation ------------------------------------------------------------------------------------------------

def _line_of(node, path: tuple) -> int | None:
    """The 1-based line of the deepest node on `path` (mapping keys and list indexes) in a composed document."""
    line = node.start_mark.line + 1 if node is not None else None
    for step in path:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if getattr(key, "value", None) == step:
                    line, node = key.start_mark.line + 1, value
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _duplicate_keys(node, trail: tuple = ()) -> tuple | None:
    """The path of the first key that appears twice in one mapping (YAML would silently keep the last)."""
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key, value in node.value:
            name = getattr(key, "value", None)
            if name in seen:
                return trail + (name,), key.start_mark.line + 1
            seen.add(name)
            found = _duplicate_keys(value, trail + (name,))
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate_keys(item, trail + (i,))
            if found:
                return found
    return None


def _mapping(value, where: tuple, allowed: set[str]) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(where, f"{'.'.join(map(str, where)) or 'the file'} must be a mapping")
    for key in value:
        if key not in allowed:
            raise Invalid(where + (key,), f"unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")
    return value


def _int(value, where: tuple, *, minimum: int, maximum: int = ledger.MAX_MICROS, what: str = "a whole number",
         optional: bool = False):
    if value is None and optional:
        return None
    if type(value) is not int or not minimum <= value <= maximum:
        raise Invalid(where, f"{where[-1]} must be {what} from {minimum} to {maximum}, not {value!r}")
    return value


def _bool(value, where: tuple):
    if type(value) is not bool:
        raise Invalid(where, f"{where[-1]} must be true or false, not {value!r}")
    return value


def validate_settings(doc) -> dict:
    doc = _mapping(doc, (), {"self_heal", "prune", "reconcile_interval_seconds"})
    settings = {"self_heal": _bool(doc.get("self_heal", False), ("self_heal",)),
                "prune": _bool(doc.get("prune", False), ("prune",))}
    if "reconcile_interval_seconds" in doc:
        interval = doc["reconcile_interval_seconds"]
        if type(interval) not in (int, float) or not 0.1 <= interval <= 86400:
            raise Invalid(("reconcile_interval_seconds",),
                          f"reconcile_interval_seconds must be a number of seconds from 0.1 to 86400, not {interval!r}")
        settings["reconcile_interval_seconds"] = interval
    return settings


def validate_org(slug: str, doc) -> dict:
    if not SLUG.match(slug):
        raise Invalid((), f"the file name must be the org's slug (2-63 lowercase letters, digits or dashes), "
                          f"not {slug!r}")
    doc = _mapping(doc, (), {"name", "budget_micros", "models", "rate_limit", "sync_policy"})
    name = doc.get("name", slug)
    if not isinstance(name, str) or not 1 <= len(name) <= 200:
        raise Invalid(("name",), f"name must be text of 1 to 200 characters, not {name!r}")
    budget = _int(doc.get("budget_micros"), ("budget_micros",), minimum=0, optional=True,
                  what="a whole number of micro-USD")
    models = doc.get("models")
    if models is not None:
        if not isinstance(models, list):
            raise Invalid(("models",), f"models must be a list of model names, not {models!r}")
        for i, item in enumerate(models):
            if not isinstance(item, str) or not item:
                raise Invalid(("models", i), f"models[{i}] must be a model name, not {item!r}")
    rate_limit = None
    if doc.get("rate_limit") is not None:
        raw = _mapping(doc["rate_limit"], ("rate_limit",), {"requests", "window_seconds"})
        missing = [k for k in ("requests", "window_seconds") if k not in raw]
        if missing:
            raise Invalid(("rate_limit",), f"rate_limit needs {' and '.join(missing)}")
        rate_limit = {"requests": _int(raw["requests"], ("rate_limit", "requests"), minimum=1, maximum=10 ** 9),
                      "window_seconds": _int(raw["window_seconds"], ("rate_limit", "window_seconds"), minimum=1,
                                             maximum=86400 * 366)}
    policy = _mapping(doc.get("sync_policy"), ("sync_policy",), {"self_heal"})
    if "self_heal" in policy:
        _bool(policy["self_heal"], ("sync_policy", "self_heal"))
    return {"name": name, "budget_micros": budget, "models": models, "rate_limit": rate_limit,
            "sync_policy": dict(policy) or None}


def validate_model(name: str, doc) -> dict:
    if not MODEL_NAME.match(name):
        raise Invalid((), f"the file name must be the model's name (letters, digits, '.', '_', ':' or '-'), "
                          f"not {name!r}")
    doc = _mapping(doc, (), {"price", "backends", "default_max_tokens"})
    for key in ("price", "backends"):
        if key not in doc:
            raise Invalid((), f"{key} is required")
    price = _mapping(doc["price"], ("price",), {"prompt_per_1k_micros", "completion_per_1k_micros"})
    prices = {}
    for key in ("prompt_per_1k_micros", "completion_per_1k_micros"):
        if key not in price:
            raise Invalid(("price",), f"price.{key} is required")
        prices[key] = _int(price[key], ("price", key), minimum=0, what="a whole number of micro-USD")
    backends = doc["backends"]
    if not isinstance(backends, list) or not backends:
        raise Invalid(("backends",), "backends must be a non-empty list, in route order")
    routed, names = [], set()
    for i, raw in enumerate(backends):
        raw = _mapping(raw, ("backends", i), {"name", "url", "timeout_seconds"})
        url = raw.get("url")
        if not isinstance(url, str) or not URL.match(url):
            raise Invalid(("backends", i, "url") if "url" in raw else ("backends", i),
                          f"backends[{i}].url must be an http(s) URL, not {url!r}")
        backend_name = raw.get("name", url)
        if not isinstance(backend_name, str) or not backend_name:
            raise Invalid(("backends", i, "name"), f"backends[{i}].name must be text, not {backend_name!r}")
        if backend_name in names:
            raise Invalid(("backends", i, "name"), f"backends[{i}].name {backend_name!r} is used twice")
        names.add(backend_name)
        backend = {"name": backend_name, "url": url}
        if raw.get("timeout_seconds") is not None:
            timeout = raw["timeout_seconds"]
            if type(timeout) not in (int, float) or not 0 < timeout <= 600:
                raise Invalid(("backends", i, "timeout_seconds"),
                              f"backends[{i}].timeout_seconds must be a number of seconds from 0 to 600, "
                              f"not {timeout!r}")
            backend["timeout_seconds"] = timeout
        routed.append(backend)
    max_tokens = _int(doc.get("default_max_tokens", DEFAULT_MAX_TOKENS), ("default_max_tokens",), minimum=1,
                      maximum=100_000)
    return {"price": prices, "backends": routed, "default_max_tokens": max_tokens}


def parse_file(path: str, text: str) -> tuple[str, str, dict]:
    """(kind, name, spec) of one file; ConfigError naming the file and the line when it is invalid."""
    loader = Loader(text)
    try:
        node = loader.get_single_node()
        doc = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else path
        started = (f" ({exc.context} that starts on line {exc.context_mark.line + 1})"
                   if exc.context and exc.context_mark and exc.problem_mark else "")
        raise ConfigError(f"{where}: not valid YAML: {exc.problem or exc}{started}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    duplicate = _duplicate_keys(node)
    if duplicate:
        trail, line = duplicate
        raise ConfigError(f"{path}, line {line}: the key {'.'.join(map(str, trail))!r} appears twice")
    stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    try:
        if path == SETTINGS_FILE:
            return "settings", "gateway", validate_settings(doc)
        if path.count("/") != 1:
            raise Invalid((), "declarations live directly in orgs/ or models/, not in a subfolder")
        if path.startswith("orgs/"):
            return "org", stem, validate_org(stem, doc)
        return "model", stem, validate_model(stem, doc)
    except Invalid as problem:
        line = _line_of(node, problem.path)
        raise ConfigError(f"{path}{f', line {line}' if line else ''}: {problem}") from None


@dataclass
class Declared:
    revision: str
    tree: dict[str, str]  # path -> blob id
    settings: dict = field(default_factory=dict)
    orgs: dict[str, dict] = field(default_factory=dict)  # slug -> spec
    models: dict[str, dict] = field(default_factory=dict)  # name -> spec
    paths: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, name) -> path


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


class _Lru(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def put(self, key, value):
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)
        return value

    def take(self, key):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return None


class RepoReader:
    """Reads revisions; parsed files are cached by (path, blob id), whole revisions by sha."""

    def __init__(self, repo: str):
        self.repo = repo
        self.files = _Lru(20_000)  # (path, blob) -> (kind, name, spec) or ConfigError
        self.revisions = _Lru(16)  # sha -> Declared or ConfigError
        self.git_dir: Path | None = None

    def head(self, branch: str) -> str:
        """The branch's commit. Read straight from the ref file when it is a plain one (git replaces ref files
        atomically), which saves a git process on every pass; otherwise ask git."""
        if self.git_dir is None:
            self.git_dir = Path(_git(self.repo, "rev-parse", "--absolute-git-dir").strip())
        try:
            sha = (self.git_dir / "refs" / "heads" / branch).read_text().strip()
            if len(sha) in (40, 64) and all(c in "0123456789abcdef" for c in sha):
                return sha
        except OSError:
            pass  # a packed ref, or no such branch: git knows
        return _git(self.repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}").strip()

    def read(self, revision: str) -> Declared:
        cached = self.revisions.take(revision)
        if isinstance(cached, ConfigError):
            raise cached
        if cached is not None:
            return cached
        try:
            declared = self._read(revision)
        except ConfigError as exc:
            self.revisions.put(revision, exc)
            raise
        return self.revisions.put(revision, declared)

    def _read(self, revision: str) -> Declared:
        tree = list_tree(self.repo, revision)
        missing = sorted({blob for path, blob in tree.items() if (path, blob) not in self.files})
        texts = read_blobs(self.repo, missing)
        declared, errors = Declared(revision, tree), []
        for path in sorted(tree):
            key = (path, tree[path])
            parsed = self.files.take(key)
            if parsed is None:
                try:
                    parsed = parse_file(path, texts[tree[path]])
                except ConfigError as exc:
                    parsed = exc
                self.files.put(key, parsed)
            if isinstance(parsed, ConfigError):
                errors.append(str(parsed))
                continue
            kind, name, spec = parsed
            if kind == "settings":
                declared.settings = spec
                continue
            if (kind, name) in declared.paths:
                errors.append(f"{path}: declares the {kind} {name!r} again (also in {declared.paths[(kind, name)]})")
                continue
            declared.paths[(kind, name)] = path
            (declared.orgs if kind == "org" else declared.models)[name] = spec
        if errors:
            more = f"; and {len(errors) - MAX_ERRORS_SHOWN} more" if len(errors) > MAX_ERRORS_SHOWN else ""
            raise ConfigError("; ".join(errors[:MAX_ERRORS_SHOWN]) + more)
        return declared


# ---- declared vs effective -------------------------------------------------------------------------------------

def _rate_limit(org: Org):
    if org.rate_limit_requests is None or org.rate_limit_window_seconds is None:
        return None
    return {"requests": org.rate_limit_requests, "window_seconds": org.rate_limit_window_seconds}


def _set_rate_limit(org: Org, value) -> None:
    org.rate_limit_requests = value["requests"] if value else None
    org.rate_limit_window_seconds = value["window_seconds"] if value else None


def _same_list(a, b) -> bool:
    return a == b or (isinstance(a, list) and isinstance(b, list) and sorted(map(str, a)) == sorted(map(str, b)))


# field -> (read effective, write declared, read declared from spec, compare)
ORG_FIELDS: dict[str, tuple[Callable, Callable, Callable, Callable]] = {
    "name": (lambda o: o.name, lambda o, v: setattr(o, "name", v), lambda s: s["name"], lambda a, b: a == b),
    "budget_micros": (lambda o: o.budget_limit_micros, lambda o, v: setattr(o, "budget_limit_micros", v),
                      lambda s: s["budget_micros"], lambda a, b: a == b),
    "models": (lambda o: o.allowed_models, lambda o, v: setattr(o, "allowed_models", v), lambda s: s["models"],
               _same_list),
    "rate_limit": (_rate_limit, _set_rate_limit, lambda s: s["rate_limit"], lambda a, b: a == b),
}

MODEL_FIELDS: dict[str, tuple[Callable, Callable, Callable, Callable]] = {
    "price.prompt_per_1k_micros": (lambda m: m.prompt_price_per_1k_micros,
                                   lambda m, v: setattr(m, "prompt_price_per_1k_micros", v),
                                   lambda s: s["price"]["prompt_per_1k_micros"], lambda a, b: a == b),
    "price.completion_per_1k_micros": (lambda m: m.completion_price_per_1k_micros,
                                       lambda m, v: setattr(m, "completion_price_per_1k_micros", v),
                                       lambda s: s["price"]["completion_per_1k_micros"], lambda a, b: a == b),
    "backends": (lambda m: m.backends, lambda m, v: setattr(m, "backends", list(v)), lambda s: s["backends"],
                 lambda a, b: a == b),
    "default_max_tokens": (lambda m: m.default_max_tokens, lambda m, v: setattr(m, "default_max_tokens", v),
                           lambda s: s["default_max_tokens"], lambda a, b: a == b),
}


ORG_COLUMNS = (Org.id, Org.slug, Org.name, Org.budget_limit_micros, Org.allowed_models, Org.rate_limit_requests,
               Org.rate_limit_window_seconds, Org.managed_by)
MODEL_COLUMNS = (Model.name, Model.prompt_price_per_1k_micros, Model.completion_price_per_1k_micros, Model.backends,
                 Model.default_max_tokens, Model.managed_by)


def _rows(session, columns: tuple, key, declared: dict) -> dict:
    """The effective values of every object managed from git, and of declared ones not (yet) marked so."""
    rows = {getattr(r, key.key): r for r in session.execute(select(*columns).where(columns[-1] == "git"))}
    missing = [name for name in declared if name not in rows]
    for start in range(0, len(missing), 500):
        chunk = missing[start:start + 500]
        rows.update({getattr(r, key.key): r for r in session.execute(select(*columns).where(key.in_(chunk)))})
    return rows


def _canonical(value):
    return sorted(map(str, value)) if isinstance(value, list) and all(isinstance(v, str) for v in value) else value


def _fingerprint(fields: dict, obj, *, reader: int) -> tuple:
    """The declared fields' values, comparable in one go (allowlists in any order)."""
    return tuple(repr(_canonical(accessors[reader](obj))) for accessors in fields.values())


def _declared_fingerprint(fields: dict, spec: dict) -> tuple:
    cached = spec.get("_fingerprint")
    if cached is None:
        cached = spec["_fingerprint"] = _fingerprint(fields, spec, reader=2)
    return cached


def _apply_org(session, org: Org | None, slug: str, spec: dict) -> Org:
    if org is None:
        account = ledger.create_account(session)
        org = Org(id=new_id("org"), slug=slug, account_id=account.id, name=spec["name"])
        session.add(org)
    for _read, write, declared, _same in ORG_FIELDS.values():
        write(org, declared(spec))
    org.sync_policy = spec["sync_policy"]
    org.managed_by = "git"
    return org


def _apply_model(session, model: Model | None, name: str, spec: dict) -> Model:
    if model is None:
        model = Model(name=name)
        session.add(model)
    for _read, write, declared, _same in MODEL_FIELDS.values():
        write(model, declared(spec))
    model.managed_by = "git"
    return model


def _prune_org(session, org: Org) -> None:
    """Remove an org and what only makes sense inside it; its billing account and ledger stay (money history)."""
    session.execute(delete(ApiKey).where(ApiKey.org_id == org.id))
    session.execute(delete(Invitation).where(Invitation.org_id == org.id))
    session.execute(delete(Membership).where(Membership.org_id == org.id))
    session.delete(org)


def _drift(kind: str, name: str, field_name: str, declared: Any, effective: Any) -> dict:
    return {"kind": kind, "name": name, "field": field_name, "declared": declared, "effective": effective}


# ---- the reconciler --------------------------------------------------------------------------------------------

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

    def _read_git(self, reader: RepoReader, branch: str, applied: str | None) -> "Pass":
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
            try:
                work.in_force = reader.read(applied)
            except ConfigError:
                work.in_force = None
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
            state = session.get(ConfigState, 1, with_for_update=True)
            if state is None:
                state = ConfigState(id=1, status="Unknown")
                session.add(state)
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
            target, declared, error = work.target, work.declared, work.error
            state.target_revision = target
            if declared is not None and target != state.revision:
                try:
                    with session.begin_nested():
                        self._apply(session, declared, work.before, state.revision, actor)
                except Exception as exc:  # the database refused the change: nothing of it stays
                    log.exception("applying revision %s failed", target)
                    error = f"applying revision {target[:12]} failed: {type(exc).__name__}: {exc}"
                    declared, work.in_force = None, self._applied_declared(reader, state.revision)
                else:
                    state.revision = target
            if declared is None:
                if target != self._failed_target:
                    self._failed_target = target
                    audit.record(session, actor, "config.apply", target=f"revision:{target}", outcome="failed",
                                 reason=error, details={"revision": target, "kept_revision": state.revision})
                    log.warning("config revision %s rejected: %s", target[:12], error)
                declared = work.in_force
            else:
                self._failed_target = None
            drift = self._converge(session, declared) if declared is not None else []
            if declared is not None:
                state.settings = declared.settings
                self._settings = declared.settings
            state.error, state.drift = error, drift
            if state.revision is None:
                state.status = "Unknown"
            elif error or drift or state.revision != target:
                state.status = "OutOfSync"
            else:
                state.status = "Synced"
            if error is None:
                state.last_synced_at = utcnow()
            result = status_json(state)
            revision = state.revision
        self._revision, self._revision_loaded = revision, True  # only once the transaction has committed
        return result

    @staticmethod
    def _applied_declared(reader: RepoReader, revision: str | None) -> Declared | None:
        if revision is None:
            return None
        try:
            return reader.read(revision)
        except ConfigError:
            return None

    def _apply(self, session, declared: Declared, before: dict[str, str] | None, previous: str | None,
               actor: audit.Actor) -> None:
        changed = sorted(p for p, blob in declared.tree.items() if before is None or before.get(p) != blob)
        removed = sorted(p for p in (before or {}) if p not in declared.tree)
        changed_orgs = {name for (kind, name), path in declared.paths.items() if kind == "org" and path in changed}
        changed_models = {name for (kind, name), path in declared.paths.items()
                          if kind == "model" and path in changed}
        if changed_models:
            existing = {m.name: m for m in session.scalars(select(Model).where(Model.name.in_(changed_models)))}
            for name in sorted(changed_models):
                _apply_model(session, existing.get(name), name, declared.models[name])
        if changed_orgs:
            existing = {o.slug: o for o in session.scalars(select(Org).where(Org.slug.in_(changed_orgs)))}
            for slug in sorted(changed_orgs):
                _apply_org(session, existing.get(slug), slug, declared.orgs[slug])
        session.flush()
        audit.record(session, actor, "config.apply", target=f"revision:{declared.revision}",
                     details={"revision": declared.revision, "previous_revision": previous,
                              "changed": changed[:100], "removed": removed[:100],
                              "orgs": sorted(changed_orgs)[:100], "models": sorted(changed_models)[:100],
                              "settings": declared.settings})
        log.info("applied config revision %s (%d changed, %d removed files)", declared.revision[:12], len(changed),
                 len(removed))

    def _converge(self, session, declared: Declared) -> list[dict]:
        """Compare declared and effective state; heal or prune where the policy says so; return what is left.

        Corrections and prunes are the gateway's own doing (actor system), whoever triggered the pass."""
        actor = audit.SYSTEM
        heal_all = bool(declared.settings.get("self_heal"))
        prune = bool(declared.settings.get("prune"))
        drift: list[dict] = []

        # Plain rows, not ORM objects: a pass compares every declared object, and rows are several times cheaper.
        models = _rows(session, MODEL_COLUMNS, Model.name, declared.models)
        for name in sorted(declared.models):
            spec = declared.models[name]
            drift += self._compare(session, "model", name, models.get(name), spec, MODEL_FIELDS, heal_all, actor,
                                   load=lambda n=name: session.get(Model, n),
                                   create=lambda n=name, s=spec: _apply_model(session, None, n, s), org=None)
        for name in sorted(set(models) - set(declared.models)):
            if models[name].managed_by != "git":
                continue
            if prune:
                session.delete(session.get(Model, name))
                audit.record(session, actor, "config.prune", target=f"model:{name}",
                             details={"kind": "model", "name": name, "revision": declared.revision})
            else:
                drift.append(_drift("model", name, "exists", False, True))

        orgs = _rows(session, ORG_COLUMNS, Org.slug, declared.orgs)
        for slug in sorted(declared.orgs):
            spec = declared.orgs[slug]
            policy = spec.get("sync_policy") or {}
            heal = bool(policy.get("self_heal", heal_all))
            row = orgs.get(slug)
            drift += self._compare(session, "org", slug, row, spec, ORG_FIELDS, heal, actor,
                                   load=lambda r=row: session.get(Org, r.id),
                                   create=lambda n=slug, s=spec: _apply_org(session, None, n, s), org=slug)
        for slug in sorted(set(orgs) - set(declared.orgs)):
            if orgs[slug].managed_by != "git":
                continue
            if prune:
                try:
                    with session.begin_nested():
                        _prune_org(session, session.get(Org, orgs[slug].id))
                except Exception as exc:  # something else still refers to the org: keep it, say why
                    log.warning("cannot prune org %s: %s", slug, exc)
                    drift.append({**_drift("org", slug, "exists", False, True),
                                  "reason": f"prune failed: {type(exc).__name__}"})
                    continue
                audit.record(session, actor, "config.prune", target=f"org:{slug}", org=slug,
                             details={"kind": "org", "name": slug, "revision": declared.revision})
            else:
                drift.append(_drift("org", slug, "exists", False, True))
        return drift

    @staticmethod
    def _compare(session, kind: str, name: str, row, spec: dict, fields: dict, heal: bool, actor: audit.Actor, *,
                 load: Callable, create: Callable, org: str | None) -> list[dict]:
        """Drift of one declared object (`row` holds its effective values, None when it does not exist)."""
        found = []
        if row is None:
            found.append(_drift(kind, name, "exists", True, False))
        elif row.managed_by == "git" and _fingerprint(fields, row, reader=0) == _declared_fingerprint(fields, spec):
            return found  # the common case, decided in one comparison
        else:
            for field_name, (read, _write, declared, same) in fields.items():
                if not same(read(row), declared(spec)):
                    found.append(_drift(kind, name, field_name, declared(spec), read(row)))
            if row.managed_by != "git":
                load().managed_by = "git"
        if not found or not heal:
            return found
        if row is None:
            create()
        else:
            obj = load()
            for item in found:
                fields[item["field"]][1](obj, item["declared"])
        for item in found:
            audit.record(session, actor, "config.drift_corrected", target=f"{kind}:{name}", org=org,
                         details=dict(item))
            log.info("corrected drift on %s %s: %s %r -> %r", kind, name, item["field"], item["effective"],
                     item["declared"])
        return []


def status_json(state: ConfigState | None) -> dict:
    if state is None:
        return {"status": "Unknown", "revision": None, "target_revision": None, "last_synced_at": None,
                "drift": [], "error": None, "last_attempt_at": None, "settings": None}
    stamp = lambda value: ledger.as_utc(value).isoformat() if value else None  # noqa: E731
    return {"status": state.status, "revision": state.revision, "target_revision": state.target_revision,
            "last_synced_at": stamp(state.last_synced_at), "drift": state.drift or [], "error": state.error,
            "last_attempt_at": stamp(state.last_attempt_at), "settings": state.settings}
