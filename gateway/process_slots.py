"""A gateway process's own slot in a folder that several processes share: the settlement journal's.

The journal (gateway/services/settlements.py) is one process's folder, which it locks. Worker processes of one
gateway, and replicas mounting one volume, share SETTLEMENT_JOURNAL_DIR, so each takes a slot of it: the folder
`process-<n>` for the lowest n whose lock file `process-<n>.lock` no live process holds (flock, released by the
kernel when the process dies, however it dies). A process that replaces a dead one (a worker restarted by uvicorn, a
container restarted) finds the dead one's slot free, takes it, and so applies what the dead one journaled and never
wrote to the database. A slot left with entries when fewer processes run than before waits for the next process
that takes it (docs/contract.md, "Many processes and replicas").
"""
from __future__ import annotations

import errno
import fcntl
import itertools
import os
from dataclasses import dataclass
from pathlib import Path

MAX_SLOTS = 1024  # far above any number of processes sharing one folder


@dataclass
class Slot:
    folder: Path
    number: int
    _lock_fd: int | None

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the file lets go of its lock
            self._lock_fd = None


def claim(shared: Path) -> Slot:
    """Take the lowest free slot of `shared` (made when missing) and hold it until release() or the process ends."""
    shared.mkdir(parents=True, exist_ok=True)
    for number in itertools.islice(itertools.count(), MAX_SLOTS):
        fd = os.open(shared / f"process-{number}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                continue
            raise
        return Slot(shared / f"process-{number}", number, fd)
    raise SystemExit(f"gateway: all {MAX_SLOTS} slots of the settlement journal folder {shared} are held by live "
                     f"processes")
