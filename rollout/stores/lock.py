"""One `serve` per SQLite file: an exclusive lock on a file beside the database.

SQLite would let two processes open the same file and run two schedulers on it, each deciding
for the same rollouts. `serve` takes this lock at start and holds it for its whole life (the
kernel drops it when the process dies, however it dies, so a crash leaves nothing to clean
up); a second `serve` on the same file refuses with one line naming the file and the pid that
holds it. Only `serve` takes it: `canary-bot audit export` and tests open the file to read it.
An flock, not a POSIX record lock, because a record lock is per process and is silently
dropped when any descriptor of the file is closed.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class StoreInUse(Exception):
    """Another process holds the store's lock."""


class InstanceLock:
    def __init__(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path)
        self.path = self.db_path.with_name(self.db_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise `StoreInUse` naming the file and the holder's pid."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreInUse(
                f"the store {self.db_path} is in use by another canary-bot serve (pid "
                f"{holder}, lock {self.path}): stop it first, or give this one another "
                "store.path"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
