"""Rules over two tags: DEVIATION between redundant transmitters, MISMATCH of feedback and command.

Evaluated once per batch on the latest values (rules/reference.py): ``x = |v - v2|``, at the
newest timestamp of the two tags; either tag invalid holds the condition.
"""

from __future__ import annotations

import numpy as np

from rules.machine import EdgeParts, Slots
from rules.spec import PAIR_KINDS, UNSEEN, RuleSet

__all__ = ["PairFamily"]


class PairFamily:
    def __init__(self, rules: RuleSet) -> None:
        rule = np.flatnonzero(np.isin(rules.kind, list(PAIR_KINDS)))
        self.slots = Slots(rules, rule)
        self.a, self.b = rules.tag[rule], rules.tag2[rule]
        self.set_at, self.clear_at = rules.set_at[rule], rules.clear_at[rule]

    def __len__(self) -> int:
        return len(self.slots)

    def evaluate(self, value: np.ndarray, valid: np.ndarray, ts: np.ndarray, out: EdgeParts) -> None:
        if not len(self):
            return
        t = np.maximum(ts[self.a], ts[self.b])
        sel = np.flatnonzero(t != UNSEEN)
        a, b = self.a[sel], self.b[sel]
        ok = valid[a] & valid[b]
        x = np.abs(value[a] - value[b])
        setc = ok & (x >= self.set_at[sel])
        clr = ok & (x < self.clear_at[sel])
        self.slots.step(sel, setc, clr, t[sel], x, out)
