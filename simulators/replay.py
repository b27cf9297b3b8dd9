"""Replay recorded history through the simulator's servers, and the CSV it is recorded in.

CSV columns: ``time`` (ISO 8601 UTC), ``tag`` (key), ``value``, ``quality`` (byte or a
core.quality name). A Recording is sorted by time (stable). ``Replayer`` publishes each
distinct recorded instant at ``(t - t0) / speed`` after it starts, so values keep their
original spacing scaled by speed; source timestamps are the replay's own clock
(``SHIFTED``, what a live plant would stamp) or the recorded ones (``ORIGINAL``).
Tags without recorded values hold their model start values.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np

from core.clock import US_PER_S, from_datetime, to_datetime
from core.errors import ConfigError, ConfigIssue
from core.quality import Quality
from core.registry import TagRegistry
from simulators.runner import Simulator

__all__ = ["Recording", "Replayer", "read_csv", "write_csv"]

COLUMNS = ("time", "tag", "value", "quality")


@dataclass(frozen=True)
class Recording:
    ts: np.ndarray  # int64 UTC µs, sorted
    tag: np.ndarray  # int64 registry index
    value: np.ndarray
    quality: np.ndarray  # uint8

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def duration_s(self) -> float:
        return float(self.ts[-1] - self.ts[0]) / US_PER_S if len(self) else 0.0

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[int, int, float, int]]) -> Recording:
        data = list(rows)
        ts = np.array([r[0] for r in data], np.int64)
        order = np.argsort(ts, kind="stable")
        return cls(
            ts=ts[order],
            tag=np.array([r[1] for r in data], np.int64)[order],
            value=np.array([r[2] for r in data], np.float64)[order],
            quality=np.array([r[3] for r in data], np.uint8)[order],
        )


def _quality(text: str) -> int:
    text = text.strip()
    if not text:
        return int(Quality.GOOD)
    if text.upper() in Quality.__members__:
        return int(Quality[text.upper()])
    q = int(text, 0)
    if not 0 <= q <= 255:
        raise ValueError(f"quality {q} is not a byte")
    return q


def read_csv(
    path: str | os.PathLike[str], registry: TagRegistry, tags: Iterable[str] | None = None
) -> Recording:
    """Read a history CSV; every bad row is reported as ``file:line`` in one ConfigError."""
    wanted = set(tags) if tags is not None else None
    rows: list[tuple[int, int, float, int]] = []
    issues: list[ConfigIssue] = []
    with Path(path).open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS[:3] if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError([ConfigIssue(str(path), 1, "", f"missing column(s): {', '.join(missing)}")])
        for line, row in enumerate(reader, start=2):
            key = row["tag"]
            if wanted is not None and key not in wanted:
                continue
            try:
                dt = datetime.fromisoformat(row["time"].replace("Z", "+00:00"))
                value = float(row["value"]) if row["value"].strip() else math.nan
                rows.append(
                    (from_datetime(dt), registry.index_of(key), value, _quality(row.get("quality") or ""))
                )
            except (ValueError, KeyError) as exc:
                issues.append(ConfigIssue(str(path), line, key, str(exc).strip("'\"")))
    if issues:
        raise ConfigError(issues)
    return Recording.from_rows(rows)


def write_csv(path: str | os.PathLike[str], rows: Iterable[tuple[int, str, float, int]]) -> int:
    """Write ``(ts_us, key, value, quality)`` rows; returns how many."""
    n = 0
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for ts, key, value, quality in rows:
            w.writerow(
                (
                    to_datetime(int(ts)).isoformat().replace("+00:00", "Z"),
                    key,
                    repr(float(value)),
                    int(quality),
                )
            )
            n += 1
    return n


class Replayer:
    """Drives a (non-autostepping) Simulator's state from a Recording."""

    def __init__(
        self,
        sim: Simulator,
        recording: Recording,
        speed: float = 1.0,
        timestamps: Literal["SHIFTED", "ORIGINAL"] = "SHIFTED",
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.sim, self.rec, self.speed, self.timestamps = sim, recording, speed, timestamps
        self.published = 0

    async def run(self) -> None:
        rec, clock, state = self.rec, self.sim.clock, self.sim.sim.state
        if not len(rec):
            return
        t0, wall0, start_us = int(rec.ts[0]), clock.monotonic(), clock.now_us()
        bounds = np.flatnonzero(np.diff(rec.ts)) + 1
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(rec)], strict=True):
            rel_s = (int(rec.ts[lo]) - t0) / US_PER_S / self.speed
            await clock.sleep(max(0.0, wall0 + rel_s - clock.monotonic()))
            stamp = int(rec.ts[lo]) if self.timestamps == "ORIGINAL" else start_us + round(rel_s * US_PER_S)
            sl = slice(int(lo), int(hi))
            state.publish(rec.value[sl], rec.quality[sl], stamp, idx=rec.tag[sl])
            state.touch(rec.tag[sl], stamp)
            await self.sim.publish()
            self.published += hi - lo
