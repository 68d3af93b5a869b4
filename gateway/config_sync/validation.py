"""Validating one file of the config repository: YAML syntax, duplicate keys, then the schema of its kind.

Every problem becomes a ConfigError that names the file and, when it can be found, the line."""
from __future__ import annotations

import re

import yaml

from gateway.services import ledger

SETTINGS_FILE = "gateway.yaml"
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")
DEFAULT_MAX_TOKENS = 256
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ConfigError(Exception):
    """A commit that cannot be applied; the message names the file (and line when known)."""


class Invalid(Exception):
    """One problem in one file: the key path it is about, so the line can be found."""

    def __init__(self, path: tuple, message: str):
        super().__init__(message)
        self.path = path


# ---- where a problem is in the document ------------------------------------------------------------------------

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


# ---- value checks ----------------------------------------------------------------------------------------------

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


# ---- the three kinds of file -----------------------------------------------------------------------------------

def _circuit_breaker(value, where: tuple) -> dict | None:
    """`circuit_breaker: {failures, window_seconds, cooldown_seconds}` (each optional), in gateway.yaml or on one
    backend of a model (gateway/services/circuit_breakers.py)."""
    if value is None:
        return None
    raw = _mapping(value, where, {"failures", "window_seconds", "cooldown_seconds"})
    checked = {}
    if "failures" in raw:
        checked["failures"] = _int(raw["failures"], where + ("failures",), minimum=1, maximum=1000)
    for key in ("window_seconds", "cooldown_seconds"):
        if key in raw:
            seconds = raw[key]
            if type(seconds) not in (int, float) or not 0.1 <= seconds <= 86400:
                raise Invalid(where + (key,), f"{'.'.join(map(str, where + (key,)))} must be a number of seconds "
                                              f"from 0.1 to 86400, not {seconds!r}")
            checked[key] = seconds
    return checked


def validate_settings(doc) -> dict:
    doc = _mapping(doc, (), {"self_heal", "prune", "reconcile_interval_seconds", "circuit_breaker"})
    settings = {"self_heal": _bool(doc.get("self_heal", False), ("self_heal",)),
                "prune": _bool(doc.get("prune", False), ("prune",))}
    if "reconcile_interval_seconds" in doc:
        interval = doc["reconcile_interval_seconds"]
        if type(interval) not in (int, float) or not 0.1 <= interval <= 86400:
            raise Invalid(("reconcile_interval_seconds",),
                          f"reconcile_interval_seconds must be a number of seconds from 0.1 to 86400, not {interval!r}")
        settings["reconcile_interval_seconds"] = interval
    if doc.get("circuit_breaker") is not None:
        settings["circuit_breaker"] = _circuit_breaker(doc["circuit_breaker"], ("circuit_breaker",))
    return settings


def _allowlist(models) -> list | None:
    if models is not None:
        if not isinstance(models, list):
            raise Invalid(("models",), f"models must be a list of model names, not {models!r}")
        for i, item in enumerate(models):
            if not isinstance(item, str) or not item:
                raise Invalid(("models", i), f"models[{i}] must be a model name, not {item!r}")
    return models


def _rate_limit(value) -> dict | None:
    if value is None:
        return None
    raw = _mapping(value, ("rate_limit",), {"requests", "window_seconds"})
    missing = [k for k in ("requests", "window_seconds") if k not in raw]
    if missing:
        raise Invalid(("rate_limit",), f"rate_limit needs {' and '.join(missing)}")
    return {"requests": _int(raw["requests"], ("rate_limit", "requests"), minimum=1, maximum=10 ** 9),
            "window_seconds": _int(raw["window_seconds"], ("rate_limit", "window_seconds"), minimum=1,
                                   maximum=86400 * 366)}


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
    models = _allowlist(doc.get("models"))
    rate_limit = _rate_limit(doc.get("rate_limit"))
    policy = _mapping(doc.get("sync_policy"), ("sync_policy",), {"self_heal"})
    if "self_heal" in policy:
        _bool(policy["self_heal"], ("sync_policy", "self_heal"))
    return {"name": name, "budget_micros": budget, "models": models, "rate_limit": rate_limit,
            "sync_policy": dict(policy) or None}


def _backend(i: int, raw, names: set[str]) -> dict:
    """backends[i], checked; `names` holds the names of the backends before it."""
    raw = _mapping(raw, ("backends", i), {"name", "url", "timeout_seconds", "circuit_breaker"})
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
    if raw.get("circuit_breaker") is not None:
        backend["circuit_breaker"] = _circuit_breaker(raw["circuit_breaker"], ("backends", i, "circuit_breaker"))
    return backend


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
    names: set[str] = set()
    routed = [_backend(i, raw, names) for i, raw in enumerate(backends)]
    max_tokens = _int(doc.get("default_max_tokens", DEFAULT_MAX_TOKENS), ("default_max_tokens",), minimum=1,
                      maximum=100_000)
    return {"price": prices, "backends": routed, "default_max_tokens": max_tokens}


# ---- one file --------------------------------------------------------------------------------------------------

def _compose(path: str, text: str) -> tuple:
    """(node, document) of a YAML text; ConfigError naming the line of a syntax error."""
    loader = Loader(text)
    try:
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else None)
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


def _validate(path: str, doc) -> tuple[str, str, dict]:
    stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    if path == SETTINGS_FILE:
        return "settings", "gateway", validate_settings(doc)
    if path.count("/") != 1:
        raise Invalid((), "declarations live directly in orgs/ or models/, not in a subfolder")
    if path.startswith("orgs/"):
        return "org", stem, validate_org(stem, doc)
    return "model", stem, validate_model(stem, doc)


def parse_file(path: str, text: str) -> tuple[str, str, dict]:
    """(kind, name, spec) of one file; ConfigError naming the file and the line when it is invalid."""
    node, doc = _compose(path, text)
    duplicate = _duplicate_keys(node)
    if duplicate:
        trail, line = duplicate
        raise ConfigError(f"{path}, line {line}: the key {'.'.join(map(str, trail))!r} appears twice")
    try:
        return _validate(path, doc)
    except Invalid as problem:
        line = _line_of(node, problem.path)
        raise ConfigError(f"{path}{f', line {line}' if line else ''}: {problem}") from None
