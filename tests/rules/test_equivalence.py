"""The vectorized RuleEngine computes exactly what the scalar ReferenceEngine defines.

Hypothesis drives both with the same random calls: batches with values at and around every
threshold, NaN, inf, bad and uncertain quality, comm-failure markers, several samples of one tag, late
(out-of-order) samples, samples stamped ahead of their arrival (within and beyond the allowed
skew), steps of the rate-of-change tag at several cadences, gaps long enough for
stale/frozen/bypass timers, ticks, and snapshot/restore in the middle. Edges must be identical,
and so must the state.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.batch import ReadingBatch
from core.clock import US_PER_S
from core.conditions import RuleKind
from core.quality import Quality
from rules.engine import RuleEngine
from rules.reference import ReferenceEngine
from rules.ruleset import RuleSet
from tests.rules.streams import BAD, GOOD, T0, UNCERTAIN, interesting_values, rules_for_tests, step_ops

RULES = rules_for_tests()
COMM = int(Quality.BAD_COMM_FAILURE)  # a collector's link-loss marker: never dropped as late
VALUES = [interesting_values(RULES, t) for t in range(RULES.n_tags)]
STEPS_S = [0.0, 0.3, 1.0, 2.0, 3.0, 5.0, 11.0, 31.0, 61.0, 3601.0]
LAGS_S = [0.0, 0.0, 0.1, 1.0, 4.0, 40.0, -30.0, -400.0]  # negative: stamped ahead of arrival
ROC_TAGS = sorted(set(RULES.tag[RULES.kind == RuleKind.ROC].tolist()))


@st.composite
def reading(draw: st.DrawFn) -> tuple[int, float, float | None, int]:
    tag = draw(st.integers(0, RULES.n_tags - 1))
    if draw(st.integers(0, 4)) == 0:
        lo, hi = -5.0, 105.0
        value: float | None = draw(st.floats(lo, hi))
    else:
        value = draw(st.sampled_from(VALUES[tag]))
    quality = draw(st.sampled_from([GOOD] * 6 + [BAD, UNCERTAIN, COMM]))
    return tag, draw(st.sampled_from(LAGS_S)), value, quality


OPS = st.one_of(
    st.tuples(st.just("batch"), st.sampled_from(STEPS_S), st.lists(reading(), max_size=12)),
    st.tuples(st.just("tick"), st.sampled_from(STEPS_S), st.just([])),
    st.tuples(st.just("restore"), st.just(0.0), st.just([])),
)


@st.composite
def step(draw: st.DrawFn) -> list[tuple[str, float, list[Any]]]:
    """A rate-of-change tag polled at a steady cadence through one step (issue 9 #11)."""
    return step_ops(
        draw(st.sampled_from(ROC_TAGS)),
        draw(st.sampled_from([0.0, 50.0])),
        draw(st.sampled_from([-20.0, -6.0, -5.0, 2.0, 5.0, 5.5, 6.0, 30.0])),
        draw(st.integers(0, 20)),
        draw(st.integers(2, 40)),
        draw(st.sampled_from([0.3, 0.5, 1.0, 3.0, 11.0])),
    )


MIXED = st.lists(st.one_of(OPS.map(lambda op: [op]), step()), min_size=1, max_size=8).map(
    lambda parts: [op for part in parts for op in part]
)


def _batch(rows: list[tuple[int, float, float | None, int]], now: int) -> ReadingBatch:
    return ReadingBatch.from_rows((t, now - round(lag * US_PER_S), v, q) for t, lag, v, q in rows)


def run_both(rules: RuleSet, ops: list[tuple[str, float, list[Any]]]) -> None:
    vec, ref = RuleEngine(rules), ReferenceEngine(rules)
    now = T0
    for i, (op, step_s, rows) in enumerate(ops):
        now += round(step_s * US_PER_S)
        if op == "batch":
            b = _batch(rows, now)
            got, want = vec.evaluate(b, now), ref.evaluate(b, now)
        elif op == "tick":
            got, want = vec.tick(now), ref.tick(now)
        else:
            snap = ref.snapshot()
            vec, ref = RuleEngine(rules), ReferenceEngine(rules)
            vec.restore(snap)
            ref.restore(snap)
            continue
        assert got.equals(want), f"op {i} {op}: vectorized {got.rows()} != reference {want.rows()}"
        diff = vec.snapshot().differences(ref.snapshot())
        assert not diff, f"op {i} {op}: state differs: {diff[:5]}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, min_size=1, max_size=25))
def test_vectorized_equals_reference(ops: list[tuple[str, float, list[Any]]]) -> None:
    run_both(RULES, ops)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MIXED)
def test_steps_of_the_rate_tag(ops: list[tuple[str, float, list[Any]]]) -> None:
    run_both(RULES, ops)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.just("batch"), st.sampled_from([1.0, 2.0]), st.lists(reading(), min_size=20, max_size=60)
        ),
        min_size=2,
        max_size=8,
    )
)
def test_dense_batches_with_repeats(ops: list[tuple[str, float, list[Any]]]) -> None:
    run_both(RULES, ops)


def test_every_tag_every_value_once() -> None:
    """A deterministic sweep: each tag through each of its interesting values, twice over."""
    rng = np.random.default_rng(7)
    ops: list[tuple[str, float, list[Any]]] = []
    for _ in range(2):
        for tag in rng.permutation(RULES.n_tags).tolist():
            for v in VALUES[tag]:
                ops.append(("batch", 1.0, [(tag, 0.0, v, GOOD)]))
            ops.append(("tick", 61.0, []))
    run_both(RULES, ops)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bench_shaped_workload(seed: int) -> None:
    """The benchmark's rule set, scaled down: many tags per batch, repeats, spikes, bad quality."""
    from bench.rules import synthetic_rules

    rules = synthetic_rules(n_tags=300, n_interlocks=60, seed=seed)
    rng = np.random.default_rng(seed)
    vec, ref = RuleEngine(rules), ReferenceEngine(rules)
    level = rng.uniform(30, 70, rules.n_tags)
    for step in range(80):
        now = T0 + step * 1_000_000
        tags = rng.integers(0, rules.n_tags, 120)
        level[tags] += rng.normal(0, 8, tags.size)
        value = np.where(
            rng.random(tags.size) < 0.05, rng.choice([5.0, 95.0, 101.5, np.nan], tags.size), level[tags]
        )
        quality = np.where(rng.random(tags.size) < 0.03, 0x18, 0xC0).astype(np.uint8)
        ts = now - rng.choice([0, 0, 0, 300_000, 2_000_000], tags.size)
        batch = ReadingBatch(tags.astype(np.int32), ts.astype(np.int64), value, quality)
        got, want = vec.evaluate(batch, now), ref.evaluate(batch, now)
        assert got.equals(want), f"step {step}"
        if step % 20 == 19:
            assert not vec.snapshot().differences(ref.snapshot())
