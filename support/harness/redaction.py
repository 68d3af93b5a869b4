"""Masking secrets in everything the suite writes: evidence, logs, failure messages.

A masked value keeps a short fingerprint, so two different secrets can still be told apart in a report:
`«masked:jwt#3f2a1c»`.
"""
from __future__ import annotations

import hashlib
import json
import re
from urllib.parse import urlsplit, urlunsplit

SECRET_HEADERS = {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key",
                  "x-identity-anchor-secret"}
# Field names whose values are secrets: access_token, refresh_token, token, client_secret, password, api_key, key...
# (not token_type or max_tokens, which are not).
SECRET_FIELDS = re.compile(r"(password|secret|(^|_)token$|api_?key|^key$|authorization|credential)", re.I)
PATTERNS = [
    ("private-key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)",
                               re.S)),
    ("jwt", re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")),
    ("api-key", re.compile(r"tg_[A-Za-z0-9_-]{16,}")),
    ("invitation", re.compile(r"inv_[A-Za-z0-9_-]{20,}")),
]
_known_secrets: dict[str, str] = {}
_registered: list[str] = []  # the same values, in the order they were registered
# One pattern for the first `count` registered values: (count, pattern). A run registers a password per person, so
# rebuilding on every registration cost O(n²) compiles; the values registered since are looked for with `in` and
# the pattern is rebuilt only when one of them is in the text at hand or there are many of them.
_known_pattern: list[tuple[int, re.Pattern | None]] = [(0, None)]
_PENDING_AT_MOST = 32
SHORTEST_SECRET = 6  # a registered value is at least this long, and so is any text the PATTERNS match
_SHORT_TEXT, _SHORT_KEPT = 200, 8192
_short_masked: dict[str, tuple[int, int, str]] = {}  # text -> (values registered, kind changes, masked) when masked
_kinds_changed = [0]


def fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:6]


def marker(kind: str, value: str) -> str:
    return f"«masked:{kind}#{fingerprint(value)}»"


def register_secret(value: str | None, kind: str = "secret") -> None:
    """Mask this exact value wherever it appears (e.g. HS256 secrets read from the keys folder, passwords)."""
    if value and len(value) >= SHORTEST_SECRET and _known_secrets.get(value) != kind:
        if value in _known_secrets:
            _kinds_changed[0] += 1  # its marker changes: what was masked before is masked again
        else:
            _registered.append(value)
        _known_secrets[value] = kind


class MaskedText(str):
    """Text the suite has just masked (an exchange's evidence): a later masking pass, such as the report's file
    logger's, passes it through instead of masking it twice."""


def mask_text(text: str) -> str:
    if not text or len(text) < SHORTEST_SECRET or type(text) is MaskedText:
        return text
    if len(text) > _SHORT_TEXT:
        return _masked(text)
    # Short texts (header values, fields of a body, paths) come again and again: each is masked once, and again only
    # when a secret registered since is in it or a secret's kind changed.
    known, changed = len(_registered), _kinds_changed[0]
    seen = _short_masked.get(text)
    if seen is not None and seen[1] == changed and (
            seen[0] == known or not any(value in text for value in _registered[seen[0]:known])):
        return seen[2]
    masked = _masked(text)
    if len(_short_masked) >= _SHORT_KEPT:
        _short_masked.clear()
    _short_masked[text] = (known, changed, masked)
    return masked


def _masked(text: str) -> str:
    if _registered:
        count, pattern = _known_pattern[0]  # (one read: other threads may rebuild it)
        pending = _registered[count:]
        if pending and (len(pending) > max(_PENDING_AT_MOST, count // 8) or any(v in text for v in pending)):
            count = len(_registered)
            pattern = re.compile(_alternatives(_registered[:count]))
            _known_pattern[0] = (count, pattern)
        if pattern is not None:
            text = pattern.sub(lambda m: marker(_known_secrets.get(m.group(0), "secret"), m.group(0)), text)
    for kind, pattern in PATTERNS:
        text = pattern.sub(lambda m, k=kind: marker(k, m.group(0)), text)
    return text


def _alternatives(values: list[str]) -> str:
    """A regular expression matching any of the values, the longest where several start at one place (so a secret
    that contains another is masked whole). Written as a trie, since Python's re tries a flat alternation's
    branches one by one at every position of the text: with a thousand values that took milliseconds a call."""
    trie: dict = {}
    for value in values:
        node = trie
        for char in value:
            node = node.setdefault(char, {})
        node[""] = {}  # a value ends here

    def pattern(node: dict) -> str:
        chain = []
        while len(node) == 1 and "" not in node:  # one way on: no group needed
            (char, node), = node.items()
            chain.append(re.escape(char))
        branches = [re.escape(char) + pattern(child) for char, child in sorted(node.items()) if char]
        rest = branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})" if branches else ""
        if "" in node and rest:
            rest = f"(?:{rest})?"  # greedy: the longer value first
        return "".join(chain) + rest

    return pattern(trie)


def mask_value(key: str, value):
    if isinstance(value, str) and SECRET_FIELDS.search(key) and value:
        return marker("value", value)
    return mask_data(value)


def mask_data(data):
    """Mask a parsed JSON document: secret-named fields entirely, and secret-looking strings anywhere."""
    if isinstance(data, dict):
        return {k: mask_value(str(k), v) for k, v in data.items()}
    if isinstance(data, list):
        return [mask_data(v) for v in data]
    if isinstance(data, str):
        return mask_text(data)
    return data


def mask_strings(data):
    """Mask secret-looking text in every string of a document, keeping its shape and field names (for report
    files whose fields are not secrets by name: results, containers, parameters)."""
    if isinstance(data, dict):
        return {k: mask_strings(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [mask_strings(v) for v in data]
    if isinstance(data, str):
        return mask_text(data)
    return data


def mask_exception(exc: BaseException) -> BaseException:
    """The exception with secrets masked in its message (and in the exceptions chained to it).

    Masks in place when the message comes from `args` (AssertionError and most others), so type and traceback
    stay; otherwise returns a RuntimeError (AssertionError for assertions) carrying the masked text instead."""
    seen = set()
    chained = exc.__cause__ or exc.__context__
    while chained is not None and id(chained) not in seen:
        seen.add(id(chained))
        _mask_args(chained)
        chained = chained.__cause__ or chained.__context__
    if _mask_args(exc):
        return exc
    kind = AssertionError if isinstance(exc, AssertionError) else RuntimeError
    replacement = kind(f"{type(exc).__name__}: {mask_text(_text_of(exc))}")
    replacement.__cause__ = None
    replacement.__suppress_context__ = True
    return replacement.with_traceback(exc.__traceback__)


def _text_of(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not hide the failure
        return repr(exc.args)


def _mask_args(exc: BaseException) -> bool:
    """Mask the string arguments of an exception; True when its message is clean afterwards."""
    text = _text_of(exc)
    if mask_text(text) == text:
        return True
    try:
        exc.args = tuple(mask_text(a) if isinstance(a, str) else mask_strings(a) for a in exc.args)
    except (AttributeError, TypeError):
        return False
    after = _text_of(exc)
    return mask_text(after) == after


def mask_headers(headers) -> dict:
    masked = {}
    for name, value in dict(headers or {}).items():
        if name.lower() in SECRET_HEADERS:
            scheme, _, credential = str(value).partition(" ")
            masked[name] = f"{scheme} {marker('credential', credential)}" if credential else marker("credential", value)
        else:
            masked[name] = mask_text(str(value))
    return masked


def mask_body(body) -> str:
    """A request or response body as masked, readable text."""
    if body is None or body == b"" or body == "":
        return ""
    if isinstance(body, bytes):
        try:
            body = body.decode()
        except UnicodeDecodeError:
            return f"<{len(body)} bytes of binary data>"
    if isinstance(body, (dict, list)):
        return _printable(json.dumps(mask_data(body), indent=2, ensure_ascii=False))
    try:
        return _printable(json.dumps(mask_data(json.loads(body)), indent=2, ensure_ascii=False))
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        return _printable(mask_text(body))


def _printable(text: str) -> str:
    """Text that can be written as UTF-8: a lone surrogate (a body may carry "\\ud800") is shown escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":«masked»@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
