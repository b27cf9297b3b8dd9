"""Back-test: run the current and a candidate rule set over the same history and compare.

Pure over readings: ``backtest`` takes (ts_us, tag key, value, quality) rows in time order,
read in batches of any size (``batches_of``: ``batch_s`` of source time, an I/O choice only).
It re-cuts them into slices of ``tick_s`` of source time (aligned to the epoch) and evaluates
both engines on each slice at ``now`` = the slice's newest timestamp (arrival time = sample
time, to the tick), ticking in between when the data has gaps, so delays and stale timers
behave as live with a collector delivering every ``tick_s``. The result therefore does not
depend on the batch size. It counts the alarms each set would have raised (activation edges)
per tag, rule kind and hour. Engineers use it to tune limits on real history before
changing them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from core.batch import ReadingBatch
from core.clock import US_PER_S
from core.conditions import ConditionEdges
from rules.engine import RuleEngine
from rules.ruleset import RuleSet

__all__ = ["Backtest", "BacktestRow", "backtest", "batches_of", "slices"]

US_PER_HOUR = 3600 * US_PER_S
MAX_TICKS_PER_GAP = 600


@dataclass(frozen=True, order=True)
class BacktestRow:
    subject: str  # tag key or interlock key
    kind: str  # RuleKind name
    hour_us: int  # start of the UTC hour
    current: int  # alarms raised by the current rules
    candidate: int  # alarms the candidate rules would have raised


@dataclass(frozen=True)
class Backtest:
    rows: tuple[BacktestRow, ...]  # sorted by subject, kind, hour
    readings: int
    start_us: int
    end_us: int

    def by_subject(self) -> list[tuple[str, int, int]]:
        """(tag or interlock, current, candidate) totals, largest change first."""
        tot: dict[str, list[int]] = {}
        for r in self.rows:
            t = tot.setdefault(r.subject, [0, 0])
            t[0] += r.current
            t[1] += r.candidate
        return sorted(((k, a, b) for k, (a, b) in tot.items()), key=lambda x: (-abs(x[2] - x[1]), x[0]))

    def by_hour(self) -> list[tuple[int, int, int]]:
        tot: dict[int, list[int]] = {}
        for r in self.rows:
            t = tot.setdefault(r.hour_us, [0, 0])
            t[0] += r.current
            t[1] += r.candidate
        return sorted((h, a, b) for h, (a, b) in tot.items())

    def changed(self) -> list[BacktestRow]:
        return [r for r in self.rows if r.current != r.candidate]

    @property
    def totals(self) -> tuple[int, int]:
        return sum(r.current for r in self.rows), sum(r.candidate for r in self.rows)


def batches_of(
    rows: Iterable[tuple[int, str, float, int]], tag_keys: tuple[str, ...], batch_s: float = 1.0
) -> Iterator[ReadingBatch]:
    """Time-ordered rows as batches of ``batch_s`` source time; unknown tags are skipped."""
    index = {k: i for i, k in enumerate(tag_keys)}
    width = max(1, round(batch_s * US_PER_S))
    cur: list[tuple[int, int, float, int]] = []
    window = None
    for ts, key, value, quality in rows:
        i = index.get(key)
        if i is None:
            continue
        w = ts // width
        if window is not None and w != window and cur:
            yield ReadingBatch.from_rows(cur)
            cur = []
        window = w
        cur.append((i, ts, value, quality))
    if cur:
        yield ReadingBatch.from_rows(cur)


def _rows(batch: ReadingBatch, sel: slice | np.ndarray) -> ReadingBatch:
    return ReadingBatch(batch.tag[sel], batch.ts[sel], batch.value[sel], batch.quality[sel])


def slices(batches: Iterable[ReadingBatch], step_us: int) -> Iterator[ReadingBatch]:
    """The rows of ``batches`` (time-ordered) re-cut at every multiple of ``step_us`` of source
    time, whatever the batch boundaries: a slice a batch ends inside is completed from the next."""
    held: ReadingBatch | None = None  # the newest slice, which the next batch may continue
    for batch in batches:
        if not len(batch):
            continue
        if held is not None:
            batch = ReadingBatch(*(np.concatenate((getattr(held, n), getattr(batch, n))) for n in _COLS))
        slot = batch.ts // step_us
        if (np.diff(slot) < 0).any():  # stable: rows of one slice keep their order
            order = np.argsort(slot, kind="stable")
            batch, slot = _rows(batch, order), slot[order]
        cut = np.r_[0, np.flatnonzero(np.diff(slot)) + 1]
        for a, b in pairwise(cut.tolist()):
            yield _rows(batch, slice(a, b))
        held = _rows(batch, slice(int(cut[-1]), len(batch)))
    if held is not None:
        yield held


_COLS = ("tag", "ts", "value", "quality")


def _remap(batch: ReadingBatch, to: np.ndarray) -> ReadingBatch:
    tag = to[batch.tag]
    keep = tag >= 0
    return ReadingBatch(tag[keep].astype(np.int32), batch.ts[keep], batch.value[keep], batch.quality[keep])


def backtest(
    current: RuleSet, candidate: RuleSet, batches: Iterable[ReadingBatch], tick_s: float = 1.0
) -> Backtest:
    """Alarms raised by ``current`` and ``candidate`` over ``batches`` (in ``current``'s tag
    indexes, time-ordered), per (subject, kind, hour); evaluated per ``tick_s`` slice."""
    engines = RuleEngine(current), RuleEngine(candidate)
    cand_index = {k: i for i, k in enumerate(candidate.tag_keys)}
    to_candidate = np.array([cand_index.get(k, -1) for k in current.tag_keys], np.int64)
    same_tags = current.tag_keys == candidate.tag_keys
    counts: tuple[Counter[tuple[str, int]], Counter[tuple[str, int]]] = (Counter(), Counter())
    step = max(1, round(tick_s * US_PER_S))
    readings, start, last = 0, None, None
    for batch in slices(batches, step):
        now = int(batch.ts.max())
        if last is not None and now - last > step:  # a gap in the data: let the timers run
            gap_step = max(step, (now - last) // MAX_TICKS_PER_GAP)
            for t in range(last + gap_step, now, gap_step):
                for engine, c in zip(engines, counts, strict=True):
                    _count(engine.rules, engine.tick(t), c)
        inputs = (batch, batch if same_tags else _remap(batch, to_candidate))
        for engine, b, c in zip(engines, inputs, counts, strict=True):
            _count(engine.rules, engine.evaluate(b, now), c)
        readings += len(batch)
        first = int(batch.ts.min())
        start = first if start is None else min(start, first)
        last = now if last is None else max(last, now)
    keys = set(counts[0]) | set(counts[1])
    rows = []
    for key, hour in keys:
        subject, _, kind = key.rpartition(":")
        rows.append(BacktestRow(subject, kind, hour, counts[0][(key, hour)], counts[1][(key, hour)]))
    return Backtest(tuple(sorted(rows)), readings, start or 0, last or 0)


def _count(rules: RuleSet, edges: ConditionEdges, into: Counter[tuple[str, int]]) -> None:
    for r, ts in zip(edges.rule[edges.active].tolist(), edges.ts[edges.active].tolist(), strict=True):
        into[(rules.keys[r], ts - ts % US_PER_HOUR)] += 1
