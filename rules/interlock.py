"""Interlocks (SIS) as the engine sees them: MooN voting with bypassed and failed inputs.

Per interlock five rules (``INTERLOCK_KINDS``): trip demand, demand without action (final
element not in its safe position within the response time after the demand started, whether
or not the demand still holds; critical), input bypassed,
bypass older than approved, out of service. Semantics in rules/reference.py; a 2oo3 with one
input bypassed or failed votes as 2oo2 (DOMAIN.md), and ``status`` shows that live.

An input's bypass follows its switch's last *valid* value (``held``), so a switch that turns
BAD keeps its last known state and the bypass age keeps running. Each demand that starts
opens a response check (the NO_ACTION slot's ``aux_v`` = 1, so snapshots keep it), closed by
the final element seen safe or by NO_ACTION activating; its deadline is the NO_ACTION
on-delay, started by the demand. An expired deadline waits for valid feedback (``hold``):
while the feedback is invalid, that tag's BAD_QUALITY reports it.

Work per batch follows what changed: each input keeps a status code (healthy, voting to
trip, failed, bypassed, never reported) and each interlock its counts of them. A batch recodes
only the inputs whose tag or bypass switch reported, adjusts the counts by the differences, and steps
only interlocks whose counts or final-element state changed or that have a deadline running.
Skipping the others is exact: with unchanged conditions and no deadline a step changes nothing.

``sif_state`` says which safety functions can no longer act (effective voting 0ooN: every input
bypassed or failed, or the interlock out of service) from the same counts; an input whose tag
never reported is not judged yet, so a start before the first poll raises nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rules.machine import EdgeParts, Slots, unique_sorted
from rules.ruleset import NEVER, UNSEEN, RuleSet

__all__ = ["SIF_ABLE", "SIF_DISABLED", "SIF_UNKNOWN", "InterlockFamily", "InterlockStatus"]

N_OUT = 5  # TRIP_DEMAND, NO_ACTION, INPUT_BYPASSED, BYPASS_OVERDUE, OUT_OF_SERVICE
# input status bits, counts in this order; UNREPORTED: failed because its tag never reported
HEALTHY, VOTES, FAILED, BYPASSED, UNREPORTED = 1, 2, 4, 8, 16
BITS = (HEALTHY, VOTES, FAILED, BYPASSED, UNREPORTED)
SIF_UNKNOWN, SIF_ABLE, SIF_DISABLED = -1, 0, 1  # sif_state values
FE_VALID, FE_SAFE = 1, 2  # final element feedback state bits


@dataclass(frozen=True)
class InterlockStatus:
    """One safety function now: configured and effective voting, votes, bypassed/failed inputs."""

    key: str
    name: str
    voting: str  # as configured, e.g. 2oo3
    effective: str  # e.g. 2oo2 with one input bypassed; 0oo0 when every input is out
    m: int  # votes needed as configured
    can_vote: int  # inputs neither bypassed nor failed: the N of ``effective``
    votes: int
    demand: bool
    no_action: bool
    bypassed: tuple[str, ...]  # input tag keys
    failed: tuple[str, ...]
    in_service: bool


def _csr(refs: np.ndarray, ids: np.ndarray, n_tags: int) -> tuple[np.ndarray, np.ndarray]:
    keep = refs >= 0
    order = np.argsort(refs[keep], kind="stable")
    return ids[keep][order], np.concatenate([[0], np.cumsum(np.bincount(refs[keep], minlength=n_tags))])


def _readers(ids: np.ndarray, ptr: np.ndarray, tags: np.ndarray, mark: np.ndarray) -> np.ndarray:
    """Unique ids (ascending) listed for any of ``tags`` (repeats allowed)."""
    start = ptr[tags]
    count = ptr[tags + 1] - start
    total = int(count.sum())
    if total == 0:
        return np.empty(0, np.int64)
    offset = np.cumsum(count) - count
    mark[ids[np.repeat(start - offset, count) + np.arange(total)]] = True
    out = np.flatnonzero(mark)
    mark[out] = False
    return out


class InterlockFamily:
    def __init__(self, rules: RuleSet) -> None:
        self.il = il = rules.interlocks
        self.tag_keys = rules.tag_keys
        n, m = len(il), len(il.in_tag)
        self.slots = Slots(rules, il.rule.reshape(-1))
        self.has_bp = il.in_bypass >= 0
        self.bp = np.where(self.has_bp, il.in_bypass, 0)
        self.owner = np.repeat(np.arange(n), np.diff(il.ptr))
        # who reads a tag: ids < m are inputs (as input or bypass switch), m + i interlock i's
        # final element
        inputs = np.arange(m)
        refs = np.concatenate([il.in_tag, il.in_bypass, il.fe_tag])
        self.ref_ids, self.ref_ptr = _csr(
            refs, np.concatenate([inputs, inputs, m + np.arange(n)]), rules.n_tags
        )
        self.code = np.zeros(m, np.uint8)
        self.count = np.zeros((len(BITS), n), np.int64)  # healthy, votes, failed, bypassed, unreported
        # interlocks with an input that became or stopped being able to vote, or reported for the
        # first time, since take_recoded (all: after a recount): what sif_state depends on
        self.recoded, self.any_recoded = np.ones(n, bool), True
        self.fe = np.zeros(n, np.uint8)  # final element: FE_VALID | FE_SAFE
        self.mark_ref = np.zeros(m + n, bool)
        self.mark_il, self.mark_sel = np.zeros(n, bool), np.zeros(n, bool)
        self.no_action = np.arange(n) * N_OUT + 1  # the NO_ACTION slots

    def __len__(self) -> int:
        return len(self.il)

    def codes(
        self, j: np.ndarray | slice, value: np.ndarray, valid: np.ndarray, held: np.ndarray, ts: np.ndarray
    ) -> np.ndarray:
        il = self.il
        tag, bp = il.in_tag[j], self.bp[j]
        x = value[tag]
        trips = ((x >= il.in_lo[j]) & (x <= il.in_hi[j])) ^ il.in_invert[j]
        ok = valid[tag]
        byp = self.has_bp[j] & (held[bp] >= 0.5)
        healthy = ok & ~byp
        failed = ~ok & ~byp
        code = (
            healthy * HEALTHY + (healthy & trips) * VOTES + failed * FAILED + byp * BYPASSED
            + (failed & (ts[tag] == UNSEEN)) * UNREPORTED
        )  # fmt: skip
        return code.astype(np.uint8)

    def _fe(self, i: np.ndarray | slice, value: np.ndarray, valid: np.ndarray) -> np.ndarray:
        il = self.il
        fe = il.fe_tag[i]
        ok = valid[fe]
        safe = ok & (np.abs(value[fe] - il.fe_safe[i]) <= il.fe_tol[i])
        return (ok * FE_VALID + safe * FE_SAFE).astype(np.uint8)

    def recount(self, value: np.ndarray, valid: np.ndarray, held: np.ndarray, ts: np.ndarray) -> None:
        """Recode every input and final element from the tag state (after start or restore)."""
        if not len(self):
            return
        self.code = self.codes(slice(None), value, valid, held, ts)
        for k, bit in enumerate(BITS):
            self.count[k] = np.add.reduceat(((self.code & bit) != 0).astype(np.int64), self.il.ptr[:-1])
        self.fe = self._fe(slice(None), value, valid)
        self.recoded[:], self.any_recoded = True, True

    def take_recoded(self) -> np.ndarray:
        """The interlocks (ascending) whose sif_state may have changed since the last call: an
        input became or stopped being able to vote, or reported for the first time; O(1) when
        none did."""
        if not self.any_recoded:
            return np.empty(0, np.int64)
        out = np.flatnonzero(self.recoded)
        self.recoded[out], self.any_recoded = False, False
        return out

    def sif_state(self, which: np.ndarray) -> np.ndarray:
        """Of the interlocks ``which``, from the current counts: SIF_DISABLED when one cannot act
        (out of service, or no input left to vote: each bypassed or failed), SIF_ABLE when it
        can, SIF_UNKNOWN while it could act only through inputs that never reported."""
        healthy, unreported = self.count[0, which], self.count[4, which]
        state = np.where(healthy > 0, SIF_ABLE, np.where(unreported > 0, SIF_UNKNOWN, SIF_DISABLED))
        state[~self.il.in_service[which]] = SIF_DISABLED
        return state.astype(np.int8)

    def start(self, born: int) -> None:
        """Out of service is a standing condition: due at the engine's start, cleared if restored."""
        s, oos = self.slots, np.arange(len(self)) * N_OUT + 4
        down = ~self.il.in_service
        s.due_on[oos[down & ~s.active[oos]]] = born
        s.due_off[oos[~down & s.active[oos]]] = born
        s.schedule()

    def evaluate(
        self,
        value: np.ndarray,
        valid: np.ndarray,
        held: np.ndarray,
        ts: np.ndarray,
        now: int,
        out: EdgeParts,
        tags: np.ndarray | None = None,
    ) -> None:
        """After samples of ``tags`` (None: recount and step every interlock)."""
        if not len(self):
            return
        if tags is None:
            self.recount(value, valid, held, ts)
            self._step(np.arange(len(self)), value, ts, now, out)
            return
        ids = _readers(self.ref_ids, self.ref_ptr, tags, self.mark_ref)
        split = int(np.searchsorted(ids, len(self.code)))
        j, f = ids[:split], ids[split:] - len(self.code)
        new = self.codes(j, value, valid, held, ts)
        changed = np.flatnonzero(new != self.code[j])
        if changed.size:
            jc, old, now_ = j[changed], self.code[j[changed]], new[changed]
            for k, bit in enumerate(BITS):
                delta = ((now_ & bit) != 0).astype(np.int64) - ((old & bit) != 0)
                np.add.at(self.count[k], self.owner[jc], delta)
            self.code[jc] = now_
            moved = jc[((old ^ now_) & (HEALTHY | UNREPORTED)) != 0]
            if moved.size:
                self.recoded[self.owner[moved]], self.any_recoded = True, True
        fe = self._fe(f, value, valid)
        fe_changed = f[fe != self.fe[f]]
        self.fe[f] = fe
        sel_mark = self.mark_sel
        sel_mark[self.owner[j[changed]]] = True
        sel_mark[fe_changed] = True
        running = self._running()
        if running.size:  # a touched interlock with a running deadline may fire on the new data
            touched = self.mark_il
            touched[self.owner[j]] = True
            touched[f] = True
            sel_mark[running[touched[running]]] = True
            touched[:] = False
        sel = np.flatnonzero(sel_mark)
        sel_mark[sel] = False
        if sel.size:
            self._step(sel, value, ts, now, out)

    def _running(self) -> np.ndarray:
        """Interlocks with a deadline running on trip demand, no action or bypass outputs."""
        s = self.slots
        if not s.pending:  # held response deadlines stay pending with next_due NEVER
            return np.empty(0, np.int64)
        cand = np.concatenate(s.pending)
        live = cand[((s.due_on[cand] != NEVER) | (s.due_off[cand] != NEVER)) & (cand % N_OUT < 4)]
        return unique_sorted(live // N_OUT)

    def _step(self, sel: np.ndarray, value: np.ndarray, ts: np.ndarray, now: int, out: EdgeParts) -> None:
        il, s = self.il, self.slots
        start = il.ptr[sel]
        n_in = il.ptr[sel + 1] - start
        first = np.cumsum(n_in) - n_in
        j = np.repeat(start - first, n_in) + np.arange(int(n_in.sum()))
        t_bp = np.where(self.has_bp[j], ts[self.bp[j]], UNSEEN)
        t_in = np.maximum.reduceat(np.maximum(ts[il.in_tag[j]], t_bp), first)
        t_bp = np.maximum.reduceat(t_bp, first)
        n_eff, votes, n_failed, n_byp = self.count[:4, sel]
        base = sel * N_OUT
        demand = (n_eff > 0) & (votes >= np.minimum(il.m[sel], n_eff))
        known = (n_eff > 0) | (n_failed == 0)
        k = np.flatnonzero(t_in != UNSEEN)
        was = s.active[base]
        s.step(base[k], (known & demand)[k], (known & ~demand)[k], t_in[k], votes[k].astype(float), now, out)
        act = s.active[base]
        s.aux_v[base[act & ~was] + 1] = 1.0  # a demand started: its response check opens
        fe = il.fe_tag[sel]
        t_fe = np.maximum(t_in, ts[fe])
        fe_ok = (self.fe[sel] & FE_VALID) != 0
        safe = (self.fe[sel] & FE_SAFE) != 0
        waiting = ~np.isnan(s.aux_v[base + 1])
        k = np.flatnonzero(t_fe != UNSEEN)
        s.step(base[k] + 1, (waiting & ~safe)[k], safe[k], t_fe[k], value[fe][k], now, out, ~fe_ok[k])
        closed = k[(safe | s.active[base + 1])[k]]
        s.aux_v[base[closed] + 1] = np.nan
        k = np.flatnonzero(t_bp != UNSEEN)
        on = n_byp[k] > 0
        for out_ in (2, 3):
            s.step(base[k] + out_, on, ~on, t_bp[k], n_byp[k].astype(float), now, out)

    def fire(self, now: int, valid: np.ndarray, out: EdgeParts) -> None:
        """Timer phase; an expired response time waits for valid final-element feedback."""
        s = self.slots
        if now < s.next_due:
            return
        fe_tag = self.il.fe_tag

        def hold(slot: np.ndarray) -> np.ndarray:  # asked about the expired slots only
            return (slot % N_OUT == 1) & ~valid[fe_tag[slot // N_OUT]]

        s.fire(now, out, hold)
        no_action = self.no_action
        s.aux_v[no_action[s.active[no_action]]] = np.nan  # raised: the response check is over

    def status(
        self,
        value: np.ndarray,
        valid: np.ndarray,
        held: np.ndarray,
        ts: np.ndarray,
        which: np.ndarray | None = None,
    ) -> list[InterlockStatus]:
        """Every interlock's status, or those of the indices ``which`` (only their inputs coded)."""
        il, s = self.il, self.slots
        sel = np.arange(len(self)) if which is None else which
        start = il.ptr[sel]
        n_in = il.ptr[sel + 1] - start
        first = np.cumsum(n_in) - n_in
        j = np.repeat(start - first, n_in) + np.arange(int(n_in.sum()))
        code = self.codes(j, value, valid, held, ts)
        out = []
        for i, a, n in zip(sel.tolist(), first.tolist(), n_in.tolist(), strict=True):
            key = il.keys[i]
            lo, hi = int(il.ptr[i]), int(il.ptr[i + 1])
            c = code[a : a + n]
            n_eff = int(((c & HEALTHY) != 0).sum())
            tags = [self.tag_keys[t] for t in il.in_tag[lo:hi].tolist()]
            out.append(
                InterlockStatus(
                    key=key,
                    name=il.names[i],
                    voting=f"{int(il.m[i])}oo{hi - lo}",
                    effective=f"{min(int(il.m[i]), n_eff)}oo{n_eff}",
                    m=int(il.m[i]),
                    can_vote=n_eff,
                    votes=int(((c & VOTES) != 0).sum()),
                    demand=bool(s.active[i * N_OUT]),
                    no_action=bool(s.active[i * N_OUT + 1]),
                    bypassed=tuple(t for t, x in zip(tags, c.tolist(), strict=True) if x & BYPASSED),
                    failed=tuple(t for t, x in zip(tags, c.tolist(), strict=True) if x & FAILED),
                    in_service=bool(il.in_service[i]),
                )
            )
        return out
