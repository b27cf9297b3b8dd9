"""Per-batch preparation for the historian: sanitize, sort, and pre-aggregate to minutes.

Pure numpy, no database. Invariants: a value that is NaN or infinite is stored with BAD
quality (a row already BAD keeps its byte, so the reason, e.g. BAD|COMM_FAILURE, survives;
a GOOD or UNCERTAIN row becomes plain BAD); minute rollups aggregate only readings whose quality is not BAD (the 0x40 bit
set: GOOD or UNCERTAIN), count the others in ``bad_count``, and keep the newest reading
of the minute whatever its quality in ``last_*``. The SQL oracle in tests and the
fallback path in writer.py compute the same definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.batch import ReadingBatch
from core.quality import Quality

__all__ = ["US_PER_MINUTE", "MinutePartials", "prepare"]

US_PER_MINUTE = 60_000_000
# Sorting on one int64 key (tag << 31 | ts offset) is ~2x faster than a two-key lexsort;
# it applies when the batch spans less than 2**31 µs (~35 minutes), the usual case.
_KEY_SPAN_US = 1 << 31
USABLE_BIT = 0x40  # set for GOOD (0xC0) and UNCERTAIN (0x40), clear for BAD


@dataclass(frozen=True, slots=True)
class MinutePartials:
    """Rollup contributions of one batch, one row per (tag_id, minute), sorted by both.

    ``min``/``max`` are NaN where a minute had no usable reading. ``tag_last`` marks each
    tag's newest minute, whose ``last_*`` is that tag's newest reading in the batch.
    """

    tag_id: np.ndarray  # int32
    bucket: np.ndarray  # int64 µs, minute start
    min: np.ndarray
    max: np.ndarray
    sum: np.ndarray
    count: np.ndarray  # int32, usable readings
    bad_count: np.ndarray  # int32
    last_time: np.ndarray  # int64 µs
    last_value: np.ndarray
    last_quality: np.ndarray  # uint8
    tag_last: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.tag_id)


def sanitize(batch: ReadingBatch) -> ReadingBatch:
    """Force BAD quality on non-finite values so they never reach min/max/sum.

    Only rows that claim to be usable (GOOD or UNCERTAIN) are downgraded, to plain BAD: a
    row that is already BAD keeps its substatus, because history must say *why* a value is
    missing (a lost connection, a sensor failure, a config error).
    """
    downgrade = ~np.isfinite(batch.value) & ((batch.quality & USABLE_BIT) != 0)
    if not downgrade.any():
        return batch
    quality = np.where(downgrade, np.uint8(Quality.BAD), batch.quality)
    return ReadingBatch(batch.tag, batch.ts, batch.value, quality)


def sort_order(tag: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Indices ordering rows by (tag, ts); stable, so duplicate keys keep arrival order."""
    if len(ts) == 0:
        return np.empty(0, np.intp)
    lo = int(ts.min())
    if int(ts.max()) - lo < _KEY_SPAN_US and int(tag.min()) >= 0:
        key = (tag.astype(np.int64) << 31) | (ts - lo)
        return np.argsort(key, kind="stable")
    return np.lexsort((ts, tag))


def _is_sorted(tag: np.ndarray, ts: np.ndarray) -> bool:
    """Rows already ordered by (tag, ts): checking costs ~1/20 of sorting 10,000 rows."""
    if len(tag) < 2:
        return True
    dtag = np.diff(tag.astype(np.int64))
    return bool(((dtag > 0) | ((dtag == 0) & (ts[1:] >= ts[:-1]))).all())


def _frozen_take(a: np.ndarray, order: np.ndarray) -> np.ndarray:
    out = a[order]
    out.flags.writeable = False  # hand over without ReadingBatch copying it again
    return out


def prepare(batch: ReadingBatch) -> tuple[ReadingBatch, MinutePartials]:
    """Sanitize and sort ``batch`` (tag = database ids) and compute its minute partials.

    Sorting by (tag, time) is also what makes the COPY cheap: index insertions then walk
    the (tag_id, time) B-tree in order instead of jumping between leaf pages.
    """
    batch = sanitize(batch)
    if not _is_sorted(batch.tag, batch.ts):  # a scan usually arrives in tag order already
        order = sort_order(batch.tag, batch.ts)
        batch = ReadingBatch(
            *(_frozen_take(a, order) for a in (batch.tag, batch.ts, batch.value, batch.quality))
        )
    tag, ts, value, quality = batch.tag, batch.ts, batch.value, batch.quality
    n = len(batch)
    if n == 0:
        empty_f = np.empty(0, np.float64)
        empty_i = np.empty(0, np.int32)
        partials = MinutePartials(
            empty_i, np.empty(0, np.int64), empty_f, empty_f, empty_f, empty_i, empty_i,
            np.empty(0, np.int64), empty_f, np.empty(0, np.uint8), np.empty(0, bool),
        )  # fmt: skip
        return batch, partials

    minute = ts // US_PER_MINUTE  # floor division: correct before 1970 too
    starts_mask = np.empty(n, dtype=bool)
    starts_mask[0] = True
    np.not_equal(tag[1:], tag[:-1], out=starts_mask[1:])
    tag_change = starts_mask.copy()
    starts_mask[1:] |= minute[1:] != minute[:-1]
    starts = np.flatnonzero(starts_mask)
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:] - 1
    ends[-1] = n - 1

    usable = (quality & USABLE_BIT) != 0
    count = np.add.reduceat(usable.astype(np.int32), starts)
    size = np.diff(np.append(starts, n)).astype(np.int32)
    vmin = np.minimum.reduceat(np.where(usable, value, np.inf), starts)
    vmax = np.maximum.reduceat(np.where(usable, value, -np.inf), starts)
    empty = count == 0
    vmin[empty] = np.nan
    vmax[empty] = np.nan
    tag_last = np.append(tag_change[starts[1:]], True)  # next group starts a new tag

    # Rows are sorted by time within a group, so the group's last row is its newest.
    partials = MinutePartials(
        tag_id=tag[starts],
        bucket=minute[starts] * US_PER_MINUTE,
        min=vmin,
        max=vmax,
        sum=np.add.reduceat(np.where(usable, value, 0.0), starts),
        count=count,
        bad_count=size - count,
        last_time=ts[ends],
        last_value=value[ends],
        last_quality=quality[ends],
        tag_last=tag_last,
    )
    return batch, partials
