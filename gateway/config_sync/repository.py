"""Reading the config repository with the git CLI: branch heads, trees, blobs, and whole revisions as Declared.

Parsed files are cached by (path, blob id) and revisions by sha, so an unchanged file is never read or parsed
twice."""
from __future__ import annotations

import subprocess
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config_sync.validation import SETTINGS_FILE, ConfigError, parse_file

MAX_ERRORS_SHOWN = 5


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


@dataclass
class Declared:
    revision: str
    tree: dict[str, str]  # path -> blob id
    settings: dict = field(default_factory=dict)
    orgs: dict[str, dict] = field(default_factory=dict)  # slug -> spec
    models: dict[str, dict] = field(default_factory=dict)  # name -> spec
    paths: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, name) -> path

    def add(self, path: str, kind: str, name: str, spec: dict) -> str | None:
        """Take one parsed file; the problem when it declares an object another file already does."""
        if kind == "settings":
            self.settings = spec
            return None
        if (kind, name) in self.paths:
            return f"{path}: declares the {kind} {name!r} again (also in {self.paths[(kind, name)]})"
        self.paths[(kind, name)] = path
        (self.orgs if kind == "org" else self.models)[name] = spec
        return None


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

    def _parsed(self, path: str, blob: str, texts: dict[str, str]):
        """(kind, name, spec) of one file, or its ConfigError; parsed once per (path, blob)."""
        key = (path, blob)
        parsed = self.files.take(key)
        if parsed is None:
            try:
                parsed = parse_file(path, texts[blob])
            except ConfigError as exc:
                parsed = exc
            self.files.put(key, parsed)
        return parsed

    def _read(self, revision: str) -> Declared:
        tree = list_tree(self.repo, revision)
        missing = sorted({blob for path, blob in tree.items() if (path, blob) not in self.files})
        texts = read_blobs(self.repo, missing)
        declared, errors = Declared(revision, tree), []
        for path in sorted(tree):
            parsed = self._parsed(path, tree[path], texts)
            problem = str(parsed) if isinstance(parsed, ConfigError) else declared.add(path, *parsed)
            if problem is not None:
                errors.append(problem)
        if errors:
            more = f"; and {len(errors) - MAX_ERRORS_SHOWN} more" if len(errors) > MAX_ERRORS_SHOWN else ""
            raise ConfigError("; ".join(errors[:MAX_ERRORS_SHOWN]) + more)
        return declared
