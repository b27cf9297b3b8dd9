"""Table tests: stale (without any new data), frozen, out of range, rate of change, deviation,
discrete state and command mismatch, each run on both engines (see streams.play)."""

from __future__ import annotations

from typing import Any

import pytest

from core.conditions import RuleKind, Severity
from rules.engine import RuleEngine
from rules.reference import ReferenceEngine
from tests.rules.streams import at, batch, play, rules_for_tests

RULES = rules_for_tests()
K = RuleKind

# tests/rules/data/plant.yaml: LT2 is polled (stale 60 s), LT3 stale_s 30; LT1 frozen 60 s at
# resolution 0.1, band 2 % of 100 around 10/20/80/90, ROC 30 %/min over 10 s, deviation 5 vs
# LT2 after 2 s; LS1 alarms at 1; YS1 follows YC1 within 3 s, XV1 follows XC1 within 5 s.
CASES: dict[str, tuple[set[RuleKind], list[tuple[Any, ...]], list[tuple[str, bool, float]]]] = {
    "stale without any new data, counted from the last sample or the engine start": (
        {K.STALE},
        [
            ("b", 0, [("V1.LT3", 0, 50)]),
            ("t", 29),
            ("t", 30),
            ("t", 59.9),
            ("t", 60),
            ("b", 61, [("V1.LT3", 61, 50)]),
        ],
        [("E1.V1.LT2:STALE", True, 60.0), ("E1.V1.LT3:STALE", True, 30.0), ("E1.V1.LT3:STALE", False, 61.0)],
    ),
    "stale is measured from the engine's start, not from the epoch": (
        {K.STALE},
        [("t", 100), ("t", 129), ("t", 130)],
        [("E1.V1.LT3:STALE", True, 130.0)],
    ),
    "a late (out-of-order) sample changes no limit but shows the source is alive": (
        {K.STALE, K.H},
        [("b", 0, [("V1.LT3", 0, 50)]), ("t", 31), ("b", 32, [("V1.LT3", -1, 95)])],
        [("E1.V1.LT3:STALE", True, 31.0), ("E1.V1.LT3:STALE", False, 32.0)],
    ),
    "stale is about arrival: an old source timestamp still refreshes it": (
        {K.STALE},
        [("b", 0, [("V1.LT3", 0, 50)]), ("b", 25, [("V1.LT3", 0, 50)]), ("t", 54), ("t", 55)],
        [("E1.V1.LT3:STALE", True, 55.0)],
    ),
    "a re-sent sample with the same timestamp is evaluated": (
        {K.H},
        [("b", 0, [("V1.LT3", 0, 50)]), ("b", 1, [("V1.LT3", 0, 95)])],
        [("E1.V1.LT3:H", True, 0.0)],
    ),
    "frozen within resolution for frozen_s, on a tick": (
        {K.FROZEN},
        [
            ("b", 0, [("V1.LT1", 0, 50.0)]),
            ("b", 30, [("V1.LT1", 30, 50.05)]),
            ("t", 59),
            ("t", 60),
            ("b", 70, [("V1.LT1", 70, 51.0)]),
        ],
        [("E1.V1.LT1:FROZEN", True, 60.0), ("E1.V1.LT1:FROZEN", False, 70.0)],
    ),
    "frozen restarts after a real change": (
        {K.FROZEN},
        [
            ("b", 0, [("V1.LT1", 0, 50.0)]),
            ("b", 50, [("V1.LT1", 50, 50.2)]),
            ("t", 100),
            ("b", 110, [("V1.LT1", 110, 50.2)]),
        ],
        [("E1.V1.LT1:FROZEN", True, 110.0)],
    ),
    "out of range beyond the NAMUR margin": (
        {K.OUT_OF_RANGE},
        [
            ("b", 1, [("V1.LT2", 1, 101.25)]),
            ("b", 2, [("V1.LT2", 2, 101.3)]),
            ("b", 3, [("V1.LT2", 3, -1.3)]),
            ("b", 4, [("V1.LT2", 4, 100.0)]),
        ],
        [("E1.V1.LT2:OUT_OF_RANGE", True, 2.0), ("E1.V1.LT2:OUT_OF_RANGE", False, 4.0)],
    ),
    "rate of change over the window": (
        {K.ROC},
        [
            ("b", 0, [("V1.LT1", 0, 50)]),
            ("b", 5, [("V1.LT1", 5, 54)]),
            ("b", 8, [("V1.LT1", 8, 56)]),
            ("b", 10, [("V1.LT1", 10, 56)]),
            ("b", 12, [("V1.LT1", 12, 56.5)]),  # still 32.5/min against the sample at 0
            ("b", 20, [("V1.LT1", 20, 56.5)]),  # anchor now the sample at 10: 3/min
        ],
        [("E1.V1.LT1:ROC", True, 8.0), ("E1.V1.LT1:ROC", False, 20.0)],
    ),
    # r1 §4: the anchor used to jump to the current sample once a window old, so a steady
    # ramp at twice the limit chattered (active 5, clear 11, active 15, ...)
    "rate of change: a steady ramp above the limit stays active": (
        {K.ROC},
        [("b", s, [("V1.LT1", s, 30.0 + s)]) for s in range(41)],
        [("E1.V1.LT1:ROC", True, 5.0)],
    ),
    "deviation between redundant transmitters, with on-delay": (
        {K.DEVIATION},
        [
            ("b", 0, [("V1.LT1", 0, 50), ("V1.LT2", 0, 50)]),
            ("b", 1, [("V1.LT2", 1, 56)]),
            ("t", 2.9),
            ("b", 3, [("V1.LT2", 3, 56)]),
            ("b", 4, [("V1.LT1", 4, 52)]),
        ],
        [("E1.V1.LT1:DEVIATION", True, 3.0), ("E1.V1.LT1:DEVIATION", False, 4.0)],
    ),
    "deviation holds while a transmitter is bad": (
        {K.DEVIATION},
        [
            ("b", 0, [("V1.LT1", 0, 50), ("V1.LT2", 0, 60)]),
            ("t", 2),
            ("b", 3, [("V1.LT2", 3, 50, 0)]),
            ("b", 4, [("V1.LT2", 4, 50)]),
        ],
        [("E1.V1.LT1:DEVIATION", True, 2.0), ("E1.V1.LT1:DEVIATION", False, 4.0)],
    ),
    "discrete state alarm": (
        {K.STATE},
        [("b", 1, [("V1.LS1", 1, 0)]), ("b", 2, [("V1.LS1", 2, 1)]), ("b", 3, [("V1.LS1", 3, 0)])],
        [("E1.V1.LS1:STATE", True, 2.0), ("E1.V1.LS1:STATE", False, 3.0)],
    ),
    "pump trip: running feedback lost while commanded to run": (
        {K.MISMATCH},
        [
            ("b", 0, [("P1.YC1", 0, 1), ("P1.YS1", 0, 1)]),
            ("b", 5, [("P1.YS1", 5, 0)]),
            ("t", 7.9),
            ("t", 8),
            ("b", 10, [("P1.YS1", 10, 1)]),
        ],
        [("E1.P1.YS1:MISMATCH", True, 8.0), ("E1.P1.YS1:MISMATCH", False, 10.0)],
    ),
    "a valve that follows its command within travel time raises nothing": (
        {K.MISMATCH},
        [("b", 0, [("V1.XC1", 0, 0), ("V1.XV1", 0, 1)]), ("b", 3, [("V1.XV1", 3, 0)]), ("t", 20)],
        [],
    ),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("impl", [RuleEngine, ReferenceEngine])
def test_check_case(name: str, impl: type[RuleEngine] | type[ReferenceEngine]) -> None:
    kinds, script, expected = CASES[name]
    assert play(impl(RULES), script, kinds) == expected


@pytest.mark.parametrize(
    ("value", "severity", "limit"),
    [(50.0, Severity.LOW, None), (80.5, Severity.HIGH, 80.0), (9.0, Severity.HIGH, 10.0)],
)
def test_frozen_near_an_alarm_limit_is_more_severe(
    value: float, severity: Severity, limit: float | None
) -> None:
    """A display pinned near a limit is the tampering signature (DOMAIN.md): high severity."""
    engine = RuleEngine(RULES)
    engine.evaluate(batch(RULES, ("V1.LT1", 0, value)), at(0))
    edges = engine.tick(at(60))
    frozen = RULES.index_of("E1.V1.LT1:FROZEN")
    (row,) = [r for r in edges.rows() if r[0] == frozen]
    assert row[1] is True and row[3] == value and row[5] == severity
    assert (row[4] == limit) if limit is not None else row[4] != row[4]
    (cond,) = [c for c in engine.active() if c.rule == frozen]
    assert cond.severity == severity and cond.since_us == at(60)
