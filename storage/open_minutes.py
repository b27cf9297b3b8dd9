"""Each tag's open minute, held in memory so a tag-minute is written to reading_1m once.

At 1 Hz a tag-minute receives 60 readings; upserting its rollup row after every batch
rewrote it 60 times and cost three times the COPY itself. BatchWriter instead keeps, per
tag, the rollup of its newest minute (the *head*) here and writes it when it closes.

Rules (pure numpy, no database; BatchWriter applies a :class:`Step` only after its
transaction commits):

- A head holds the contributions of readings this writer stored since it opened; it is
  merged into reading_1m *additively*, so a row already there (written before a restart,
  or by the slow path) simply gains it. Every stored reading is counted exactly once.
- A tag's head closes when a reading of a later minute of that tag arrives, or when the
  batch watermark (the median reading time of a batch, so one device with a wild clock
  cannot close everybody's minute) is ``grace_us`` past the head's minute end, which
  closes the minutes of tags that went silent.
- A reading older than its tag's head (late, or re-sent into a closed minute) is merged in
  the batch's own transaction: the set-based fallback for closed minutes.
- ``dirty`` marks heads whose newest reading is not yet in tag_latest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from storage.rollup import US_PER_MINUTE, MinutePartials

__all__ = ["ROLLUP_FIELDS", "OpenMinutes", "Step", "advance", "close_all", "journal_ranges"]

# The rollup columns shared by MinutePartials, OpenMinutes and hw_stage_rollup, in order.
ROLLUP_FIELDS = (
    "tag_id", "bucket", "min", "max", "sum", "count", "bad_count", "last_time", "last_value", "last_quality",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class OpenMinutes:
    """At most one row per tag, sorted by tag: its open minute's rollup so far."""

    tag_id: np.ndarray  # int32
    bucket: np.ndarray  # int64 µs, minute start
    min: np.ndarray  # NaN: no usable reading yet
    max: np.ndarray
    sum: np.ndarray
    count: np.ndarray  # int32
    bad_count: np.ndarray  # int32
    last_time: np.ndarray  # int64 µs
    last_value: np.ndarray
    last_quality: np.ndarray  # uint8
    dirty: np.ndarray  # bool: newest reading not yet written to tag_latest

    def __len__(self) -> int:
        return len(self.tag_id)

    @classmethod
    def empty(cls) -> OpenMinutes:
        i32, i64, f8 = np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0, np.float64)
        return cls(i32, i64, f8, f8, f8, i32, i32, i64, f8, np.empty(0, np.uint8), np.empty(0, bool))

    def columns(self, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The rollup columns (optionally the rows in ``mask``), for a COPY."""
        return {f: getattr(self, f) if mask is None else getattr(self, f)[mask] for f in ROLLUP_FIELDS}

    def clean(self) -> OpenMinutes:
        """The same heads with every newest reading marked as written to tag_latest."""
        return OpenMinutes(**self.columns(), dirty=np.zeros(len(self), bool))


@dataclass(frozen=True, slots=True)
class Step:
    """What one batch does to the open minutes.

    ``merge`` holds the rollup rows to add into reading_1m now (closed heads, late rows),
    sorted by (tag, bucket); ``latest`` holds each touched or still dirty tag's newest
    reading (tag_id, last_time, last_value, last_quality, sorted by tag) for tag_latest;
    ``heads`` is the state once the transaction commits, with ``dirty`` still set (the
    writer clears it when it writes ``latest``).
    """

    heads: OpenMinutes
    merge: dict[str, np.ndarray]
    latest: dict[str, np.ndarray]
    # The part of ``latest`` that must be written in this transaction: tags whose head
    # closes and whose newest reading is not in tag_latest yet (their minute leaves
    # reading_1m_open, so a crash could no longer recover it).
    latest_closing: dict[str, np.ndarray] | None = None

    @property
    def must_write_latest(self) -> dict[str, np.ndarray]:
        return self.latest_closing if self.latest_closing is not None else _empty_latest()

    @property
    def merge_rows(self) -> int:
        return len(self.merge["tag_id"])


def _group_last(last_time: np.ndarray, starts: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Index of the newest row of each group of one or two rows starting at ``starts``."""
    nxt = np.minimum(starts + 1, len(last_time) - 1)
    return np.where((size == 2) & (last_time[nxt] > last_time[starts]), nxt, starts)


def advance(heads: OpenMinutes, partials: MinutePartials, grace_us: int) -> Step:
    """Fold a batch's minute partials (of readings just inserted) into the open minutes.

    ``partials`` must be of rows new to ``reading`` (the fast path), one row per
    (tag, minute), sorted, as storage.rollup.prepare makes them.
    """
    if len(partials) == 0:
        return Step(heads, _empty_merge(), _latest(heads, heads.dirty))
    if _same_minutes(heads, partials):
        combined = _combine_in_place(heads, partials)
        return Step(combined, _empty_merge(), _latest(combined, combined.dirty))
    cols = {f: np.concatenate((getattr(heads, f), getattr(partials, f))) for f in ROLLUP_FIELDS}
    dirty = np.concatenate((heads.dirty, np.ones(len(partials), bool)))
    key = (cols["tag_id"].astype(np.int64) << 32) | (cols["bucket"] // US_PER_MINUTE)
    order = np.argsort(key, kind="stable")  # two sorted runs: nearly linear
    key = key[order]
    cols = {f: a[order] for f, a in cols.items()}
    dirty = dirty[order]
    n = len(key)
    starts_mask = np.empty(n, bool)
    starts_mask[0] = True
    np.not_equal(key[1:], key[:-1], out=starts_mask[1:])
    if not starts_mask.all():  # a head and a partial of the same tag-minute: combine them
        starts = np.flatnonzero(starts_mask)
        size = np.diff(np.append(starts, n))
        pick = _group_last(cols["last_time"], starts, size)
        cols = {
            "tag_id": cols["tag_id"][starts],
            "bucket": cols["bucket"][starts],
            "min": np.fmin.reduceat(cols["min"], starts),
            "max": np.fmax.reduceat(cols["max"], starts),
            "sum": np.add.reduceat(cols["sum"], starts),
            "count": np.add.reduceat(cols["count"], starts).astype(np.int32),
            "bad_count": np.add.reduceat(cols["bad_count"], starts).astype(np.int32),
            "last_time": cols["last_time"][pick],
            "last_value": cols["last_value"][pick],
            "last_quality": cols["last_quality"][pick],
        }
        dirty = np.logical_or.reduceat(dirty, starts)
    tag = cols["tag_id"]
    is_head = np.ones(len(tag), bool)
    np.not_equal(tag[1:], tag[:-1], out=is_head[:-1])  # the last row of each tag is its newest minute
    watermark = int(np.median(partials.last_time))
    closing = ~is_head | (cols["bucket"] + US_PER_MINUTE + grace_us <= watermark)
    keep = ~closing
    new_heads = OpenMinutes(**{f: a[keep] for f, a in cols.items()}, dirty=dirty[keep])
    latest_rows = is_head & dirty
    latest = {f: cols[f][latest_rows] for f in _LATEST_FIELDS}
    must = latest_rows & closing
    return Step(
        new_heads,
        {f: a[closing] for f, a in cols.items()},
        latest,
        {f: cols[f][must] for f in _LATEST_FIELDS},
    )


def close_all(heads: OpenMinutes) -> Step:
    """Every head closes (a clean stop): all are merged, dirty ones go to tag_latest."""
    latest = _latest(heads, heads.dirty)
    return Step(OpenMinutes.empty(), heads.columns(), latest, latest)


def _same_minutes(heads: OpenMinutes, partials: MinutePartials) -> bool:
    """The steady state at a scan rate: the batch holds exactly the heads' tags and minutes."""
    return (
        len(heads) == len(partials)
        and np.array_equal(heads.tag_id, partials.tag_id)
        and np.array_equal(heads.bucket, partials.bucket)
    )


def _combine_in_place(heads: OpenMinutes, p: MinutePartials) -> OpenMinutes:
    newer = p.last_time > heads.last_time
    return OpenMinutes(
        tag_id=heads.tag_id,
        bucket=heads.bucket,
        min=np.fmin(heads.min, p.min),
        max=np.fmax(heads.max, p.max),
        sum=heads.sum + p.sum,
        count=heads.count + p.count,
        bad_count=heads.bad_count + p.bad_count,
        last_time=np.where(newer, p.last_time, heads.last_time),
        last_value=np.where(newer, p.last_value, heads.last_value),
        last_quality=np.where(newer, p.last_quality, heads.last_quality),
        dirty=np.ones(len(heads), bool),
    )


_LATEST_FIELDS = ("tag_id", "last_time", "last_value", "last_quality")


def _latest(heads: OpenMinutes, mask: np.ndarray) -> dict[str, np.ndarray]:
    return {f: getattr(heads, f)[mask] for f in _LATEST_FIELDS}


def _empty_latest() -> dict[str, np.ndarray]:
    return _latest(OpenMinutes.empty(), np.empty(0, bool))


def _empty_merge() -> dict[str, np.ndarray]:
    return OpenMinutes.empty().columns()


def journal_ranges(heads: OpenMinutes) -> dict[int, tuple[int, int]]:
    """Open minute -> (lowest, highest) tag id holding it: what reading_1m_open must list."""
    if len(heads) == 0:
        return {}
    first = heads.bucket[0]
    if (heads.bucket == first).all():  # the usual case: every tag in the same minute
        return {int(first): (int(heads.tag_id[0]), int(heads.tag_id[-1]))}
    order = np.argsort(heads.bucket, kind="stable")  # tags stay ascending within a minute
    bucket, tag = heads.bucket[order], heads.tag_id[order]
    starts = np.flatnonzero(np.append(True, bucket[1:] != bucket[:-1]))
    ends = np.append(starts[1:], len(bucket)) - 1
    return {int(bucket[s]): (int(tag[s]), int(tag[e])) for s, e in zip(starts, ends, strict=True)}
