"""Temporary copies of the repository that faults are applied to: the checkout's own files are never touched.

A copy is made once per worker (from the last commit, or from the working tree as it is now) and reset between
faults: the faulty file is written, the run happens, the original is written back. Python's bytecode cache knows
a source by its size and its modification time in whole seconds, so each version gets a time of its own (the
original's, or the original's plus the fault's number): stale bytecode can never stand in for either."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tools.project import project_root
from tools.prove.faults import Fault

ROOT = project_root()


class WorkspaceError(Exception):
    """The copy could not be made; the message says why."""


def _git(*args: str) -> bytes:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True)
    if done.returncode != 0:
        raise WorkspaceError(f"git {' '.join(args)} failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def head_commit() -> str:
    """The last commit, resolved once: every copy of a run is made from the same one, whatever is committed
    meanwhile."""
    return _git("rev-parse", "HEAD").decode().strip()


def _copy_commit(target: Path, commit: str) -> None:
    with tarfile.open(fileobj=io.BytesIO(_git("archive", "--format=tar", commit))) as archive:
        archive.extractall(target, filter="tar")


def _copy_worktree(target: Path) -> None:
    """The tracked and untracked (not ignored) files as they are now, deleted ones left out."""
    listed = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split(b"\0")
    for name in filter(None, (entry.decode() for entry in listed)):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


class Workspace:
    """One copy of the repository in a temporary folder."""

    def __init__(self, root: Path):
        self.root = root

    @classmethod
    def create(cls, commit: str | None, parent: Path | None = None) -> Workspace:
        """A copy of `commit`, or of the working tree as it is now when None."""
        root = Path(tempfile.mkdtemp(prefix="prove-", dir=parent))
        try:
            _copy_worktree(root) if commit is None else _copy_commit(root, commit)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return cls(root)

    @contextmanager
    def applied(self, fault: Fault, number: int) -> Iterator[None]:
        """The fault (the catalogue's `number`-th, from 1) is in the copy inside the block, and gone after it."""
        path = self.root / fault.file
        original, stamp = path.read_text(encoding="utf-8"), path.stat().st_mtime_ns
        path.write_text(fault.mutated(original), encoding="utf-8")
        os.utime(path, ns=(stamp + number * 10 ** 9,) * 2)
        try:
            yield
        finally:
            path.write_text(original, encoding="utf-8")
            os.utime(path, ns=(stamp, stamp))

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
