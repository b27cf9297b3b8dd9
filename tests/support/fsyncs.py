"""Which fsyncs a piece of code makes, file or directory, in order."""

from __future__ import annotations

import os
import stat

import pytest


def record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, every ``os.fsync`` (still done) appends "file" or "dir" to the list returned."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced
