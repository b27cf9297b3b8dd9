"""Rules over two tags: DEVIATION between redundant transmitters, MISMATCH of feedback and command.

Evaluated after each distinct sample ts of a batch that reported either tag (rules/reference.py):
``x = |v - v2|``, at the newest timestamp of the two tags; either tag invalid holds the condition.
"""

from __future__ import annotations

import numpy as np

from core.conditions import PAIR_KINDS
from rules.machine import EdgeParts, Slots
from rules.ruleset import UNSEEN, RuleSet

__all__ = ["PairFamily"]


class PairFamily:
    def __init__(self, rules: RuleSet) -> None:
        rule = np.flatnonzero(np.isin(rules.kind, list(PAIR_KINDS)))
        self.slots = Slots(rules, rule)
        self.a, self.b = rules.tag[rule], rules.tag2[rule]
        self.set_at, self.clear_at = rules.set_at[rule], rules.clear_at[rule]

    def __len__(self) -> int:
        return len(self.slots)

    def evaluate(
        self,
        value: np.ndarray,
        valid: np.ndarray,
        ts: np.ndarray,
        now: int,
        out: EdgeParts,
        touched: np.ndarray | None = None,
    ) -> None:
        """Step the pairs reading a tag whose mask ``touched`` is set (None: every pair)."""
        if not len(self):
            return
        t = np.maximum(ts[self.a], ts[self.b])
        seen = t != UNSEEN
        if touched is not None:
            seen &= touched[self.a] | touched[self.b]
        sel = np.flatnonzero(seen)
        if sel.size == 0:
            return
        a, b = self.a[sel], self.b[sel]
        ok = valid[a] & valid[b]
        x = np.abs(value[a] - value[b])
        setc = ok & (x >= self.set_at[sel])
        clr = ok & (x < self.clear_at[sel])
        self.slots.step(sel, setc, clr, t[sel], x, now, out)
