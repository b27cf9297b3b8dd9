"""Slots: the vectorized condition state of a group of rules, and the one transition they share.

A family of rules (limits, one data-quality check, interlock outputs) keeps its state in flat
arrays indexed by *slot*; ``rule[slot]`` is the rule index (-1 for an empty slot). ``step``
applies the transition of rules/reference.py to a subset of slots (deadlines on arrival
time ``now``, edges at the sample time ``t``), ``fire`` runs the timer phase. Invariants: ``due_on`` runs only while idle, ``due_off`` only while active, and
``next_due`` is never later than the earliest running deadline (so ``fire`` can skip; a
slot that fires went active exactly when it was idle). A ``hold`` (interlocks: NO_ACTION
without valid feedback; a mask for ``step``, a test of the expired slots for ``fire``) keeps
an expired on-deadline from firing; such a slot stays pending (so its family keeps stepping it) but out of ``next_due``,
and fires on the first step without hold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from core.conditions import RuleKind, Severity
from rules.ruleset import NEVER, RuleSet
from rules.snapshot import RULE_FIELDS

__all__ = ["EdgeParts", "Slots", "unique_sorted"]

EdgeParts = list[tuple[np.ndarray, ...]]  # (rule, active, ts, value, limit, severity) columns
_COMPACT = 4096  # Slots.fire: listed deadlines past which every one is checked and duplicates go
_CHUNKS = 64  # ... and chunks of them (one per listing, so a long delay leaves many)


def unique_sorted(a: np.ndarray) -> np.ndarray:
    """``np.unique(a)`` for a 1-D array: sort, then drop repeats. On the hot path because
    np.unique (numpy 2.4) costs several times a plain sort (1.1 ms against 0.07 ms for 10,000
    int64 on the bench machine) and ~25 µs even for a handful of values."""
    s = np.sort(a)
    if s.size < 2:
        return s
    keep = np.empty(s.size, bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


class Slots:
    def __init__(self, rules: RuleSet, rule: np.ndarray) -> None:
        self.rules = rules
        self.rule = np.asarray(rule, np.int64)
        has = self.rule >= 0
        r = np.where(has, self.rule, 0)
        n = len(self.rule)
        self.on_us = np.where(has, rules.on_us[r], 0)
        self.off_us = np.where(has, rules.off_us[r], 0)
        self.active = np.zeros(n, bool)
        self.since = np.zeros(n, np.int64)
        self.due_on = np.full(n, NEVER, np.int64)
        self.due_off = np.full(n, NEVER, np.int64)
        self.last = np.full(n, np.nan)
        self.sev = np.where(has, rules.severity[r], 0).astype(np.uint8)
        self.lim = np.where(has, rules.limit[r], np.nan)
        self.aux_v = np.full(n, np.nan)
        self.aux_ts = np.zeros(n, np.int64)
        self.aux2_v = np.full(n, np.nan)
        self.aux2_ts = np.zeros(n, np.int64)
        kinds = set(rules.kind[self.rule[has]].tolist())
        self.frozen = kinds == {RuleKind.FROZEN}
        self.stale = kinds == {RuleKind.STALE}
        self.next_due = NEVER
        # Slots whose deadline may run (a superset; checked when due), in chunks as listed.
        # STALE scans densely: every sample restarts its deadline, so a list would only grow.
        self.pending: list[np.ndarray] = []
        # per chunk of ``pending``, the earliest deadline its slots had when listed: fire reads
        # the live deadlines of only the chunks due by then, and leaves the others untouched
        # (no pass over every listed slot; random reads over the whole state, most of them of
        # deadlines still running or cancelled)
        self.pending_min: list[int] = []

    def __len__(self) -> int:
        return len(self.rule)

    def step(
        self,
        idx: np.ndarray,
        setc: np.ndarray,
        clr: np.ndarray,
        t: Any,
        value: np.ndarray,
        now: int,
        out: EdgeParts,
        hold: np.ndarray | None = None,
        busy: np.ndarray | None = None,
    ) -> None:
        """The transition for slots ``idx`` (unique) evaluated at arrival time ``now`` on samples
        of time ``t`` (scalar or per slot): deadlines run on ``now``, edges report ``t``. Where
        ``hold`` (per ``idx``) is set, an expired on-deadline keeps running instead of firing.
        ``busy`` (bool per ``idx``), when given, receives whether each slot is active or has a
        deadline running after the step (the caller need not gather the state again)."""
        if idx.size == 0:
            return
        act = self.active[idx]
        don0, doff0 = self.due_on[idx], self.due_off[idx]
        running = np.minimum(don0, doff0) != NEVER
        if busy is not None:
            np.logical_or(act, running, out=busy)
        # Only slots that may change: a condition against the state, or a running deadline.
        live = np.flatnonzero(np.where(act, clr, setc) | running)
        every = live.size == idx.size
        if not every:
            if live.size == 0:
                return
            idx, setc, clr, value, act, don0, doff0 = (
                a[live] for a in (idx, setc, clr, value, act, don0, doff0)
            )
            if np.ndim(t):
                t = t[live]
            if hold is not None:
                hold = hold[live]
        won = setc & ~act
        don = np.where(won, np.where(don0 == NEVER, now + self.on_us[idx], don0), NEVER)
        aclr = clr & act
        doff = np.where(aclr, np.where(doff0 == NEVER, now + self.off_us[idx], doff0), NEVER)
        touched = won | aclr
        if touched.any():
            self.last[idx[touched]] = value[touched]
        fire_on = won & (now >= don)
        if hold is not None:
            fire_on &= ~hold
        fired = fire_on | (aclr & (now >= doff))
        don[fired] = NEVER
        doff[fired] = NEVER
        started = ((don != NEVER) & (don0 == NEVER)) | ((doff != NEVER) & (doff0 == NEVER))
        self.due_on[idx] = don
        self.due_off[idx] = doff
        if started.any():
            self.watch(idx[started], int(min(don.min(), doff.min())))
        if fired.any():
            f = idx[fired]
            ts = t[fired] if np.ndim(t) else np.full(f.size, t, np.int64)
            self.active[f] = ~act[fired]
            self.since[idx[fire_on]] = ts[fire_on[fired]]
            if self.frozen:
                self.near(idx[fire_on])
            out.append((self.rule[f], self.active[f], ts, value[fired], self.lim[f], self.sev[f]))
        if busy is not None:
            after = (act ^ fired) | (np.minimum(don, doff) != NEVER)
            if every:
                busy[:] = after
            else:
                busy[live] = after

    def watch(self, idx: np.ndarray, due: int) -> None:
        """Deadlines were started at ``idx`` (the earliest at ``due``)."""
        if not self.stale and idx.size:
            self.pending.append(idx)
            self.pending_min.append(int(np.minimum(self.due_on[idx], self.due_off[idx]).min()))
        self.next_due = min(self.next_due, due)

    def listed(self, idx: np.ndarray, due: np.ndarray) -> None:
        """As ``watch``, from a caller that has the started deadlines ``due`` (per ``idx``) at hand."""
        first = int(due.min())
        if not self.stale:
            self.pending.append(idx)
            self.pending_min.append(first)
        self.next_due = min(self.next_due, first)

    def fire(self, now: int, out: EdgeParts, hold: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        """Timer phase: every running deadline ``<= now`` flips at ``now``, except an on-deadline
        of a slot that ``hold`` (slots -> bool per slot, asked only about expired ones) holds,
        which stays expired for ``step`` to fire."""
        if now < self.next_due:
            return
        later: list[int] = []  # chunks not due yet by their listed deadline
        if self.stale:
            cand = np.flatnonzero(np.minimum(self.due_on, self.due_off) <= now)
        else:
            pending, first = self.pending, self.pending_min
            # past _COMPACT listed entries or _CHUNKS chunks, check them all (as due) and keep
            # one per slot
            compact = len(pending) > _CHUNKS or sum(a.size for a in pending) > _COMPACT
            due = [] if compact else [i for i, m in enumerate(first) if m <= now]
            if compact or len(due) == len(pending):
                due = list(range(len(pending)))
            else:
                later = [i for i, m in enumerate(first) if m > now]
            parts = [pending[i] for i in due]
            cand = parts[0] if len(parts) == 1 else np.concatenate(parts or [np.empty(0, np.int64)])
        running = np.minimum(self.due_on[cand], self.due_off[cand])
        expired = running <= now
        # the usual call in a busy plant (deadlines started, since cancelled) fires nothing:
        # np.count_nonzero first, so that costs a few calls, not the whole phase
        f = (
            unique_sorted(cand[expired]) if np.count_nonzero(expired) else cand[:0]
        )  # a slot can be listed twice
        held = None
        if hold is not None and f.size:
            wait = hold(f) & (self.due_on[f] <= now)
            held, f = f[wait], f[~wait]
        if f.size:
            # an idle slot's running deadline is its on-deadline, an active one's its off-deadline
            went_on = ~self.active[f]
            if self.stale:
                g = f[went_on]
                self.last[g] = (now - self.aux_ts[g]) / 1e6
            self.active[f] = went_on
            self.due_on[f] = NEVER
            self.due_off[f] = NEVER
            self.since[f[went_on]] = now
            if self.frozen:
                self.near(f[went_on])
            n = f.size
            out.append(
                (self.rule[f], went_on, np.full(n, now, np.int64), self.last[f], self.lim[f], self.sev[f])
            )
        if self.stale:
            self.schedule()
        else:
            # a checked deadline still running (not due yet, or moved later without a new
            # listing) is listed again, at its deadline now
            waiting = ~expired
            waiting &= running != NEVER
            again = cand[waiting]
            if compact and again.size:
                again = unique_sorted(again)
            left = [pending[i] for i in later]
            left_min = [first[i] for i in later]
            if again.size:
                left.append(again)
                left_min.append(int(running[waiting].min()))
            self.next_due = min(left_min, default=NEVER)
            if held is not None and held.size:  # pending, but out of next_due
                left.append(held)
                left_min.append(int(np.minimum(self.due_on[held], self.due_off[held]).min()))
            self.pending, self.pending_min = left, left_min

    def near(self, idx: np.ndarray) -> None:
        """FROZEN: high severity, and that limit, when the frozen value sits near an alarm limit."""
        if idx.size == 0:
            return
        r = self.rule[idx]
        d = np.abs(self.aux_v[idx, None] - self.rules.params[r])
        d = np.where(np.isnan(d), np.inf, d)
        best = np.argmin(d, axis=1)
        dist = d[np.arange(idx.size), best]
        near = dist <= self.rules.band[r]
        self.lim[idx] = np.where(near, self.rules.params[r, best], np.nan)
        self.sev[idx] = np.where(near, np.uint8(Severity.HIGH), self.rules.severity[r])

    def schedule(self) -> None:
        """Recompute the timers from the deadlines (after start, restore or bulk changes)."""
        due = np.minimum(self.due_on, self.due_off)
        self.next_due = int(due.min(initial=NEVER))
        idx = np.empty(0, np.int64) if self.stale else np.flatnonzero(due != NEVER)
        self.pending = [idx] if idx.size else []
        self.pending_min = [self.next_due] if idx.size else []

    # --- persistence ---------------------------------------------------------------------

    def export(self, state: dict[str, np.ndarray]) -> None:
        has = self.rule >= 0
        for name in RULE_FIELDS:
            state[name][self.rule[has]] = getattr(self, name)[has]

    def load(self, state: dict[str, np.ndarray]) -> None:
        has = self.rule >= 0
        for name in RULE_FIELDS:
            getattr(self, name)[has] = state[name][self.rule[has]]
        self.schedule()
