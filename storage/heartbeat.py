"""Heartbeat file: tells the next start whether this run stopped cleanly, and when it was last alive.

``<data_dir>/heartbeat.json`` is replaced atomically (``core.atomic.write_json_atomic``) every
``interval_s`` while the runtime collects, with ``clean: false``; a clean stop writes it
once more with ``clean: true`` (durably: fsynced). A start that finds ``clean: false`` knows
the previous run was killed or crashed: it died after ``alive_us`` and, unless its event
loop stalled, before the next beat was due (``alive_us + interval_s``), so every reading it
stored is older than :meth:`Beat.gap_start_us`. The runtime stamps its "not collected"
markers there. No fsync per beat: a power cut may leave an older beat, which only moves
the marker earlier.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from core.atomic import write_json_atomic

__all__ = ["HEARTBEAT_NAME", "Beat", "Heartbeat"]

log = logging.getLogger(__name__)

HEARTBEAT_NAME = "heartbeat.json"


@dataclass(frozen=True, slots=True)
class Beat:
    pid: int
    started_us: int  # when that run started (wall clock, UTC µs)
    alive_us: int  # its last heartbeat
    interval_s: float  # the period it beat at
    clean: bool  # True only after a clean stop

    def gap_start_us(self, now_us: int) -> int:
        """When the run is known to have stopped collecting: the next beat was due then
        (never later than ``now_us``, the moment the gap is noticed)."""
        return min(self.alive_us + round(self.interval_s * 1_000_000), now_us)


class Heartbeat:
    def __init__(self, directory: str | Path, interval_s: float = 1.0) -> None:
        if interval_s <= 0:
            raise ValueError("heartbeat interval must be positive")
        self.path = Path(directory) / HEARTBEAT_NAME
        self.interval_s = interval_s
        self.started_us = 0

    def previous(self) -> Beat | None:
        """The last run's beat, None on a first start. An unreadable file counts as an
        unclean stop at the file's modification time (the best guess of its last beat)."""
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error("heartbeat %s unreadable (%s)", self.path, exc)
            return self._from_mtime()
        try:
            data = json.loads(raw)
            return Beat(
                pid=int(data["pid"]),
                started_us=int(data["started_us"]),
                alive_us=int(data["alive_us"]),
                interval_s=float(data["interval_s"]),
                clean=bool(data["clean"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            log.error(
                "heartbeat %s unreadable (%s); taking its modification time as the last beat", self.path, exc
            )
            return self._from_mtime()

    def _from_mtime(self) -> Beat | None:
        try:
            mtime_us = self.path.stat().st_mtime_ns // 1000
        except OSError:
            return None
        return Beat(pid=0, started_us=mtime_us, alive_us=mtime_us, interval_s=0.0, clean=False)

    def beat(self, now_us: int, *, clean: bool = False) -> None:
        """Record that this run is alive at ``now_us`` (``clean``: it has stopped cleanly)."""
        if not self.started_us:
            self.started_us = now_us
        beat = Beat(os.getpid(), self.started_us, now_us, self.interval_s, clean)
        # A crash leaves the previous beat, never half a file; only the clean stop's beat must
        # survive a power cut right after it, so only that one is fsynced.
        write_json_atomic(self.path, asdict(beat), durable=clean)
