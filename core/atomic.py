"""Atomic (by default durable) replacement of a small local file (JSON state beside the data).

Invariant: after ``write_json_atomic`` returns, a crash leaves either the old file or the
complete new one, never half of either: the text goes to a temporary file in the same
directory, which is renamed over the target (``os.replace`` is atomic on one file system).
Durable (the default): the temporary file is fsynced before the rename and the directory
after it, so the same holds after a power cut and the rename itself survives.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["fsync_directory", "write_json_atomic", "write_text_atomic"]


def write_json_atomic(path: Path, obj: Any, *, durable: bool = True) -> None:
    """Replace ``path`` with ``obj`` as UTF-8 JSON (parent directories created).

    ``durable=False`` skips both fsyncs, for a file rewritten every second whose latest
    version may be lost in a power cut (the heartbeat): readers still never see half a file.
    Raises OSError (a full disk, no permission) with the target left as it was and no
    temporary file behind; TypeError/ValueError if ``obj`` is not JSON-serializable.
    """
    text = json.dumps(obj, ensure_ascii=False)  # before touching the disk: a bad object changes nothing
    write_text_atomic(path, text, durable=durable)


def write_text_atomic(path: Path, text: str, *, durable: bool = True) -> None:
    """Replace ``path`` with ``text`` (UTF-8), as write_json_atomic does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Beside the target (same file system, so the rename is atomic); the pid keeps two
    # processes that share a directory by mistake from writing into each other's file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a new or renamed directory entry in ``directory`` durable."""
    # The rename is durable only once the directory entry is on disk (ext4, xfs).
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
