"""Helpers for rule tests: the test plant, readings as rows, and a driver for engines."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from core.batch import ReadingBatch
from core.clock import US_PER_S, FakeClock
from core.conditions import ConditionEdges, RuleKind
from core.config import load_plant
from core.plant import Plant
from core.quality import Quality
from rules.compile import compile_rules
from rules.engine import RuleEngine
from rules.reference import ReferenceEngine
from rules.ruleset import RuleSet

DATA = Path(__file__).parent / "data"
T0 = 1_700_000_000 * US_PER_S
GOOD, BAD, UNCERTAIN = int(Quality.GOOD), int(Quality.BAD_SENSOR_FAILURE), int(Quality.UNCERTAIN)


@cache
def plant_for_tests() -> Plant:
    plant: Plant = load_plant(DATA / "plant.yaml")
    return plant


@cache
def rules_for_tests() -> RuleSet:
    return compile_rules(plant_for_tests())


def at(seconds: float) -> int:
    """T0 + seconds, in µs."""
    return T0 + round(seconds * US_PER_S)


def batch(rules: RuleSet, *rows: tuple[str, float, float] | tuple[str, float, float, int]) -> ReadingBatch:
    """Rows of (tag key or EQUIPMENT.CODE, seconds after T0, value[, quality])."""
    out = []
    for row in rows:
        ref, s, v = row[0], row[1], row[2]
        q = row[3] if len(row) > 3 else GOOD
        key = ref if ref.count(".") >= 2 else f"E1.{ref}"
        out.append((rules.tag_keys.index(key), at(s), float(v), q))
    return ReadingBatch.from_rows(out)


def series(ref: str, points: Sequence[tuple[float, float]], lag_s: float = 0.0) -> list[tuple[Any, ...]]:
    """A ``play`` script delivering one tag's (seconds, value) points one batch each, ``lag_s``
    after their stamp: e.g. a step or a ramp polled every second (NaN values are invalid)."""
    return [("b", s + lag_s, [(ref, s, v)]) for s, v in points]


def step_ops(
    tag: int, start: float, size: float, at_sample: int, n: int, every_s: float
) -> list[tuple[str, float, list[tuple[int, float, float, int]]]]:
    """``run_both`` ops (tests/rules/test_equivalence.py): ``n`` samples of ``tag`` every ``every_s``,
    at ``start`` and from sample ``at_sample`` on at ``start + size`` (a step)."""
    return [
        ("batch", every_s, [(tag, 0.0, start + (size if i >= at_sample else 0.0), GOOD)]) for i in range(n)
    ]


def named(rules: RuleSet, edges: ConditionEdges) -> list[tuple[str, bool, float]]:
    """Edges as (rule key, active, seconds after T0): what table tests compare."""
    return [(rules.keys[r], a, (ts - T0) / US_PER_S) for r, a, ts, *_ in edges.rows()]


def play(
    engine: RuleEngine | ReferenceEngine, script: Sequence[tuple[Any, ...]], kinds: Collection[RuleKind]
) -> list[tuple[str, bool, float]]:
    """Run a script on a FakeClock: ``("b", now_s, rows)`` evaluates a batch, ``("t", now_s)``
    ticks. Returns the edges of rules of ``kinds`` as (key, active, s after T0), per rule in
    time order."""
    rules = engine.rules
    clock = FakeClock(T0)
    out = []
    for step in script:
        clock.set(at(step[1]))
        if step[0] == "b":
            edges = engine.evaluate(batch(rules, *step[2]), clock.now_us())
        else:
            edges = engine.tick(clock.now_us())
        out += [e for e in named(rules, edges) if RuleKind[e[0].rsplit(":", 1)[1]] in kinds]
    order = {k: i for i, k in enumerate(rules.keys)}
    return sorted(out, key=lambda e: order[e[0]])


def interesting_values(rules: RuleSet, tag: int) -> list[float]:
    """Values at and around every threshold that can act on ``tag``."""
    vals = {0.0, 1.0, 0.5, math.nan, math.inf}
    for r in np.flatnonzero((rules.tag == tag) | (rules.tag2 == tag)).tolist():
        for v in (rules.set_at[r], rules.clear_at[r], *rules.params[r]):
            if math.isfinite(v):
                vals |= {float(v), float(np.nextafter(v, math.inf)), float(np.nextafter(v, -math.inf))}
                vals |= {float(v) + 0.05, float(v) - 0.05, float(v) + 3.0, float(v) - 3.0}
    il = rules.interlocks
    for j in np.flatnonzero(il.in_tag == tag).tolist():
        for v in (il.in_lo[j], il.in_hi[j]):
            if math.isfinite(v):
                vals |= {float(v), float(v) + 1.0, float(v) - 1.0}
    return sorted(vals, key=lambda x: (math.isnan(x), x))
