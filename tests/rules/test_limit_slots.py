"""LimitFamily's slot matrix, built with numpy, equals the rule-by-rule placement it replaced
(LOW from column 0, HIGH from column 3 leftwards, each side then in rule order), including
which tag a third limit on one side is reported for."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.conditions import LIMIT_KINDS, LOW_KINDS, RuleKind
from rules.families import _slot_matrix
from rules.ruleset import RuleSet
from tests.rules.streams import rules_for_tests

N_TAGS = 5
KINDS = [int(k) for k in RuleKind]  # limit kinds among others, which take no slot


def _rules(rows: Sequence[tuple[int, int]]) -> RuleSet:
    """A rule set of N_TAGS tags whose rules are ``rows`` of (tag, kind); only the columns
    the slot matrix reads are set."""
    base = rules_for_tests()
    tag = np.array([t for t, _ in rows], np.int64)
    kind = np.array([k for _, k in rows], np.uint8)
    return dataclasses.replace(base, kind=kind, tag=tag, tag_keys=tuple(f"T{i}" for i in range(N_TAGS)))


def _placed_one_by_one(rules: RuleSet) -> np.ndarray:
    """The placement rule by rule, as LimitFamily did it before (the reference)."""
    slot = np.full((rules.n_tags, 4), -1, np.int64)
    for r in np.flatnonzero(np.isin(rules.kind, list(LIMIT_KINDS))).tolist():
        t = int(rules.tag[r])
        low = RuleKind(int(rules.kind[r])) in LOW_KINDS
        col = next((c for c in ((0, 1) if low else (3, 2)) if slot[t, c] < 0), None)
        if col is None:
            raise ValueError(f"{rules.tag_keys[t]}: more than two {'LOW' if low else 'HIGH'} limits")
        slot[t, col] = r
    for a, b in ((0, 1), (2, 3)):
        swap = (slot[:, a] > slot[:, b]) & (slot[:, b] >= 0)
        slot[swap, a], slot[swap, b] = slot[swap, b], slot[swap, a]
    return slot


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, N_TAGS - 1), st.sampled_from(KINDS)), max_size=30))
def test_slot_matrix_equals_placing_rule_by_rule(rows: list[tuple[int, int]]) -> None:
    rules = _rules(rows)
    try:
        expected = _placed_one_by_one(rules)
    except ValueError as exc:
        with pytest.raises(ValueError, match=f"^{re.escape(str(exc))}$"):
            _slot_matrix(rules)
    else:
        assert np.array_equal(_slot_matrix(rules), expected)


def test_a_third_limit_on_one_side_is_reported_for_the_first_tag_that_has_it() -> None:
    ll, l_, h = RuleKind.LL, RuleKind.L, RuleKind.H
    rows = [(1, h), (1, h), (0, ll), (0, l_), (0, ll), (1, h)]  # tag 0's third LOW comes first
    with pytest.raises(ValueError, match=r"^T0: more than two LOW limits$"):
        _slot_matrix(_rules(rows))
