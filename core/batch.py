"""ReadingBatch: the one shape data moves in, from protocol decoder to database COPY.

Struct of four equal-length, read-only numpy arrays: ``tag`` (int32 dense registry index),
``ts`` (int64 UTC microseconds), ``value`` (float64) and ``quality`` (uint8, see quality.py).
Row order is arrival order; nothing is sorted unless asked.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from core.errors import BatchError

__all__ = ["ReadingBatch"]

_DTYPES: dict[str, np.dtype] = {
    "tag": np.dtype(np.int32),
    "ts": np.dtype(np.int64),
    "value": np.dtype(np.float64),
    "quality": np.dtype(np.uint8),
}


def _frozen(name: str, arr: npt.ArrayLike, copy: bool) -> np.ndarray:
    a = np.asarray(arr)
    want = _DTYPES[name]
    if a.ndim != 1:
        raise BatchError(f"ReadingBatch.{name}: expected a 1-d array, got shape {a.shape}")
    if a.dtype != want:
        raise BatchError(f"ReadingBatch.{name}: expected dtype {want}, got {a.dtype}")
    if copy or a.flags.writeable or not a.flags.c_contiguous:
        a = np.array(a, dtype=want, copy=True, order="C")
    a.flags.writeable = False
    return a


@dataclass(frozen=True, slots=True, init=False)
class ReadingBatch:
    tag: np.ndarray
    ts: np.ndarray
    value: np.ndarray
    quality: np.ndarray

    def __init__(
        self,
        tag: npt.ArrayLike,
        ts: npt.ArrayLike,
        value: npt.ArrayLike,
        quality: npt.ArrayLike,
        *,
        copy: bool = False,
    ) -> None:
        """Take the four arrays as they are (dtype must match exactly; nothing is cast).

        Writeable inputs are copied so that the batch can never change under a reader.
        """
        arrays = {n: _frozen(n, a, copy) for n, a in zip(_DTYPES, (tag, ts, value, quality), strict=True)}
        lengths = {n: len(a) for n, a in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise BatchError(f"ReadingBatch: arrays differ in length: {lengths}")
        for n, a in arrays.items():
            object.__setattr__(self, n, a)

    # --- constructors -------------------------------------------------------------

    @classmethod
    def from_arrays(
        cls, tag: npt.ArrayLike, ts: npt.ArrayLike, value: npt.ArrayLike, quality: npt.ArrayLike
    ) -> ReadingBatch:
        """Build from array-likes, casting safely (refuses lossy casts such as float -> int)."""
        cast = []
        for name, arr in zip(_DTYPES, (tag, ts, value, quality), strict=True):
            a = np.asarray(arr)
            want = _DTYPES[name]
            allowed = "iub" if want.kind in "iu" else "iubf"
            if a.size and a.dtype.kind not in allowed:
                raise BatchError(f"ReadingBatch.{name}: cannot cast {a.dtype} to {want}")
            if a.size and want.kind in "iu":
                info = np.iinfo(want)
                if a.min() < info.min or a.max() > info.max:
                    raise BatchError(f"ReadingBatch.{name}: values out of range for {want}")
            cast.append(a.astype(want, copy=False) if a.size else np.empty(0, want))
        return cls(*cast)

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[float | int]]) -> ReadingBatch:
        """Build from ``(tag, ts_us, value, quality)`` rows (tests, replay, small sources)."""
        rows = list(rows)
        for i, row in enumerate(rows):
            if len(row) != 4:
                raise BatchError(f"ReadingBatch.from_rows: row {i} has {len(row)} fields, expected 4")
        if not rows:
            return cls.empty()
        tag, ts, value, quality = zip(*rows, strict=True)
        # Integer columns keep their inferred dtype so that from_arrays refuses a float
        # timestamp instead of truncating it.
        return cls.from_arrays(
            np.asarray(tag), np.asarray(ts), np.asarray(value, dtype=np.float64), np.asarray(quality)
        )

    @classmethod
    def empty(cls) -> ReadingBatch:
        return cls(*(np.empty(0, dt) for dt in _DTYPES.values()))

    @classmethod
    def concat(cls, batches: Iterable[ReadingBatch]) -> ReadingBatch:
        batches = [b for b in batches if len(b)]
        if not batches:
            return cls.empty()
        if len(batches) == 1:
            return batches[0]
        return cls(*(np.concatenate([getattr(b, n) for b in batches]) for n in _DTYPES))

    # --- views ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.tag)

    def __repr__(self) -> str:
        return f"ReadingBatch(n={len(self)}, tags={len(np.unique(self.tag))})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReadingBatch):
            return NotImplemented
        return (
            np.array_equal(self.tag, other.tag)
            and np.array_equal(self.ts, other.ts)
            and np.array_equal(self.value, other.value, equal_nan=True)
            and np.array_equal(self.quality, other.quality)
        )

    __hash__ = None  # type: ignore[assignment]

    def select(self, mask: npt.ArrayLike) -> ReadingBatch:
        """Rows where ``mask`` (bool array of this length, or integer indices) selects."""
        m = np.asarray(mask)
        if m.dtype == np.bool_ and m.shape != self.tag.shape:
            raise BatchError(f"ReadingBatch.select: mask of shape {m.shape} for {len(self)} rows")
        return ReadingBatch(self.tag[m], self.ts[m], self.value[m], self.quality[m])

    def last_per_tag(self) -> ReadingBatch:
        """One row per tag, the one with the latest timestamp; ties go to the later arrival.

        Result is ordered by tag index.
        """
        n = len(self)
        if n == 0:
            return self
        # lexsort sorts by the last key first: tag, then ts, then arrival. The last row of
        # each tag's run is therefore its latest reading, ties broken by arrival order.
        order = np.lexsort((np.arange(n), self.ts, self.tag))
        tags = self.tag[order]
        last = np.ones(n, dtype=bool)
        last[:-1] = tags[1:] != tags[:-1]
        return self.select(order[last])

    def rows(self) -> list[tuple[int, int, float, int]]:
        """Python rows (for tests and debugging; never on the hot path)."""
        return list(
            zip(self.tag.tolist(), self.ts.tolist(), self.value.tolist(), self.quality.tolist(), strict=True)
        )
