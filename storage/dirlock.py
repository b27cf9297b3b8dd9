"""One process per data directory and per spool: an exclusive ``flock`` held for the process lifetime.

Two collectors sharing a spool would drain each other's segments and interleave their
appends; two sharing a data directory would overwrite each other's heartbeat and rule
state. ``DirectoryLock`` takes ``<directory>/hazardwatch.lock`` with ``LOCK_EX | LOCK_NB``
and writes its pid into it; a second process is refused at once with the directory and
the holder's pid. The kernel drops the lock when the process dies (also on ``kill -9``),
so a stale lock file never blocks a restart.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from core.errors import StorageError

__all__ = ["LOCK_NAME", "DirectoryInUse", "DirectoryLock"]

LOCK_NAME = "hazardwatch.lock"


class DirectoryInUse(StorageError):
    """Another live process holds the directory's lock."""


class DirectoryLock:
    """Exclusive lock on ``directory`` (created if missing) until :meth:`release` or process exit."""

    def __init__(self, directory: str | Path, what: str = "data directory") -> None:
        self.directory = Path(directory)
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot lock the {self.what} {self.directory.resolve()}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise DirectoryInUse(
                f"the {self.what} {self.directory.resolve()} is in use by another hazardwatch process "
                f"(pid {holder or 'unknown'}); stop it, or give this one its own directory "
                "(settings.data_dir, --data-dir)"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StorageError(f"cannot lock the {self.what} {self.directory.resolve()}: {exc}") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            # The file stays: removing it would race with a process that just opened it.
            os.close(fd)

    def __enter__(self) -> DirectoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
