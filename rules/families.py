"""Rule families evaluated on every sample of their one tag: limits and data-quality checks.

``LimitFamily`` lays the (up to) four limit rules of each tag out as a ``(tags, 4)`` slot
matrix: columns 0-1 are LOW (LL, L, O2 low), columns 2-3 HIGH (H, HH, gas levels, O2 high),
so one row gather serves a tag's limits and the direction is fixed per column. A sample
inside its tag's quiet band, of a tag with nothing active or running, never reaches them
(QuietBand); the few hundred that do per batch go through the limits' own step, with the
slots' deadlines and delays in one record per tag. ``TagCheck`` holds one check kind (at most one rule per tag). Both follow the
per-kind definitions in rules/reference.py exactly. ROC keeps, per rule, a ring of at most
``ROC_GRAIN + 2`` kept samples (time-ordered, one per window / ROC_GRAIN at most: the ones
in the last window plus the reference just before it), so its state is bounded whatever the
sample rate.
"""

from __future__ import annotations

import numpy as np

from core.conditions import LIMIT_KINDS, LOW_KINDS, RuleKind
from rules.machine import EdgeParts, Slots, unique_sorted
from rules.ruleset import NEVER, RuleSet

__all__ = ["CHECK_KINDS", "LimitFamily", "QuietBand", "TagCheck"]

K = RuleKind
US_PER_MIN = 60_000_000
ROC_GRAIN = 20  # as rules/reference.py: ROC keeps at most one sample per window / ROC_GRAIN
_SIGN = np.array([1.0, 1.0, -1.0, -1.0])  # LimitFamily columns: LOW, LOW, HIGH, HIGH
_SIGN8 = np.stack((_SIGN, -_SIGN), axis=1).reshape(-1)  # LimitFamily.thr: per slot set, clear
CHECK_KINDS = (K.BAD_QUALITY, K.OUT_OF_RANGE, K.STALE, K.FROZEN, K.ROC, K.STATE, K.CLOCK_AHEAD)


class LimitFamily:
    def __init__(self, rules: RuleSet) -> None:
        n_tags = rules.n_tags
        slot = _slot_matrix(rules)
        self.slots = Slots(rules, slot.reshape(-1))
        has = slot >= 0
        rule = np.where(has, slot, 0)
        self.set_at = np.where(has, rules.set_at[rule], np.nan)
        self.clear_at = np.where(has, rules.clear_at[rule], np.nan)
        # One row per tag, every comparison as ``x <= thr``: a slot sets at sign * v <= sign *
        # set_at and clears at sign * v > sign * clear_at, that is -sign * v <= -above(sign *
        # clear_at) with above() the next float up (nothing lies between; +inf, which nothing
        # exceeds, becomes NaN, which nothing reaches). The sample, times _SIGN8, is compared
        # with the row in one call: per slot its set, then its clear threshold (column 2 * slot
        # + active is the condition against its state). Negation is exact.
        up = self.clear_at * _SIGN
        with np.errstate(invalid="ignore"):
            up = np.where(up == np.inf, np.nan, np.nextafter(up, np.inf))
        self.thr = np.stack((self.set_at * _SIGN, -up), axis=2).reshape(n_tags, 8)
        self._thr_rows = self.thr.view(np.dtype((np.void, 64))).reshape(n_tags)  # 1-D: fast gather
        self._signs, self._evens = np.empty(0), np.empty(0, np.int64)  # _scratch
        self.engaged = np.zeros(n_tags, bool)  # any slot of the tag active or with a deadline
        # the least extreme limit on each side: a value beyond it hits some limit
        with np.errstate(invalid="ignore"):
            self.low_max = np.fmax(self.set_at[:, 0], self.set_at[:, 1])
            self.high_min = np.fmin(self.set_at[:, 2], self.set_at[:, 3])
        # The slots' deadlines and delays interleaved, one 128-byte row (two cache lines) per
        # tag: (tag, slot, [due_on, due_off, on_us, off_us]). The Slots keep their 1-D arrays
        # as strided views of it, so fire, export and load work unchanged, while a live tag's
        # step gathers and puts back one row instead of a line from each of four arrays (issue 10).
        s = self.slots
        self.rec = _aligned_int64((n_tags, 4, 4))
        for f, name in enumerate(("due_on", "due_off", "on_us", "off_us")):
            self.rec[:, :, f] = getattr(s, name).reshape(-1, 4)
            setattr(s, name, self.rec[:, :, f].reshape(-1, copy=False))
        self._rec_rows = self.rec.reshape(n_tags, 16).view(np.dtype((np.void, 128))).reshape(n_tags)

    def round(
        self, tag: np.ndarray, t: np.ndarray, v: np.ndarray, ok: np.ndarray, now: int, out: EdgeParts
    ) -> None:
        # 1-D gathers of whole rows as one void item each, and 1-D ufuncs on (tags x 8) flat
        # arrays: a 2-D gather or a broadcast costs several µs per call on a few hundred tags
        th = self._thr_rows[tag].view(np.float64)
        # an invalid sample compares as NaN: no limit sets or clears on it
        sv = np.repeat(v if np.count_nonzero(ok) == ok.size else np.where(ok, v, np.nan), 8)
        signs, evens = self._scratch(tag.size)
        sv *= signs
        self._step(tag, t, v, np.less_equal(sv, th), evens, now, out)

    def _scratch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """For ``n`` live tags: _SIGN8 repeated ``n`` times, and 0, 2, 4, ... (one per slot);
        views of arrays grown to the largest ``n`` seen."""
        if self._signs.size < 8 * n:
            self._signs = np.tile(_SIGN8, n)
            self._evens = np.arange(0, 8 * n, 2)
        return self._signs[: 8 * n], self._evens[: 4 * n]

    def _step(
        self,
        tag: np.ndarray,
        t: np.ndarray,
        v: np.ndarray,
        cmp: np.ndarray,
        evens: np.ndarray,
        now: int,
        out: EdgeParts,
    ) -> None:
        """Slots.step for the four slots of each of ``tag`` (unique); ``cmp`` per slot: its set,
        then its clear condition; ``evens``: 0, 2, 4, ... one per slot.

        The same transition, written for the limits' batch: a few hundred live tags, where
        every numpy call costs its fixed 1-4 µs whatever the size. It steps every slot of the
        rows instead of picking the ones that can change first: a slot with no condition
        against its state and no deadline running goes through unchanged (its deadlines stay
        NEVER, nothing fires). A slot's one running deadline is its on-deadline while idle and
        its off-deadline while active, so one array ``d`` stands for both here. Slots are flat
        (tag-major, 4 per tag): position p is column p & 3 of live tag p >> 2."""
        s = self.slots
        busy = s.active.view(np.uint32)[tag]  # a tag's four bools as one uint32: one gather
        act = busy.view(np.bool_)
        rows = self._rec_rows[tag]
        r = rows.view(np.int64).reshape(-1, 4)  # per slot: due_on, due_off, on_us, off_us
        chg = cmp[evens + act]  # a condition against the state: set while idle, clear while active
        d0 = np.where(act, r[:, 1], r[:, 0])
        idle0 = d0 == NEVER
        d = np.where(act, r[:, 3], r[:, 2])
        d += now
        np.copyto(d, d0, where=~idle0)  # a running deadline keeps its time
        np.copyto(d, NEVER, where=~chg)  # no condition against the state: the deadline stops
        fired = d <= now
        np.copyto(d, NEVER, where=fired)
        r[:, 0] = np.where(act, NEVER, d)
        r[:, 1] = np.where(act, d, NEVER)
        self._rec_rows[tag] = rows
        # the slots with a condition, as slot indexes: the running, started and fired are among them
        p = np.flatnonzero(chg)
        if p.size == 0:
            self.engaged[tag] = busy != 0
            return
        running = d != NEVER
        row = p >> 2
        slot = tag[row] * 4
        slot += p & 3
        vr = v[row]
        s.last[slot] = vr
        started = (running & idle0)[p]
        if np.count_nonzero(started):
            s.listed(slot[started], d[p[started]])
        f = np.flatnonzero(fired[p])
        if f.size:
            fs, fr = slot[f], row[f]
            went = ~act[p[f]]  # fired with a condition against the state: idle ones went active
            s.active[fs] = went
            ts = t[fr]
            s.since[fs[went]] = ts[went]
            out.append((s.rule[fs], went, ts, vr[f], s.lim[fs], s.sev[fs]))
            act ^= fired
        act |= running  # busy: active or a deadline running
        self.engaged[tag] = busy != 0

    def refresh(self) -> None:
        s = self.slots
        busy = s.active | (s.due_on != NEVER) | (s.due_off != NEVER)
        self.engaged = busy.reshape(-1, 4).any(axis=1)


def _slot_matrix(rules: RuleSet) -> np.ndarray:
    """The limit rules of each tag as a (tags, 4) matrix, -1 where none: LOW from column 0 and
    HIGH ending at column 3, each side in rule order (LL before L, H before HH)."""
    slot = np.full((rules.n_tags, 4), -1, np.int64)
    rule = np.flatnonzero(np.isin(rules.kind, list(LIMIT_KINDS)))
    low = np.isin(rules.kind[rule], list(LOW_KINDS))
    thirds = []  # per side, its first rule (in rule order) past two on its tag's side
    for side, name in ((low, "LOW"), (~low, "HIGH")):
        r = rule[side]
        r = r[np.argsort(rules.tag[r], kind="stable")]  # by tag, each tag's in rule order
        t = rules.tag[r]
        count = np.bincount(t, minlength=rules.n_tags)[t]  # per rule: its tag's on this side
        rank = np.arange(r.size) - np.searchsorted(t, t)  # per rule: its place among them
        if (rank >= 2).any():
            third = int(r[rank >= 2].min())
            thirds.append((third, rules.tag_keys[rules.tag[third]], name))
        else:
            slot[t, rank if name == "LOW" else 4 - count + rank] = r
    if thirds:
        _, key, name = min(thirds)
        raise ValueError(f"{key}: more than two {name} limits")
    return slot


def _aligned_int64(shape: tuple[int, ...]) -> np.ndarray:
    """A zeroed int64 array starting on a 64-byte boundary, so each 128-byte row of the
    limits' record is exactly two cache lines."""
    n = int(np.prod(shape))
    buf = np.zeros(n + 8, np.int64)
    off = (-buf.ctypes.data % 64) // 8
    return buf[off : off + n].reshape(shape)


class TagCheck:
    """One data-quality, rate or state check: slot i belongs to tag ``tags[i]``."""

    def __init__(self, rules: RuleSet, kind: RuleKind) -> None:
        self.kind = kind
        rule = np.flatnonzero(rules.kind == kind)
        self.tags = rules.tag[rule]
        self.slot_of = np.full(rules.n_tags, -1, np.int64)
        self.slot_of[self.tags] = np.arange(rule.size)
        self.slots = Slots(rules, rule)
        self.set_at, self.clear_at = rules.set_at[rule], rules.clear_at[rule]
        self.window = rules.window_us[rule]
        self.p0, self.p1 = rules.params[rule, 0], rules.params[rule, 1]
        self.everywhere = bool(np.array_equal(self.tags, np.arange(rules.n_tags)))
        if kind == K.ROC:  # ring of kept samples: slot i's k-th oldest at (head[i] + k) % cap
            self.cap = ROC_GRAIN + 2
            self.ring_ts = np.zeros((rule.size, self.cap), np.int64)
            self.ring_v = np.full((rule.size, self.cap), np.nan)
            self.head = np.zeros(rule.size, np.int64)
            self.count = np.zeros(rule.size, np.int64)
        self.on = False  # CLOCK_AHEAD: any slot active

    def __len__(self) -> int:
        return len(self.slots)

    def round(
        self, tag: np.ndarray, t: np.ndarray, v: np.ndarray, ok: np.ndarray, now: int, out: EdgeParts
    ) -> None:
        if self.everywhere:
            slot, rows = tag, None
        else:
            slot = self.slot_of[tag]
            rows = np.flatnonzero(slot >= 0)
            if rows.size == 0:
                return
            slot, t, v, ok = slot[rows], t[rows], v[rows], ok[rows]
        s, k = self.slots, self.kind
        if k == K.BAD_QUALITY:
            pick = np.flatnonzero(~ok | s.active[slot])
            s.step(slot[pick], ~ok[pick], ok[pick], t[pick], v[pick], now, out)
        elif k == K.OUT_OF_RANGE:
            x = np.maximum(self.p0[slot] - v, v - self.p1[slot])
            setc = ok & (x >= self.set_at[slot])
            pick = np.flatnonzero(setc | s.active[slot])
            clr = ok[pick] & (x[pick] < self.clear_at[slot[pick]])
            s.step(slot[pick], setc[pick], clr, t[pick], v[pick], now, out)
        elif k == K.STATE:
            x = np.abs(v - self.p0[slot])
            s.step(slot, ok & (x <= self.set_at[slot]), ok & (x > self.clear_at[slot]), t, v, now, out)
        elif k in (K.STALE, K.CLOCK_AHEAD):
            return  # decided by arrivals (arrive, ahead), not by samples
        elif k == K.ROC:
            self._roc(slot, t, v, ok, now, out)
        else:
            self._frozen(slot, t, v, ok, now, out)

    def arrive(self, tag: np.ndarray, now: int, out: EdgeParts) -> None:
        """STALE: rows of ``tag`` (repeats allowed) arrived at ``now``."""
        slot = self.slot_of[tag]
        slot = slot[slot >= 0]
        if slot.size == 0:
            return
        s = self.slots
        was = s.active[slot]
        if was.any():
            f = unique_sorted(slot[was])
            gap = (now - s.aux_ts[f]) / 1e6
            s.active[f] = False
            out.append((s.rule[f], s.active[f], np.full(f.size, now, np.int64), gap, s.lim[f], s.sev[f]))
        s.aux_ts[slot] = now
        s.due_on[slot] = now + s.on_us[slot]
        s.watch(slot, now + int(s.on_us[slot].min()))

    def ahead(
        self, tag: np.ndarray, ts: np.ndarray, now: int, limit: int, any_over: bool, out: EdgeParts
    ) -> None:
        """CLOCK_AHEAD: rows of ``tag`` stamped ``ts`` arrived at ``now``; a tag whose newest
        stamp is past ``limit`` is ahead, any other tag with rows is not (edges at ``now``)."""
        if not any_over and not self.on:
            return  # nothing to set and nothing to clear
        slot = self.slot_of[tag]
        m = slot >= 0
        slot, ts = slot[m], ts[m]
        if slot.size == 0:
            return
        order = np.lexsort((ts, slot))
        slot, ts = slot[order], ts[order]
        last = np.ones(slot.size, bool)
        last[:-1] = slot[1:] != slot[:-1]
        slot, newest = slot[last], ts[last]
        over = newest > limit
        self.slots.step(slot, over, ~over, now, (newest - now) / 1e6, now, out)
        self.on = bool(self.slots.active.any())

    def _roc(
        self, slot: np.ndarray, t: np.ndarray, v: np.ndarray, ok: np.ndarray, now: int, out: EdgeParts
    ) -> None:
        s, cap = self.slots, self.cap
        win = np.maximum(self.window[slot], 1)
        grain = -(-win // ROC_GRAIN)
        head, count = self.head[slot], self.count[slot]
        newest_t = self.ring_ts[slot, (head + count - 1) % cap]
        # an invalid sample (value in the gap unknown) or real data older than the newest kept
        # (only after a comm-failure marker) restarts the measurement
        reset = ~ok | ((count > 0) & (t < newest_t))
        count = np.where(reset, 0, count)
        head = np.where(reset, 0, head)
        app = np.flatnonzero(ok & ((count == 0) | (t >= newest_t + grain)))
        pos = (head[app] + count[app]) % cap
        self.ring_ts[slot[app], pos], self.ring_v[slot[app], pos] = t[app], v[app]
        count[app] += 1
        # keep the newest kept sample at or before t - window (the reference) and what follows
        cut = t - win
        k = np.arange(cap)
        stamps = self.ring_ts[slot[:, None], (head[:, None] + k) % cap]
        n_old = ((k < count[:, None]) & (stamps <= cut[:, None])).sum(axis=1)
        drop = np.maximum(n_old - 1, 0)
        head, count = (head + drop) % cap, count - drop
        self.head[slot], self.count[slot] = head, count
        ref_t, ref_v = self.ring_ts[slot, head], self.ring_v[slot, head]
        top = (head + count - 1) % cap
        kept = count > 0
        s.aux_ts[slot], s.aux_v[slot] = np.where(kept, ref_t, 0), np.where(kept, ref_v, np.nan)
        s.aux2_ts[slot] = np.where(kept, self.ring_ts[slot, top], 0)
        s.aux2_v[slot] = np.where(kept, self.ring_v[slot, top], np.nan)
        x = np.abs(v - ref_v) / win * US_PER_MIN
        setc = ok & (x >= self.set_at[slot])
        clr = ok & (ref_t <= cut) & (x < self.clear_at[slot])  # clears only on a full window
        # ROC has no off-delay: its due_off is the silence deadline, restarted by valid samples
        s.due_off[slot[ok]] = NEVER
        s.step(slot, setc, clr, t, x, now, out)
        # still active after a valid sample: clear on the timer if no valid sample arrives for a
        # window (a held value has no rate; a subscription reports changes only)
        quiet = slot[ok & s.active[slot]]
        if quiet.size:
            s.due_off[quiet] = now + np.maximum(self.window[quiet], 1)
            s.watch(quiet, int(s.due_off[quiet].min()))

    def rings(self) -> dict[int, tuple[tuple[int, ...], tuple[float, ...]]]:
        """ROC: rule index -> kept samples, oldest first (snapshots)."""
        out = {}
        for i in np.flatnonzero(self.count).tolist():
            pos = (self.head[i] + np.arange(self.count[i])) % self.cap
            out[int(self.slots.rule[i])] = (
                tuple(self.ring_ts[i, pos].tolist()),
                tuple(self.ring_v[i, pos].tolist()),
            )
        return out

    def reseed(self, saved: dict[int, tuple[tuple[int, ...], tuple[float, ...]]]) -> None:
        """ROC after a restore: each ring as saved, else from the reference and newest sample
        (``aux``/``aux2``: snapshots without rings)."""
        self._reseed()
        for i, r in enumerate(self.slots.rule.tolist()):
            if r in saved:
                ts, v = saved[r]
                n = len(ts)  # fitted to the window by rings_for: at most ROC_GRAIN + 1
                self.head[i], self.count[i] = 0, n
                self.ring_ts[i, :n], self.ring_v[i, :n] = ts, v
                s = self.slots
                s.aux_ts[i], s.aux_v[i], s.aux2_ts[i], s.aux2_v[i] = ts[0], v[0], ts[-1], v[-1]

    def _reseed(self) -> None:
        s = self.slots
        has = ~np.isnan(s.aux_v)
        two = has & ~np.isnan(s.aux2_v) & (s.aux2_ts > s.aux_ts)
        self.head[:] = 0
        self.count[:] = has.astype(np.int64) + two
        self.ring_ts[:, 0], self.ring_v[:, 0] = s.aux_ts, s.aux_v
        self.ring_ts[:, 1], self.ring_v[:, 1] = s.aux2_ts, s.aux2_v
        s.aux_ts[~has], s.aux_v[~has] = 0, np.nan
        one = has & ~two
        s.aux2_ts[one], s.aux2_v[one] = s.aux_ts[one], s.aux_v[one]
        s.aux2_ts[~has], s.aux2_v[~has] = 0, np.nan

    def _frozen(
        self, slot: np.ndarray, t: np.ndarray, v: np.ndarray, ok: np.ndarray, now: int, out: EdgeParts
    ) -> None:
        s = self.slots
        av = s.aux_v[slot]
        first = np.isnan(av)
        moved = ok & ~first & (np.abs(v - av) > self.clear_at[slot])
        anchor = ok & (first | moved)
        s.aux_v[slot[anchor]] = v[anchor]
        s.aux_ts[slot[anchor]] = t[anchor]
        s.step(slot, ok & ~moved, moved, t, s.aux_v[slot], now, out)
        if moved.any():
            m = slot[moved]
            s.due_on[m] = now + s.on_us[m]
            s.watch(m, int(s.due_on[m].min()))


class QuietBand:
    """Per tag, the open interval of values on which no limit, range or quality rule can act.

    A valid sample inside it, of a tag with nothing active or running (``busy``), changes no
    rule, so the families never see it; most samples of a plant in normal operation are such.
    Tags with per-sample state (FROZEN, ROC, STATE) are always busy.

    The test runs on every sample, so it reads the engine's tag rows (``row_lo``/``row_hi``,
    columns of them) rather than arrays of its own: the band, empty (lo = +inf) while the tag
    is busy, so the one gathered row answers both questions.
    """

    def __init__(
        self,
        rules: RuleSet,
        limits: LimitFamily,
        checks: list[TagCheck],
        row_lo: np.ndarray,
        row_hi: np.ndarray,
    ) -> None:
        self.limits, self.checks = limits, checks
        self.lo = np.where(np.isnan(limits.low_max), -np.inf, limits.low_max)
        self.hi = np.where(np.isnan(limits.high_min), np.inf, limits.high_min)
        self.always = np.zeros(rules.n_tags, bool)
        for c in checks:
            if c.kind == K.OUT_OF_RANGE:
                # conservative by far more than rounding: inside, max(lo - v, v - hi) < set_at
                eps = 1e-9 * np.maximum.reduce([np.ones_like(c.p0), np.abs(c.p0), np.abs(c.p1), c.set_at])
                self.lo[c.tags] = np.fmax(self.lo[c.tags], c.p0 - c.set_at + eps)
                self.hi[c.tags] = np.fmin(self.hi[c.tags], c.p1 + c.set_at - eps)
            elif c.kind in (K.FROZEN, K.ROC, K.STATE):
                self.always[c.tags] = True
        self.row_lo, self.row_hi = row_lo, row_hi
        self.row_hi[:] = self.hi
        self.idle_lo = np.where(self.always, np.inf, self.lo)  # the row's lo while not busy
        self.row_lo[:] = self.idle_lo

    @staticmethod
    def live(v: np.ndarray, bad: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Positions of the samples some rule must see: samples ``v``, invalid where ``bad``,
        with their tags' ``lo``/``hi`` as in the tag rows (so busy tags have an empty band)."""
        seen = np.less_equal(v, lo)
        seen |= np.greater_equal(v, hi)
        seen |= bad  # NaN, outside every band, is bad already
        return np.flatnonzero(seen)

    def settle(self, tag: np.ndarray) -> None:
        """Recompute whether the tags whose rules just ran are busy (their row band)."""
        busy = self.limits.engaged[tag]  # a copy; always-busy tags have idle_lo = +inf
        for c in self.checks:
            slot = c.slot_of[tag]
            has = slot >= 0
            s = c.slots
            sl = slot[has]
            busy[has] |= s.active[sl] | (s.due_on[sl] != NEVER) | (s.due_off[sl] != NEVER)
        self.row_lo[tag] = np.where(busy, np.inf, self.idle_lo[tag])
