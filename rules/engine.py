"""RuleEngine: evaluates a compiled RuleSet on every batch and timer tick, emitting only edges.

Keeps the current value, quality and timestamp of every tag and the condition state of
every rule (rules/machine.py), and computes exactly what rules/reference.py defines, with
numpy. A batch first drops (and counts) the samples stamped more than ``rules.ahead_us`` ahead
of ``now``, deciding CLOCK_AHEAD for every tag in it, then refreshes STALE for every tag with
a sample left (arrival). Samples older than
their tag's newest are dropped, except that a BAD_COMM_FAILURE marker is never dropped and
real data always replaces one; with repeats the batch is sorted by (tag, ts, arrival) and
the k-th sample of every tag forms round k, so every sample is seen in order. Samples inside
their tag's quiet band skip the families (rules/families.py). The rules over several tags run
after each distinct sample ts among the tags they read (one pass when the batch shares one
ts, as a poll does), then the timers at ``now``.

Everything a sample reads or writes of its tag sits in one cache-line row (TAG_ROW), so the
per-sample cost is one row gather and one row put whatever the cache size; the batch's
tags are random, and a gather per separate array was a cache miss per array on a machine
whose L3 does not hold them (issue 10).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

import numpy as np

from core.batch import ReadingBatch
from core.clock import to_datetime
from core.conditions import LABELS, LIMIT_KINDS, ActiveCondition, ConditionEdges, RuleKind, Severity, rank_of
from core.errors import BatchError
from core.plant import Plant
from core.quality import COMM_FAILURE, is_bad
from core.registry import TagRegistry
from rules.compile import compile_rules
from rules.families import CHECK_KINDS, ROC_GRAIN, LimitFamily, QuietBand, TagCheck
from rules.interlock import InterlockFamily, InterlockStatus
from rules.machine import EdgeParts, Slots, unique_sorted
from rules.pairs import PairFamily
from rules.ruleset import NEVER, RuleSet
from rules.snapshot import UNSEEN, EngineSnapshot, initial_rule_state, initial_tag_state

__all__ = ["RuleEngine"]

log = logging.getLogger(__name__)

# Everything a sample reads and writes of its tag, in one 64-byte row aligned to a cache line,
# so a batch of random tags costs one row gather and one row scatter (and a mark store) rather
# than a gather or scatter per array: on a machine whose L3 does not hold the tag arrays, each
# of those is a cache miss per sample. lo/hi: the tag's quiet band (QuietBand); mark: repeat
# detection (_accepted).
TAG_ROW = np.dtype(
    {
        "names": ["value", "ts", "held", "lo", "hi", "mark", "quality", "valid"],
        "formats": ["<f8", "<i8", "<f8", "<f8", "<f8", "<i4", "u1", "?"],
        "offsets": [0, 8, 16, 24, 32, 40, 44, 45],
        "itemsize": 64,
    }
)
# A quality byte is not bad exactly when this bit is set (major 01 uncertain or 11 good; 00
# bad, 10 undefined = bad): one AND per sample instead of is_bad's four passes. Checked against
# is_bad for every byte at import, so a change to core.quality cannot pass unnoticed.
_GOOD_BIT = np.uint8(0x40)
if not np.array_equal(
    (np.arange(256, dtype=np.uint8) & _GOOD_BIT) != 0, ~is_bad(np.arange(256, dtype=np.uint8))
):
    raise ImportError("rules.engine: _GOOD_BIT no longer matches core.quality.is_bad")
_INT32_MAX = np.iinfo(np.int32).max
# accepted rows: tag, ts, value, quality, arrival position, unique, tag rows before (or None)
Accepted = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool, np.ndarray | None]
Round = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]


class RuleEngine:
    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        # One TAG_ROW per tag; value, quality, ts, held and valid are views of its columns.
        self._tab = _aligned_rows(rules.n_tags)
        tab = self._tab
        self.value, self.quality, self.ts, self.held = tab["value"], tab["quality"], tab["ts"], tab["held"]
        self.valid = tab["valid"]
        self._newest: int = UNSEEN  # at least every tag's ts (set with them)
        self._set_tags(initial_tag_state(rules.n_tags))
        self._touched = np.zeros(rules.n_tags, bool)
        self._pos = np.arange(0, dtype=np.int32)  # 0..n-1, grown to the largest batch seen
        self._mark = tab["mark"]
        self._all_dirty = True  # evaluate every interlock once after construction or restore
        self.limits = LimitFamily(rules)
        checks = [TagCheck(rules, k) for k in CHECK_KINDS]
        by_arrival = (RuleKind.STALE, RuleKind.CLOCK_AHEAD)
        self.checks = [c for c in checks if len(c) and c.kind not in by_arrival]
        self._stale = next((c for c in checks if len(c) and c.kind == RuleKind.STALE), None)
        self._ahead = next((c for c in checks if len(c) and c.kind == RuleKind.CLOCK_AHEAD), None)
        self._roc = next((c for c in self.checks if c.kind == RuleKind.ROC), None)
        # samples rejected as stamped too far ahead (a metric), and the tags already logged
        self.rejected_ahead = 0
        self._told = np.zeros(rules.n_tags, bool)
        self.quiet = QuietBand(rules, self.limits, self.checks, self._tab["lo"], self._tab["hi"])
        self.pairs = PairFamily(rules)
        self.interlocks = InterlockFamily(rules)
        il = rules.interlocks
        self._cross_read = np.zeros(rules.n_tags, bool)  # read by a pair or an interlock
        for refs in (self.pairs.a, self.pairs.b, il.in_tag, il.in_bypass, il.fe_tag):
            self._cross_read[refs[refs >= 0]] = True
        self._any_cross = bool(self._cross_read.any())
        self._slots: list[Slots] = [
            self.limits.slots,
            *(c.slots for c in self.checks),
            *([self._stale.slots] if self._stale is not None else []),
            *([self._ahead.slots] if self._ahead is not None else []),
            self.pairs.slots,
        ]  # the interlocks' slots fire apart (their response time waits for valid feedback)
        self.born: int | None = None

    @classmethod
    def from_plant(cls, plant: Plant, registry: TagRegistry | None = None) -> RuleEngine:
        return cls(compile_rules(plant, registry))

    # --- the two calls ------------------------------------------------------------------------

    def evaluate(self, batch: ReadingBatch, now_us: int) -> ConditionEdges:
        """Apply a batch, then the timers at ``now_us``; the edges, ordered by rule."""
        out: EdgeParts = []
        with np.errstate(all="ignore"):  # inf - inf in a derived value is data, not a bug
            self._start(now_us)
            # one pass: a negative int32 tag read as uint32 is past any registry
            if len(batch) and int(batch.tag.view(np.uint32).max()) >= self.rules.n_tags:
                raise BatchError(f"RuleEngine: tag index outside the registry (0..{self.rules.n_tags - 1})")
            tags = batch.tag.astype(np.int64)
            limit = now_us + self.rules.ahead_us
            ts_max = int(batch.ts.max()) if len(batch) else UNSEEN
            any_over = ts_max > limit
            over = batch.ts > limit if any_over else None
            if self._ahead is not None and tags.size:
                self._ahead.ahead(tags, batch.ts, now_us, limit, any_over, out)
            if over is not None:
                self._reject(tags[over], batch.ts[over], now_us)
                keep = ~over
                batch = ReadingBatch(batch.tag[keep], batch.ts[keep], batch.value[keep], batch.quality[keep])
                tags = tags[keep]
                ts_max = int(batch.ts.max()) if len(batch) else UNSEEN
            if self._stale is not None and tags.size:
                self._stale.arrive(tags, now_us, out)
            dirty = self._all_dirty
            if dirty:  # codes consistent with the tag state before the batch
                self.interlocks.recount(self.value, self.valid, self.held, self.ts)
            rows = self._accepted(tags, batch)
            self._newest = max(self._newest, ts_max)
            late = None  # cross-tag rows whose rules run after the samples (one ts)
            if rows is not None:
                late, wrote = self._cross_groups(rows, now_us, out)
                for tag, t, v, q, old in self._rounds(rows, wrote):
                    live, ok = self._apply(tag, t, v, q, old)
                    if live.size == 0:
                        continue  # every sample inside its tag's quiet band: no rule can change
                    if live.size < tag.size:
                        tag, t, v = tag[live], t[live], v[live]
                    self.limits.round(tag, t, v, ok, now_us, out)
                    for check in self.checks:
                        check.round(tag, t, v, ok, now_us, out)
                    self.quiet.settle(tag)
            if late is not None:
                self._cross(late, now_us, out)
            if dirty:
                self._all_dirty = False
                self.pairs.evaluate(self.value, self.valid, self.ts, now_us, out)
                self.interlocks.evaluate(self.value, self.valid, self.held, self.ts, now_us, out)
            self._timers(now_us, out)
        return _edges(out)

    def _apply(
        self, tag: np.ndarray, t: np.ndarray, v: np.ndarray, q: np.ndarray, old: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Store one round (unique tags) in the tag state: one row gather (``old``, when the
        caller has it already) and one row scatter. The positions some rule must see, and
        whether each of those samples is valid."""
        if old is None:
            old = np.take(self._tab, tag)
        bad = np.bitwise_and(q, _GOOD_BIT) == 0
        bad |= np.isnan(v)
        old["value"], old["ts"], old["quality"] = v, t, q
        np.logical_not(bad, out=old["valid"])  # straight into the rows: no temporary
        if np.count_nonzero(bad):
            np.copyto(old["held"], v, where=~bad)
        else:  # the usual batch: a plain copy, not a masked one
            old["held"] = v
        np.put(self._tab, tag, old, mode="wrap")  # tags checked against the registry: no bound checks
        live = self.quiet.live(v, bad, old["lo"], old["hi"])
        return live, ~bad[live]

    def _reject(self, tags: np.ndarray, ts: np.ndarray, now: int) -> None:
        """Count samples stamped too far ahead; log each tag once, one line per batch."""
        self.rejected_ahead += int(tags.size)
        new = unique_sorted(tags[~self._told[tags]])
        if new.size == 0:
            return
        self._told[new] = True
        keys = [self.rules.tag_keys[t] for t in new[:5].tolist()]
        more = f" and {new.size - len(keys)} more" if new.size > len(keys) else ""
        log.warning(
            "rejected samples stamped up to %.0f s ahead of arrival (limit %.0f s) from %s%s: "
            "device clock ahead? (logged once per tag; hazardwatch_rule_rejected_ahead_total counts them)",
            (int(ts.max()) - now) / 1e6,
            self.rules.ahead_us / 1e6,
            ", ".join(keys),
            more,
        )

    def _cross(self, tags: np.ndarray, now: int, out: EdgeParts) -> None:
        """Pairs and interlocks reading any of ``tags`` (unique), on the current tag state."""
        mark = self._touched
        mark[tags] = True
        self.pairs.evaluate(self.value, self.valid, self.ts, now, out, mark)
        mark[tags] = False
        self.interlocks.evaluate(self.value, self.valid, self.held, self.ts, now, out, tags)

    def _cross_groups(self, rows: Accepted, now: int, out: EdgeParts) -> tuple[np.ndarray | None, bool]:
        """Cross-tag rules per distinct ts of the accepted rows they read. With one ts, the tags to
        run them for after the samples (None: nothing to run); with several, run them here, group
        by group from the state before the batch (which ends as the samples leave it). The flag
        says whether the tag state was written here (rows gathered before are then stale)."""
        if not self._any_cross:
            return None, False
        tag, ts, value, quality, pos, unique, _ = rows
        m = np.take(self._cross_read, tag)
        if not m.any():
            return None, False
        cts = ts[m]
        if cts.min() == cts.max():  # one ts (a poll): run after the samples
            return (tag[m] if unique else unique_sorted(tag[m])), False
        order = np.lexsort((pos[m], tag[m], cts))
        tag, ts, value, quality = tag[m][order], cts[order], value[m][order], quality[m][order]
        ok = ~is_bad(quality) & ~np.isnan(value)
        bounds = np.flatnonzero(np.diff(ts)) + 1
        for a, b in zip(np.r_[0, bounds], np.r_[bounds, ts.size], strict=True):
            g = slice(int(a), int(b))
            gt, gv, gq, gok = tag[g], value[g], quality[g], ok[g]
            last = np.ones(gt.size, bool)
            last[:-1] = gt[1:] != gt[:-1]  # the last sample of each tag (arrival order)
            lt = gt[last]
            self.value[lt], self.quality[lt], self.ts[lt], self.valid[lt] = (
                gv[last],
                gq[last],
                ts[a],
                gok[last],
            )
            vt, vv = gt[gok], gv[gok]
            vlast = np.ones(vt.size, bool)
            vlast[:-1] = vt[1:] != vt[:-1]
            self.held[vt[vlast]] = vv[vlast]
            self._cross(lt, now, out)
        return None, True

    def tick(self, now_us: int) -> ConditionEdges:
        """Timers only: delays, stale data, bypass age, out of service; no new data needed."""
        out: EdgeParts = []
        self._start(now_us)
        self._timers(now_us, out)
        return _edges(out)

    def _start(self, now: int) -> None:
        if self.born is not None:
            return
        self.born = now
        ahead = self.ts > now + self.rules.ahead_us
        if ahead.any():  # restored from a state saved before samples ahead were refused: forget them
            self.value[ahead], self.held[ahead], self.ts[ahead], self.quality[ahead] = (
                np.nan,
                np.nan,
                UNSEEN,
                0,
            )
            self.valid[ahead] = False
            self._all_dirty = True
        if self._stale is not None:
            s = self._stale.slots
            s.aux_ts[:] = now
            s.due_on[~s.active] = now + s.on_us[~s.active]
            s.schedule()
        self.interlocks.start(now)

    def _timers(self, now: int, out: EdgeParts) -> None:
        for s in self._slots:
            s.fire(now, out)
        self.interlocks.fire(now, self.valid, out)

    def _accepted(self, tag: np.ndarray, batch: ReadingBatch) -> Accepted | None:
        """The accepted rows (int64 tags ``tag`` of ``batch``) as (tag, ts, value, quality, arrival
        position, unique, old), sorted by (tag, ts, arrival) unless every tag appears once; then
        ``old`` holds their tag rows as before the batch (else None). None when there are none."""
        n = tag.size
        if n == 0:
            return None
        ts, value, quality = batch.ts, batch.value, batch.quality
        # One sample per tag (the usual poll) needs no order and makes one round. Only the
        # last writer of a repeated index survives in the rows' mark, which is how repeats
        # show; the rows gathered to see it are the rows the round updates.
        unique = n == 1
        cached: np.ndarray | None = None
        old = None
        if n <= _INT32_MAX:
            if self._pos.size < n:
                self._pos = np.arange(n, dtype=np.int32)
            cached = self._pos[:n]  # read-only use: a view of the cached positions
            self._mark[tag] = cached
            old = np.take(self._tab, tag)
            unique = np.count_nonzero(old["mark"] == cached) == n  # count_nonzero: .all() costs 3x
        pos = cached if unique and cached is not None else np.arange(n)
        # no tag holds a sample newer than _newest: a batch none older than it keeps every
        # sample without reading the tags' ts (the usual poll)
        in_order = int(ts.min()) >= self._newest
        if unique:
            if old is None:
                old = np.take(self._tab, tag)
            keep = None if in_order else ts >= old["ts"]
        else:
            old = None
            order = np.lexsort((ts, tag))
            tag, ts, value, quality, pos = tag[order], ts[order], value[order], quality[order], pos[order]
            keep = None if in_order else ts >= self.ts[tag]
        if keep is not None and np.count_nonzero(keep) < keep.size:
            # a comm-failure marker is never out of order, and real data always replaces one
            keep |= (quality == COMM_FAILURE) | (np.take(self.quality, tag) == COMM_FAILURE)
        if keep is not None and np.count_nonzero(keep) < keep.size:
            if not unique:  # once a sample of a tag is accepted, its later samples are too
                i = np.arange(tag.size)
                first = np.ones(tag.size, bool)
                first[1:] = tag[1:] != tag[:-1]
                start = np.maximum.accumulate(np.where(first, i, 0))
                keep = np.maximum.accumulate(np.where(keep, i, -1)) >= start
            tag, ts, value, quality, pos = tag[keep], ts[keep], value[keep], quality[keep], pos[keep]
            if old is not None:
                old = old[keep]
        if tag.size == 0:
            return None
        return tag, ts, value, quality, pos, unique, old

    def _rounds(self, rows: Accepted, stale: bool) -> list[Round]:
        """The rounds of accepted rows: the k-th sample of every tag forms round k. ``stale``:
        the tag rows gathered with them no longer hold (gather them again)."""
        tag, ts, value, quality, pos, unique, old = rows
        if unique:
            return [(tag, ts, value, quality, None if stale else old)]
        first = np.ones(tag.size, bool)
        first[1:] = tag[1:] != tag[:-1]
        pos = np.arange(tag.size)
        rank = pos - np.maximum.accumulate(np.where(first, pos, 0))
        return [
            (tag[m], ts[m], value[m], quality[m], None)
            for m in (rank == k for k in range(int(rank.max()) + 1))
        ]

    # --- what is active now ----------------------------------------------------------------

    def active(self) -> list[ActiveCondition]:
        """Every active condition, most severe first (by severity, then ``rank``: a gas level 2
        outranks a level 1 of the same severity), then oldest first."""
        state = self._state()
        rs = self.rules
        out = []
        for r in np.flatnonzero(state["active"]).tolist():
            tag = int(rs.tag[r])
            kind = RuleKind(int(rs.kind[r]))
            value = (
                float(self.value[tag]) if tag >= 0 and kind in _SHOWS_TAG_VALUE else float(state["last"][r])
            )
            out.append(
                ActiveCondition(
                    rule=r,
                    key=rs.keys[r],
                    subject=rs.subjects[r],
                    kind=kind,
                    severity=Severity(int(state["sev"][r])),
                    value=value,
                    limit=float(state["lim"][r]),
                    since_us=int(state["since"][r]),
                    description=rs.descriptions[r],
                    latched=bool(rs.latched[r]),
                    rank=rank_of(kind),
                )
            )
        out.sort(key=lambda c: (-c.severity, -c.rank, c.since_us, c.rule))
        return out

    def describe(self, edges: ConditionEdges) -> list[str]:
        """One log line per edge (until the alarm manager takes the edges)."""
        rs = self.rules
        return [
            f"{to_datetime(ts).isoformat()} {rs.keys[r]} {'ACTIVE' if on else 'CLEARED'} "
            f"{LABELS[RuleKind(int(rs.kind[r]))]} value={v:.6g} limit={lim:.6g} severity={Severity(sev).name}"
            for r, on, ts, v, lim, sev in edges.rows()
        ]

    def interlock_status(self, which: np.ndarray | None = None) -> list[InterlockStatus]:
        """Every interlock's status, or those of the interlock indices ``which``."""
        return self.interlocks.status(self.value, self.valid, self.held, self.ts, which)

    def sif_state(self) -> tuple[np.ndarray, np.ndarray]:
        """The interlocks whose inputs' ability to vote changed since the last call (every one
        on the first call and after a restore) and whether each can act (rules.interlock,
        ``sif_state``)."""
        if self._all_dirty:  # before the first batch, or restored: counts of the tag state now
            self.interlocks.recount(self.value, self.valid, self.held, self.ts)
        which = self.interlocks.take_recoded()
        if not which.size:  # the usual batch: nothing to compute
            return which, np.empty(0, np.int8)
        return which, self.interlocks.sif_state(which)

    # --- persistence -------------------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        state = initial_rule_state(self.rules)
        for s in (*self._slots, self.interlocks.slots):
            s.export(state)
        return state

    def snapshot(self) -> EngineSnapshot:
        rings = self._roc.rings() if self._roc is not None else {}
        return EngineSnapshot.build(
            self.rules, self._state(), (self.value, self.quality, self.ts, self.held), rings
        )

    def restore(self, snap: EngineSnapshot) -> None:
        """Resume from a snapshot (possibly of another rule set); the next call restarts timers."""
        state, tags = snap.for_rules(self.rules)
        for s in (*self._slots, self.interlocks.slots):
            s.load(state)
        if self._roc is not None:
            self._roc.reseed(snap.rings_for(self.rules, ROC_GRAIN))
        if self._ahead is not None:
            self._ahead.on = bool(self._ahead.slots.active.any())
        self._set_tags(tags)
        self.valid[:] = ~is_bad(self.quality) & ~np.isnan(self.value)
        self.limits.refresh()
        self.quiet.settle(np.arange(self.rules.n_tags))
        self._all_dirty = True
        self.born = None

    def align_conditions(self, stored: Mapping[str, tuple[bool, int]]) -> int:
        """Make every rule's condition what the alarm store says (rule key -> active, since;
        a key it does not hold is idle), the delays of a changed rule stopped; how many changed.
        The alarm state is committed with the rules' conditions, the rule state file only on a
        clean stop: after a crash this puts the engine back in step with the alarms, so a
        condition that cleared meanwhile returns to normal and one still active is not raised
        again."""
        snap = self.snapshot()
        state = snap.rules
        want = np.zeros(len(self.rules), bool)
        since = state["since"].copy()
        index = {k: i for i, k in enumerate(self.rules.keys)}
        for key, (active, at) in stored.items():
            i = index.get(key)
            if i is not None:
                want[i], since[i] = active, at
        flip = state["active"] != want
        changed = int(flip.sum())
        if changed:
            state["active"][flip] = want[flip]
            state["since"][flip] = since[flip]
            state["due_on"][flip] = NEVER
            state["due_off"][flip] = NEVER
            self.restore(snap)
        return changed

    def _set_tags(self, tags: tuple[np.ndarray, ...]) -> None:
        """Tag state from (value, quality, ts, held) columns, into the engine's own arrays."""
        self.value[:], self.quality[:], self.ts[:], self.held[:] = tags
        # at least every tag's ts (only lowered by anything but the accepted samples)
        self._newest = int(self.ts.max(initial=UNSEEN))


_SHOWS_TAG_VALUE = LIMIT_KINDS | {RuleKind.OUT_OF_RANGE, RuleKind.STATE, RuleKind.BAD_QUALITY}


def _aligned_rows(n: int) -> np.ndarray:
    """``n`` zeroed TAG_ROWs starting on a 64-byte boundary (malloc gives 16), so each row is
    exactly one cache line."""
    size = TAG_ROW.itemsize
    buf = np.zeros(n * size + 64, np.uint8)
    off = -buf.ctypes.data % 64
    return buf[off : off + n * size].view(TAG_ROW)


_EDGE_DTYPES = tuple(c.dtype for c in dataclasses.astuple(ConditionEdges.empty()))


def _edges(out: EdgeParts) -> ConditionEdges:
    if not out:
        return ConditionEdges.empty()
    # one part needs no concatenation: its columns are fresh arrays of the step that made them
    cols = out[0] if len(out) == 1 else tuple(np.concatenate(c) for c in zip(*out, strict=True))
    if any(c.dtype != dt or c.ndim != 1 for c, dt in zip(cols, _EDGE_DTYPES, strict=True)):
        return ConditionEdges.of(*cols).by_rule()
    # the parts' columns have the edges' dtypes already (the usual batch): no conversion pass
    if cols[0].size > 1:
        order = np.argsort(cols[0], kind="stable")
        cols = tuple(c[order] for c in cols)
    return ConditionEdges(*cols)
