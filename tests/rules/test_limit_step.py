"""The limits' own step (LimitFamily): every comparison folded into ``x <= thr`` (a strict
clear compares with the next float up, an infinite one never clears), scratch arrays reused
across batches whose live tags grow and shrink, and the edges built without conversion, all
checked against the reference."""

from __future__ import annotations

import dataclasses

import numpy as np

from core.batch import ReadingBatch
from rules.engine import RuleEngine, _edges
from rules.machine import EdgeParts
from rules.reference import ReferenceEngine
from rules.ruleset import RuleSet
from tests.rules.streams import T0

GOOD, BAD = 0xC0, 0x18


def _rules(n_tags: int, set_at: tuple[float, ...], clear_at: tuple[float, ...]) -> RuleSet:
    """The bench's limit rules (LL/L/H/HH, on-delay on even tags) with these thresholds."""
    from bench.rules import synthetic_rules

    rules = synthetic_rules(n_tags=n_tags, n_interlocks=0, checks=False)
    s, c = np.tile(np.array(set_at), n_tags), np.tile(np.array(clear_at), n_tags)
    return dataclasses.replace(rules, set_at=s, clear_at=c, limit=s.copy())


def _batch(tags: list[int], values: list[float], step: int, quality: list[int] | None = None) -> ReadingBatch:
    n = len(tags)
    return ReadingBatch(
        np.array(tags, np.int32),
        np.full(n, T0 + step * 1_000_000, np.int64),
        np.array(values, float),
        np.array(quality or [GOOD] * n, np.uint8),
    )


def _same(rules: RuleSet, batches: list[ReadingBatch]) -> RuleEngine:
    vec, ref = RuleEngine(rules), ReferenceEngine(rules)
    for i, b in enumerate(batches):
        now = int(b.ts.max())
        got, want = vec.evaluate(b, now), ref.evaluate(b, now)
        assert got.equals(want), f"batch {i}: {got.rows()} != {want.rows()}"
    later = int(batches[-1].ts.max()) + 20_000_000
    assert vec.tick(later).equals(ref.tick(later))
    assert not vec.snapshot().differences(ref.snapshot())
    return vec


def test_a_sample_at_a_clear_threshold_or_one_ulp_off_clears_as_the_reference() -> None:
    """Clear is strict (LOW at x > clear_at, HIGH at x < clear_at): the engine compares with
    the next float up, which must clear at one ulp past the threshold and not at it."""
    set_at, clear_at = (10.0, 20.0, 80.0, 90.0), (10.5, 20.25, 79.5, 89.75)
    rules = _rules(8, set_at, clear_at)
    spikes = [5.0, 5.0, 95.0, 95.0, 15.0, 15.0, 85.0, 85.0]  # past LL+L, L, H, H+HH
    batches, step = [_batch(list(range(8)), [50.0] * 8, 0)], 1
    for c in clear_at:
        for x in (np.nextafter(c, -np.inf), c, np.nextafter(c, np.inf)):
            batches.append(_batch(list(range(8)), spikes, step))
            batches.append(_batch(list(range(8)), [float(x)] * 8, step + 1))
            step += 20  # past the on-delays, so the even tags set too
    _same(rules, batches)


def test_an_infinite_deadband_never_clears_and_infinite_samples_compare_exactly() -> None:
    """clear_at = +inf (LOW) or -inf (HIGH): nothing is past it, not even an infinite sample
    (+inf has no next float up: the engine stores NaN, which nothing reaches)."""
    inf = np.inf
    rules = _rules(4, (10.0, 20.0, 80.0, 90.0), (inf, inf, -inf, -inf))
    batches = [_batch([0, 1, 2, 3], [50.0] * 4, 0)]
    for step, x in enumerate([5.0, 95.0, inf, -inf, 50.0, np.finfo(float).max, -np.finfo(float).max], 1):
        batches.append(_batch([0, 1, 2, 3], [x] * 4, 20 * step))
    vec = _same(rules, batches)
    assert vec.active(), "set, and never cleared"


def test_live_tags_growing_and_shrinking_between_batches_reuse_the_scratch_arrays() -> None:
    """The step's scratch arrays (signs and slot offsets per live tag) grow to the most live
    tags seen and are sliced for fewer: batches of 1, 300, 2, 0, 150 and 400 live tags, spikes and bad quality
    in between, against the reference."""
    rules = _rules(400, (10.0, 20.0, 80.0, 90.0), (11.0, 21.0, 79.0, 89.0))
    rng = np.random.default_rng(5)
    batches = [_batch(list(range(400)), [50.0] * 400, 0)]
    for step, n_live in enumerate([1, 300, 2, 0, 150, 400, 3, 399], 1):
        tags = rng.choice(400, 400, replace=False)
        value = np.full(400, 50.0)
        value[:n_live] = rng.choice([5.0, 15.0, 85.0, 95.0, 10.0, 90.0], n_live)
        quality = np.where(rng.random(400) < 0.02, BAD, GOOD)
        batches.append(_batch(tags.tolist(), value.tolist(), 7 * step, quality.tolist()))
    vec = _same(rules, batches)
    assert vec.limits._signs.size == 8 * 400 and vec.limits._evens.size == 4 * 400


def test_edges_come_out_by_rule_in_the_edges_dtypes() -> None:
    """Parts whose columns have the edges' dtypes skip the conversion and are ordered by rule
    (stable: a rule's edges in the order they happened); a part of other dtypes (int32 rules,
    float32 values) goes through ConditionEdges.of."""
    fast: EdgeParts = [
        (np.array([7, 2]), np.array([True, False]), np.array([5, 6]), np.array([1.0, 2.0]), np.array([np.nan, 3.0]), np.array([2, 3], np.uint8)),
        (np.array([2]), np.array([True]), np.array([7]), np.array([9.0]), np.array([1.0]), np.array([1], np.uint8)),
    ]  # fmt: skip
    got = _edges(fast)
    assert got.rule.tolist() == [2, 2, 7] and got.ts.tolist() == [6, 7, 5]
    rule, active, ts, value, limit, sev = fast[0]
    got = _edges([(rule.astype(np.int32), active, ts, value.astype(np.float32), limit, sev)])
    assert got.rule.dtype == np.int64 and got.value.dtype == np.float64
    assert got.rule.tolist() == [2, 7] and got.value.tolist() == [2.0, 1.0]
