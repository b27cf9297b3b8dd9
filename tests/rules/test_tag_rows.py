"""The engine's per-tag rows and quiet band: the band never hides a sample a rule must see
(exactly at a limit, one ulp either side), busy tags are always seen, unique batches (one
gathered row per sample) equal the reference, rows sit on cache lines, and the engine's
unique() equals numpy's."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.batch import ReadingBatch
from rules.engine import TAG_ROW, RuleEngine
from rules.machine import unique_sorted
from rules.reference import ReferenceEngine
from rules.ruleset import RuleSet
from tests.rules.streams import T0

GOOD, BAD = 0xC0, 0x18


def _limits_rules(n_tags: int, lo_hi: tuple[float, float, float, float], deadband: float) -> RuleSet:
    """The bench's limit rules (LL/L/H/HH, on-delay on even tags) with other limit values."""
    from bench.rules import synthetic_rules

    rules = synthetic_rules(n_tags=n_tags, n_interlocks=0, checks=False)
    set_at = np.tile(np.array(lo_hi), n_tags)
    clear_at = set_at + np.tile([deadband, deadband, -deadband, -deadband], n_tags)
    return dataclasses.replace(rules, set_at=set_at, clear_at=clear_at, limit=set_at.copy())


def _run(rules: RuleSet, batches: list[ReadingBatch]) -> None:
    vec, ref = RuleEngine(rules), ReferenceEngine(rules)
    for i, b in enumerate(batches):
        now = int(b.ts.max())
        assert vec.evaluate(b, now).equals(ref.evaluate(b, now)), f"batch {i}"
    later = int(batches[-1].ts.max()) + 20_000_000  # the delays that ran out
    assert vec.tick(later).equals(ref.tick(later))
    assert not vec.snapshot().differences(ref.snapshot())


def _one(tags: list[int], values: list[float], step: int, quality: int = GOOD) -> ReadingBatch:
    n = len(tags)
    return ReadingBatch(
        np.array(tags, np.int32),
        np.full(n, T0 + step * 1_000_000, np.int64),
        np.array(values, float),
        np.full(n, quality, np.uint8),
    )


def test_a_sample_exactly_at_a_limit_is_never_quiet() -> None:
    """The band is open and exact: a narrower store (0.7 and 1.1 rounded to the nearest
    float32 lie outside the band, 0.69999999 below L and 1.10000002 above H) would call a
    sample exactly at L or H quiet and miss the condition."""
    lims = (0.3, 0.7, 1.1, 1.3)
    rules = _limits_rules(4, lims, deadband=0.01)
    vec = RuleEngine(rules)
    vec.evaluate(_one([0, 1, 2, 3], [0.9] * 4, 0), T0)
    # tags 1 and 3 have no on-delay: a sample exactly at H / L sets it at once
    edges = vec.evaluate(_one([1, 3], [1.1, 0.7], 1), T0 + 1_000_000)
    assert sorted(rules.keys[r] for r in edges.rule.tolist()) == ["T1:H", "T3:L"]
    # and the same stream through the reference, values one float64 ulp either side too
    near = [np.nextafter(x, d) for x in lims for d in (-np.inf, np.inf)] + list(lims)
    batches = [_one([0, 1, 2, 3], [0.9] * 4, 0)]
    for i, x in enumerate(near):
        batches.append(_one([1, 3, 0, 2], [x, x, x, x], 2 * i + 1))
        batches.append(_one([3, 1, 2, 0], [0.9] * 4, 2 * i + 2))
    _run(rules, batches)


def test_a_busy_tag_sees_samples_inside_its_band() -> None:
    """While an on-delay runs, a sample back inside the band must cancel it (the band is
    empty for a busy tag), and the next spike must start a new delay."""
    rules = _limits_rules(2, (10.0, 20.0, 80.0, 90.0), deadband=1.0)
    vec = RuleEngine(rules)
    vec.evaluate(_one([0], [50.0], 0), T0)
    vec.evaluate(_one([0], [85.0], 1), T0 + 1_000_000)  # H on-delay 15 s starts (tag 0: delayed)
    vec.evaluate(_one([0], [50.0], 2), T0 + 2_000_000)  # back inside: cancels the delay
    assert len(vec.tick(T0 + 16_500_000)) == 0
    vec.evaluate(_one([0], [85.0], 20), T0 + 20_000_000)
    edges = vec.tick(T0 + 35_000_000)
    assert [rules.keys[r] for r in edges.rule.tolist()] == ["T0:H"]


@pytest.mark.parametrize("checks", [False, True])
@pytest.mark.parametrize("seed", [1, 2])
def test_unique_batches_equal_the_reference(seed: int, checks: bool) -> None:
    """Bench-shaped batches with one sample per tag (the one-gather path), late and comm-failure
    samples, spikes at exact limits, NaN and bad quality."""
    from bench.rules import synthetic_rules

    rules = synthetic_rules(n_tags=400, n_interlocks=40 if checks else 0, checks=checks, seed=seed)
    rng = np.random.default_rng(seed)
    level = rng.uniform(30, 70, rules.n_tags)
    batches = []
    for step in range(60):
        now = T0 + step * 1_000_000
        tags = rng.choice(rules.n_tags, 150, replace=False)
        level[tags] += rng.normal(0, 6, tags.size)
        spikes = rng.choice([5.0, 10.0, 11.0, 20.0, 80.0, 89.0, 90.0, 95.0, 101.5, np.nan], tags.size)
        value = np.where(rng.random(tags.size) < 0.08, spikes, level[tags])
        quality = np.where(rng.random(tags.size) < 0.03, BAD, GOOD).astype(np.uint8)
        ts = now - rng.choice([0, 0, 0, 0, 2_500_000], tags.size)  # some older than the tag's last
        batches.append(ReadingBatch(tags.astype(np.int32), ts.astype(np.int64), value, quality))
    vec, ref = RuleEngine(rules), ReferenceEngine(rules)
    for step, b in enumerate(batches):
        now = T0 + step * 1_000_000
        assert vec.evaluate(b, now).equals(ref.evaluate(b, now)), f"step {step}"
    assert not vec.snapshot().differences(ref.snapshot())


def test_each_tag_row_is_one_cache_line() -> None:
    from bench.rules import synthetic_rules

    engine = RuleEngine(synthetic_rules(n_tags=1000, n_interlocks=0, checks=False))
    tab = engine._tab
    assert TAG_ROW.itemsize == 64
    assert tab.ctypes.data % 64 == 0
    assert engine.value.base is not None and np.shares_memory(engine.value, tab)
    assert np.shares_memory(engine.valid, tab) and np.shares_memory(engine.quality, tab)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(2**62), 2**62), max_size=60))
def test_unique_sorted_is_numpys_unique(values: list[int]) -> None:
    a = np.array(values, np.int64)
    got = unique_sorted(a)
    assert got.dtype == np.int64
    assert np.array_equal(got, np.unique(a))


def test_limit_slots_deadlines_and_delays_are_one_record_per_tag() -> None:
    from bench.rules import synthetic_rules

    engine = RuleEngine(synthetic_rules(n_tags=1000, n_interlocks=0, checks=False))
    lim = engine.limits
    rec, s = lim.rec, lim.slots
    assert rec.shape == (1000, 4, 4) and rec.ctypes.data % 64 == 0
    for f, name in enumerate(("due_on", "due_off", "on_us", "off_us")):
        view = getattr(s, name)
        assert np.shares_memory(view, rec), name
        assert np.array_equal(view.reshape(-1, 4), rec[:, :, f]), name
    assert np.array_equal(s.on_us, engine.rules.on_us[s.rule]), "delays kept per slot"


@pytest.mark.parametrize("bad", [-1, -(2**31), 1000, 2**31 - 1])
def test_tag_outside_the_registry_is_refused(bad: int) -> None:
    from bench.rules import synthetic_rules
    from core.errors import BatchError

    engine = RuleEngine(synthetic_rules(n_tags=1000, n_interlocks=0, checks=False))
    batch = ReadingBatch(
        np.array([3, bad], np.int32),
        np.array([T0, T0], np.int64),
        np.array([50.0, 50.0]),
        np.array([0xC0] * 2, np.uint8),
    )
    with pytest.raises(BatchError, match="outside the registry"):
        engine.evaluate(batch, T0)


@pytest.mark.parametrize(("compact", "chunks"), [(8, 64), (4096, 64), (4096, 2)])
def test_listed_deadlines_fire_as_the_reference(
    compact: int, chunks: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deadlines started, cancelled and restarted across batches, fired by ticks between them:
    Slots.fire reads only the chunks of listed entries due by their earliest listed deadline,
    lists what still runs again (and, past ``_COMPACT`` entries or ``_CHUNKS`` chunks, checks
    all and keeps one per slot) and must fire exactly what the reference does."""
    import rules.machine
    from bench.rules import synthetic_rules

    monkeypatch.setattr(rules.machine, "_COMPACT", compact)
    monkeypatch.setattr(rules.machine, "_CHUNKS", chunks)
    rs = synthetic_rules(n_tags=300, n_interlocks=20, checks=True, seed=3)
    rng = np.random.default_rng(3)
    vec, ref = RuleEngine(rs), ReferenceEngine(rs)
    for step in range(40):
        now = T0 + step * 4_000_000
        tags = rng.choice(rs.n_tags, 120, replace=False)
        value = rng.choice([50.0, 95.0, 5.0, 85.0, 15.0], tags.size)
        b = ReadingBatch(
            tags.astype(np.int32),
            np.full(tags.size, now, np.int64),
            value,
            np.full(tags.size, GOOD, np.uint8),
        )
        assert vec.evaluate(b, now).equals(ref.evaluate(b, now)), f"step {step}"
        for dt in (1_000_000, 2_500_000):
            assert vec.tick(now + dt).equals(ref.tick(now + dt)), f"tick {step} +{dt}"
    assert not vec.snapshot().differences(ref.snapshot())


def test_a_sample_older_than_its_tags_newest_is_dropped_after_in_order_batches_and_a_restore() -> None:
    """A batch none older than the newest ts the engine holds keeps every sample without
    reading the tags' ts; an older sample later on (T1 at 5 s after 8 s), and one older than
    the state a fresh engine restored (T2), must still be dropped, as the reference does."""
    rules = _limits_rules(4, (10.0, 20.0, 80.0, 90.0), deadband=1.0)
    vec, ref = RuleEngine(rules), ReferenceEngine(rules)
    script = [
        _one([0, 1, 2, 3], [50.0] * 4, 8),
        _one([0, 3], [50.0, 50.0], 9),
        _one([1], [95.0], 5),  # older than T1's 8 s: dropped, no H
        _one([3], [5.0], 9),  # as old as T3's newest: kept, L and LL at once (odd tag)
    ]
    for b in script:
        now = int(b.ts.max())
        assert vec.evaluate(b, now).equals(ref.evaluate(b, now))
    assert sorted(rules.keys[c.rule] for c in vec.active()) == ["T3:L", "T3:LL"]
    vec2, ref2 = RuleEngine(rules), ReferenceEngine(rules)
    vec2.restore(vec.snapshot())
    ref2.restore(ref.snapshot())
    for b in (_one([2], [95.0], 7), _one([1], [95.0], 10)):  # T2 at 7 s < 8 s: dropped
        now = T0 + 10_000_000
        assert vec2.evaluate(b, now).equals(ref2.evaluate(b, now))
    assert sorted(rules.keys[c.rule] for c in vec2.active()) == ["T1:H", "T1:HH", "T3:L", "T3:LL"]
    assert not vec2.snapshot().differences(ref2.snapshot())
