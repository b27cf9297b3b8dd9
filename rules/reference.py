"""ReferenceEngine: scalar Python that *defines* what the vectorized RuleEngine computes.

Tests feed both the same calls and require identical edges and snapshots. Semantics:

Inputs. ``evaluate(batch, now)`` = arrival phase, sample phase (with the cross-tag phase after
each distinct sample ts), then timer phase at ``now``; ``tick(now)`` = timer phase only. The
first call after construction or restore also *starts* the engine at ``now`` (``born``): stale
timers start at ``born + stale``, and an out-of-service interlock's condition becomes due at
``born``.

Time base. Delays (on-delay, off-delay, response time, approved bypass duration, frozen time)
run on arrival time: a deadline starts at the ``now`` of the call whose evaluation first
met the condition and expires when a later evaluation or timer phase has ``now >= deadline``,
so a late sample can never satisfy its own delay. Edges of data-driven transitions (an
evaluation with no delay left) report the sample time ``t`` defined per rule below; timer
transitions report ``now``. ROC rates are computed in sample time.

Clock ahead. First, every row stamped more than ``rules.ahead_us`` after ``now`` is
*rejected*: counted (``rejected``), and otherwise as if it had not arrived (it updates no tag
state, runs no rule and is no arrival for STALE). CLOCK_AHEAD of every tag with rows in the
batch: set = its newest stamp in the batch is beyond that limit, clear = it is not, both at
``t = now``, value = that stamp minus ``now`` in s.

Samples. The remaining rows are taken in (ts, tag, arrival) order and grouped by ts. A sample
of a tag is *accepted* when its quality is BAD_COMM_FAILURE (a collector's link-loss marker:
it states the link *now*, whatever its stamp), or the tag's current quality is
BAD_COMM_FAILURE (real data always replaces a marker, even from a device clock running
behind the gather time of the marker), or its ts >= the tag's newest accepted ts (otherwise
out-of-order data never moves state backwards; equal ts is accepted). A sample is *valid*
unless its quality is BAD or its value NaN (UNCERTAIN counts). Each accepted sample updates
the tag's value, quality and ts (and ``held``, the last valid value, when valid), then runs
every rule of that tag (rule index order) with ``t`` = the sample ts. After each ts group,
the rules over several tags (DEVIATION, MISMATCH, interlocks) that read a tag with an
accepted sample in the group run on the tags' values at that point, with ``t`` = the newest ts
among the tags they read (so a trip demand lasting one sample inside a batch is seen). On the
first evaluate after start, every such rule runs once more after the samples. A rule with
none of its tags seen is skipped.

Transition (every rule but STALE). From the sample or tag state a rule gets ``x``, a *set*
and a *clear* condition. Idle: while *set* holds a deadline ``now + on_delay`` runs from the
first such evaluation; an evaluation with *set* and ``now >= deadline`` activates the rule at
``t``. Any evaluation without *set* stops the deadline. Active: the same with *clear* and
``off_delay``. Neither *set* nor *clear* holds for an invalid input, so NaN or BAD quality
holds the state and stops running delays. The timer phase activates/clears every rule whose
deadline is ``<= now``, at ``now``. Edges carry ``value`` = the reported value of the
evaluation that started the deadline (or of the transition itself), ``limit`` and ``severity``.

Per kind (HIGH: set ``x >= set_at``, clear ``x < clear_at``; LOW mirrored; v = tag value):
limits and gas levels x = v; OUT_OF_RANGE x = max(lo - v, v - hi); STATE x = |v - alarm
value| (LOW); BAD_QUALITY set = invalid, clear = valid, never held. ROC keeps a ring of
valid samples in ts order: a valid sample older than the newest kept one (possible only after
a comm-failure marker) empties it first; the sample is kept when the ring is empty or it is at
least ``grain = ceil(window / ROC_GRAIN)`` after the newest kept one; then every kept sample
before the newest one at or before ``t - window`` (the *reference*) is dropped; with none
that old, the oldest kept sample is the reference. x = |v - v_ref| / window per minute;
set = x >= set_at, clear = the reference is at or before ``t - window`` (a full window) and
x < clear_at. ROC has no off-delay: each valid sample stops its ``due_off`` before the
transition and, when the rule is active after it, restarts it at ``now + window``, so the
timer clears it when no valid sample arrives for a window (a value held that long has no
rate; a subscription reports changes only). An invalid sample empties the ring (the value in the gap is unknown) and holds.
So a step is one alarm while it lies inside the window. Snapshots keep the ring (and the
reference in aux, the newest kept sample in aux2); a restore takes the ring fitted to the
rule's window (rules/snapshot.py ``rings_for``), or [aux, aux2] from a snapshot without it. FROZEN (LOW, x = |v - anchor|) re-anchors and clears when the value moves beyond
resolution, and its flat time restarts (at ``now``) then; it reports the anchor value and,
when the anchor lies within ``band`` of an alarm limit, HIGH severity and that limit. STALE is
about delivery, not sample time (a polled OPC UA value keeps its old source timestamp): in the
arrival phase every tag with any row in the batch, late or not, clears it at ``now`` (value:
the gap in s) and restarts its deadline at ``now + stale``; only the timer activates it
(value: seconds since the last arrival). DEVIATION / MISMATCH: x = |v - v2| (HIGH).

Interlocks: an input is *bypassed* when its bypass switch's last valid value (``held``) is
>= 0.5: a switch that turns invalid keeps its last known state, so neither the voting nor the
bypass age restarts; it is *failed* when invalid and not bypassed; the rest vote. N_eff =
voting inputs, M_eff = min(M, N_eff); TRIP_DEMAND set = N_eff > 0 and votes >= M_eff (held
while every non-bypassed input failed); NO_ACTION set = its response check is open (aux_v = 1:
opened when TRIP_DEMAND activates, closed when the final element is seen valid and within
tolerance of its safe value or when NO_ACTION activates) and the feedback is not seen safe,
so its on-delay (= response time) runs from the demand's start whether or not the demand
still holds; clear = feedback valid and safe. An expired deadline does not fire (timer or
sample) while the feedback is invalid, but at the first evaluation with valid, unsafe
feedback (meanwhile the feedback's BAD_QUALITY reports it); INPUT_BYPASSED / BYPASS_OVERDUE set = any input
bypassed (t = newest bypass switch ts). The engine reports conditions; latching (gas) is the
alarm manager's, from ``RuleSet.latched``.
"""

from __future__ import annotations

import math
from itertools import groupby

from core.batch import ReadingBatch
from core.conditions import LOW_KINDS, PAIR_KINDS, TAG_KINDS, ConditionEdges, RuleKind, Severity
from core.quality import COMM_FAILURE
from rules.ruleset import NEVER, UNSEEN, RuleSet
from rules.snapshot import EngineSnapshot

__all__ = ["ReferenceEngine"]

K = RuleKind
US_PER_MIN = 60_000_000
ROC_GRAIN = 20  # ROC keeps at most one sample per window / ROC_GRAIN


def _valid(v: float, q: int) -> bool:
    return (q & 0xC0) not in (0x00, 0x80) and not math.isnan(v)


class ReferenceEngine:
    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        n = len(rules)
        self.active = [False] * n
        self.due_on, self.due_off = [NEVER] * n, [NEVER] * n
        self.since = [0] * n
        self.last = [math.nan] * n
        self.sev = [int(s) for s in rules.severity.tolist()]
        self.lim = rules.limit.tolist()
        self.aux_v, self.aux_ts = [math.nan] * n, [0] * n
        self.aux2_v, self.aux2_ts = [math.nan] * n, [0] * n
        self.value, self.quality, self.ts = (
            [math.nan] * rules.n_tags,
            [0] * rules.n_tags,
            [UNSEEN] * rules.n_tags,
        )
        self.held = [math.nan] * rules.n_tags  # last valid value
        self.rejected = 0  # samples stamped more than ``rules.ahead_us`` ahead of their arrival
        self.now = 0
        self.dirty = True  # run every cross-tag rule once on the first evaluate after start
        self.kind = [K(k) for k in rules.kind.tolist()]
        self.born: int | None = None
        self.by_tag: list[list[int]] = [[] for _ in range(rules.n_tags)]
        for r, (k, t) in enumerate(zip(self.kind, rules.tag.tolist(), strict=True)):
            if k in TAG_KINDS:
                self.by_tag[t].append(r)
        self.edges: list[tuple[int, bool, int, float, float, int]] = []
        self.ring: dict[int, list[tuple[int, float]]] = {r: [] for r, k in enumerate(self.kind) if k == K.ROC}
        self.pairs = [r for r, k in enumerate(self.kind) if k in PAIR_KINDS]
        il = rules.interlocks
        self.reads: list[list[int]] = []  # tags each interlock reads
        for i in range(len(il)):
            lo, hi = int(il.ptr[i]), int(il.ptr[i + 1])
            tags = il.in_tag[lo:hi].tolist() + [b for b in il.in_bypass[lo:hi].tolist() if b >= 0]
            self.reads.append([*tags, int(il.fe_tag[i])])
        # NO_ACTION rule -> its final element's feedback tag (its deadline waits for valid feedback)
        self.fe_of = {int(il.rule[i, 1]): int(il.fe_tag[i]) for i in range(len(il))}

    # --- calls ---------------------------------------------------------------------------

    def evaluate(self, batch: ReadingBatch, now_us: int) -> ConditionEdges:
        self._start(now_us)
        self.now = now_us
        stamps, tags = batch.ts.tolist(), batch.tag.tolist()
        ahead: dict[int, int] = {}  # tag -> its newest stamp in the batch
        for t, k in zip(stamps, tags, strict=True):
            ahead[k] = max(ahead.get(k, t), t)
        limit = now_us + self.rules.ahead_us
        for k in sorted(ahead):
            for r in self.by_tag[k]:
                if self.kind[r] == K.CLOCK_AHEAD:
                    x = (ahead[k] - now_us) / 1e6
                    self._transition(r, ahead[k] > limit, ahead[k] <= limit, now_us, x)
        fresh = [i for i, t in enumerate(stamps) if t <= limit]
        self.rejected += len(batch) - len(fresh)
        for k in sorted({tags[i] for i in fresh}):
            for r in self.by_tag[k]:
                if self.kind[r] == K.STALE:
                    self._arrive(r, now_us)
        rows = sorted((stamps[i], tags[i], i) for i in fresh)
        values, qualities = batch.value.tolist(), batch.quality.tolist()
        for _, group in groupby(rows, key=lambda row: row[0]):
            touched = set()
            for t, k, i in group:
                q = qualities[i]
                if not (q == COMM_FAILURE or self.quality[k] == COMM_FAILURE or t >= self.ts[k]):
                    continue
                self.value[k], self.quality[k], self.ts[k] = values[i], q, t
                ok = _valid(values[i], q)
                if ok:
                    self.held[k] = values[i]
                for r in self.by_tag[k]:
                    self._sample(r, t, values[i], ok)
                touched.add(k)
            if touched:
                self._cross(touched)
        if self.dirty:
            self.dirty = False
            self._cross(None)
        return self._timers(now_us)

    def _cross(self, touched: set[int] | None) -> None:
        """Rules over several tags that read any of ``touched`` (None: all)."""
        for r in self.pairs:
            if touched is None or int(self.rules.tag[r]) in touched or int(self.rules.tag2[r]) in touched:
                self._pair(r)
        for i, reads in enumerate(self.reads):
            if touched is None or not touched.isdisjoint(reads):
                self._interlock(i)

    def tick(self, now_us: int) -> ConditionEdges:
        self._start(now_us)
        return self._timers(now_us)

    # --- the transition -------------------------------------------------------------------

    def _transition(self, r: int, setc: bool, clr: bool, t: int, value: float) -> None:
        if not self.active[r]:
            if not setc:
                self.due_on[r] = NEVER
                return
            self.last[r] = value
            if self.due_on[r] == NEVER:
                self.due_on[r] = self.now + int(self.rules.on_us[r])
            if self.now >= self.due_on[r] and not self._waits(r):
                self._flip(r, t, value)
        else:
            if not clr:
                self.due_off[r] = NEVER
                return
            self.last[r] = value
            if self.due_off[r] == NEVER:
                self.due_off[r] = self.now + int(self.rules.off_us[r])
            if self.now >= self.due_off[r]:
                self._flip(r, t, value)

    def _flip(self, r: int, t: int, value: float) -> None:
        on = not self.active[r]
        self.active[r] = on
        self.due_on[r] = self.due_off[r] = NEVER
        if on:
            self.since[r] = t
            if self.kind[r] == K.FROZEN:
                self._near(r)
            if r in self.fe_of:  # NO_ACTION raised: its demand's response check is over
                self.aux_v[r] = math.nan
        self.edges.append((r, on, t, value, self.lim[r], self.sev[r]))

    def _waits(self, r: int) -> bool:
        """A NO_ACTION whose response time is up waits for valid final-element feedback."""
        fe = self.fe_of.get(r)
        return fe is not None and not self._ok(fe)

    def _near(self, r: int) -> None:
        best, lim = math.inf, math.nan
        for limit in self.rules.params[r].tolist():
            d = abs(self.aux_v[r] - limit)
            if d < best:  # NaN limits never win
                best, lim = d, limit
        near = best <= float(self.rules.band[r])
        self.lim[r] = lim if near else math.nan
        self.sev[r] = int(Severity.HIGH if near else self.rules.severity[r])

    # --- phases ------------------------------------------------------------------------------

    def _start(self, now: int) -> None:
        if self.born is not None:
            return
        self.born = now
        for tag, t in enumerate(self.ts):  # restored from before samples ahead were refused
            if t > now + self.rules.ahead_us:
                self.value[tag], self.quality[tag], self.ts[tag], self.held[tag] = (
                    math.nan,
                    0,
                    UNSEEN,
                    math.nan,
                )
                self.dirty = True
        for r, k in enumerate(self.kind):
            if k == K.STALE:
                self.aux_ts[r] = now
                if not self.active[r]:
                    self.due_on[r] = now + int(self.rules.on_us[r])
        il = self.rules.interlocks
        for i in range(len(il)):
            r = int(il.rule[i, 4])
            if not il.in_service[i] and not self.active[r]:
                self.due_on[r] = now
            elif il.in_service[i] and self.active[r]:
                self.due_off[r] = now

    def _sample(self, r: int, t: int, v: float, ok: bool) -> None:
        k, rs = self.kind[r], self.rules
        set_at, clear_at = float(rs.set_at[r]), float(rs.clear_at[r])
        if k == K.STALE:
            return  # arrivals, not samples, refresh it (_arrive)
        if k == K.BAD_QUALITY:
            self._transition(r, not ok, ok, t, v)
            return
        if k == K.CLOCK_AHEAD:
            return  # arrivals, not samples, decide it (evaluate)
        if not ok:
            if k == K.ROC:  # the value in the gap is unknown: measure afresh
                self.ring[r].clear()
                self._keep_ring(r)
            self._transition(r, False, False, t, v)
            return
        if k == K.ROC:
            win = max(1, int(rs.window_us[r]))
            grain = -(-win // ROC_GRAIN)
            ring = self.ring[r]
            if ring and t < ring[-1][0]:  # real data older than the newest kept (after a marker)
                ring.clear()
            if not ring or t >= ring[-1][0] + grain:
                ring.append((t, v))
            cut = t - win
            while len(ring) > 1 and ring[1][0] <= cut:
                del ring[0]
            ref_t, ref_v = ring[0]
            self._keep_ring(r)
            x = abs(v - ref_v) / win * US_PER_MIN
            self.due_off[r] = NEVER  # no off-delay: due_off is the silence deadline (below)
            self._transition(r, x >= set_at, ref_t <= cut and x < clear_at, t, x)
            if self.active[r]:  # no valid sample for a window: a held value has no rate
                self.due_off[r] = self.now + win
            return
        if k == K.FROZEN:
            first = math.isnan(self.aux_v[r])
            moved = not first and abs(v - self.aux_v[r]) > clear_at
            if first or moved:
                self.aux_v[r], self.aux_ts[r] = v, t
            self._transition(r, not moved, moved, t, self.aux_v[r])
            if moved:
                self.due_on[r] = self.now + int(rs.on_us[r])
            return
        if k == K.OUT_OF_RANGE:
            x = max(float(rs.params[r, 0]) - v, v - float(rs.params[r, 1]))
        elif k == K.STATE:
            x = abs(v - float(rs.params[r, 0]))
        else:
            x = v
        if k in LOW_KINDS:
            self._transition(r, x <= set_at, x > clear_at, t, v)
        else:
            self._transition(r, x >= set_at, x < clear_at, t, v)

    def _keep_ring(self, r: int) -> None:
        """ROC state in the snapshot fields: the reference (oldest kept) and the newest sample."""
        ring = self.ring[r]
        (self.aux_ts[r], self.aux_v[r]), (self.aux2_ts[r], self.aux2_v[r]) = (
            (ring[0], ring[-1]) if ring else ((0, math.nan), (0, math.nan))
        )

    def _arrive(self, r: int, now: int) -> None:
        gap = (now - self.aux_ts[r]) / 1e6
        if self.active[r]:
            self._flip(r, now, gap)
        self.aux_ts[r] = now
        self.due_on[r] = now + int(self.rules.on_us[r])

    def _ok(self, tag: int) -> bool:
        return _valid(self.value[tag], self.quality[tag])

    def _pair(self, r: int) -> None:
        a, b = int(self.rules.tag[r]), int(self.rules.tag2[r])
        t = max(self.ts[a], self.ts[b])
        if t == UNSEEN:
            return
        ok = self._ok(a) and self._ok(b)
        x = abs(self.value[a] - self.value[b])
        self._transition(r, ok and x >= self.rules.set_at[r], ok and x < self.rules.clear_at[r], t, x)

    def _interlock(self, i: int) -> None:
        il = self.rules.interlocks
        votes = n_eff = n_failed = n_byp = 0
        t_in = t_bp = UNSEEN
        for j in range(int(il.ptr[i]), int(il.ptr[i + 1])):
            tag, bp = int(il.in_tag[j]), int(il.in_bypass[j])
            t_in = max(t_in, self.ts[tag])
            bypassed = False
            if bp >= 0:
                t_in, t_bp = max(t_in, self.ts[bp]), max(t_bp, self.ts[bp])
                bypassed = self.held[bp] >= 0.5  # NaN (never valid) is not bypassed
            x = self.value[tag]
            trips = (il.in_lo[j] <= x <= il.in_hi[j]) != bool(il.in_invert[j])
            n_byp += bypassed
            if not bypassed and self._ok(tag):
                n_eff += 1
                votes += trips
            elif not bypassed:
                n_failed += 1
        demand_r, no_action_r, bypassed_r, overdue_r = (int(r) for r in il.rule[i, :4])
        if t_in != UNSEEN:
            known = n_eff > 0 or n_failed == 0
            demand = n_eff > 0 and votes >= min(int(il.m[i]), n_eff)
            was = self.active[demand_r]
            self._transition(demand_r, known and demand, known and not demand, t_in, float(votes))
            if self.active[demand_r] and not was:  # a demand starts its final element's response time
                self.aux_v[no_action_r] = 1.0
        fe = int(il.fe_tag[i])
        t_fe = max(t_in, self.ts[fe])
        if t_fe != UNSEEN:
            fe_ok = self._ok(fe)
            safe = fe_ok and abs(self.value[fe] - il.fe_safe[i]) <= il.fe_tol[i]
            waiting = not math.isnan(self.aux_v[no_action_r])
            self._transition(no_action_r, waiting and not safe, safe, t_fe, self.value[fe])
            if safe or self.active[no_action_r]:
                self.aux_v[no_action_r] = math.nan
        if t_bp != UNSEEN:
            for r in (bypassed_r, overdue_r):
                self._transition(r, n_byp > 0, n_byp == 0, t_bp, float(n_byp))

    def _timers(self, now: int) -> ConditionEdges:
        for r in range(len(self.kind)):
            if now >= self.due_on[r]:
                if self._waits(r):
                    continue
                if self.kind[r] == K.STALE:
                    self.last[r] = (now - self.aux_ts[r]) / 1e6
                self._flip(r, now, self.last[r])
            elif now >= self.due_off[r]:
                self._flip(r, now, self.last[r])
        edges, self.edges = self.edges, []
        if not edges:
            return ConditionEdges.empty()
        return ConditionEdges.of(*zip(*edges, strict=True)).by_rule()

    # --- persistence ---------------------------------------------------------------------------

    def snapshot(self) -> EngineSnapshot:
        return EngineSnapshot.build(
            self.rules,
            {
                "active": self.active, "since": self.since, "due_on": self.due_on, "due_off": self.due_off,
                "last": self.last, "sev": self.sev, "lim": self.lim, "aux_v": self.aux_v, "aux_ts": self.aux_ts,
                "aux2_v": self.aux2_v, "aux2_ts": self.aux2_ts,
            },
            (self.value, self.quality, self.ts, self.held),
            {r: (tuple(t for t, _ in ring), tuple(v for _, v in ring)) for r, ring in self.ring.items()},
        )  # fmt: skip

    def restore(self, snap: EngineSnapshot) -> None:
        rules_state, tags_state = snap.for_rules(self.rules)
        for name, values in rules_state.items():
            current = getattr(self, name)
            for r, v in enumerate(values.tolist()):
                current[r] = v
        self.value, self.quality, self.ts, self.held = (a.tolist() for a in tags_state)
        saved = snap.rings_for(self.rules, ROC_GRAIN)
        for r, ring in self.ring.items():  # kept samples, else the reference and the newest
            ring.clear()
            if r in saved:
                ring.extend(zip(*saved[r], strict=True))
            elif not math.isnan(self.aux_v[r]):
                ring.append((self.aux_ts[r], self.aux_v[r]))
                if not math.isnan(self.aux2_v[r]) and self.aux2_ts[r] > self.aux_ts[r]:
                    ring.append((self.aux2_ts[r], self.aux2_v[r]))
            self._keep_ring(r)
        self.born = None
        self.dirty = True
