"""Table tests: limits with deadband hysteresis and on/off delays, gas levels, severities.

Each case is a script of steps on the test plant (tests/rules/data/plant.yaml): ``("b", now_s,
rows)`` evaluates a batch at ``now_s``, ``("t", now_s)`` ticks; the edges expected after the
whole script are (rule key, active, seconds after T0), in order per rule. Time comes from a
FakeClock that only moves when told to.
"""

from __future__ import annotations

from typing import Any

import pytest

from core.conditions import LIMIT_KINDS, RuleKind, Severity
from rules.engine import RuleEngine
from rules.reference import ReferenceEngine
from tests.rules.streams import BAD, play, rules_for_tests

RULES = rules_for_tests()
SHOWN = LIMIT_KINDS | {RuleKind.BAD_QUALITY}

CASES: dict[str, tuple[list[tuple[Any, ...]], list[tuple[str, bool, float]]]] = {
    # LT2: H 80, HH 90, deadband 2, no delays. Active at >= limit, clears below limit - deadband.
    "high at the limit, hysteresis on the way down": (
        [
            ("b", 1, [("V1.LT2", 1, 79.9)]),
            ("b", 2, [("V1.LT2", 2, 80.0)]),
            ("b", 3, [("V1.LT2", 3, 78.5)]),
            ("b", 4, [("V1.LT2", 4, 78.0)]),
            ("b", 5, [("V1.LT2", 5, 77.99)]),
        ],
        [("E1.V1.LT2:H", True, 2.0), ("E1.V1.LT2:H", False, 5.0)],
    ),
    "low mirrored": (
        [("b", 1, [("V1.LT2", 1, 20.0)]), ("b", 2, [("V1.LT2", 2, 22.0)]), ("b", 3, [("V1.LT2", 3, 22.01)])],
        [("E1.V1.LT2:L", True, 1.0), ("E1.V1.LT2:L", False, 3.0)],
    ),
    "HH and H both, cleared separately": (
        [("b", 1, [("V1.LT2", 1, 95.0)]), ("b", 2, [("V1.LT2", 2, 85.0)]), ("b", 3, [("V1.LT2", 3, 50.0)])],
        [
            ("E1.V1.LT2:H", True, 1.0),
            ("E1.V1.LT2:H", False, 3.0),
            ("E1.V1.LT2:HH", True, 1.0),
            ("E1.V1.LT2:HH", False, 2.0),
        ],
    ),
    # LT1: on-delay 5 s, off-delay 3 s.
    "on-delay across batches": (
        [("b", 1, [("V1.LT1", 1, 85.0)]), ("b", 4, [("V1.LT1", 4, 85.0)]), ("b", 6, [("V1.LT1", 6, 85.5)])],
        [("E1.V1.LT1:H", True, 6.0)],
    ),
    "on-delay restarts when the value dips below the limit": (
        [
            ("b", 1, [("V1.LT1", 1, 85.0)]),
            ("b", 4, [("V1.LT1", 4, 79.0)]),
            ("b", 5, [("V1.LT1", 5, 85.0)]),
            ("t", 9.9),
            ("t", 10),
        ],
        [("E1.V1.LT1:H", True, 10.0)],
    ),
    "on-delay completes on a timer tick without new data": (
        [("b", 1, [("V1.LT1", 1, 85.0)]), ("t", 5.9), ("t", 6.0)],
        [("E1.V1.LT1:H", True, 6.0)],
    ),
    "off-delay across ticks": (
        [("b", 1, [("V1.LT1", 1, 85.0)]), ("t", 6), ("b", 7, [("V1.LT1", 7, 70.0)]), ("t", 9.5), ("t", 10)],
        [("E1.V1.LT1:H", True, 6.0), ("E1.V1.LT1:H", False, 10.0)],
    ),
    "off-delay restarts inside the deadband": (
        [
            ("b", 1, [("V1.LT1", 1, 85.0)]),
            ("t", 6),
            ("b", 7, [("V1.LT1", 7, 70.0)]),
            ("b", 8, [("V1.LT1", 8, 79.0)]),
            ("t", 10),
            ("b", 11, [("V1.LT1", 11, 70.0)]),
            ("t", 14),
        ],
        [("E1.V1.LT1:H", True, 6.0), ("E1.V1.LT1:H", False, 14.0)],
    ),
    "several samples of one tag in one batch are all seen": (
        [("b", 3, [("V1.LT2", 1, 95.0), ("V1.LT2", 2, 50.0), ("V1.LT2", 3, 60.0)])],
        [
            ("E1.V1.LT2:H", True, 1.0),
            ("E1.V1.LT2:H", False, 2.0),
            ("E1.V1.LT2:HH", True, 1.0),
            ("E1.V1.LT2:HH", False, 2.0),
        ],
    ),
    "NaN and BAD hold the limit state; BAD_QUALITY fires instead": (
        [
            ("b", 1, [("V1.LT2", 1, 95.0)]),
            ("b", 2, [("V1.LT2", 2, float("nan"))]),
            ("b", 3, [("V1.LT2", 3, 10.0, BAD)]),
            ("b", 4, [("V1.LT2", 4, 50.0)]),
        ],
        [
            ("E1.V1.LT2:H", True, 1.0),
            ("E1.V1.LT2:H", False, 4.0),
            ("E1.V1.LT2:HH", True, 1.0),
            ("E1.V1.LT2:HH", False, 4.0),
            ("E1.V1.LT2:BAD_QUALITY", True, 2.0),
            ("E1.V1.LT2:BAD_QUALITY", False, 4.0),
        ],
    ),
    "bad quality stops a running on-delay": (
        [
            ("b", 1, [("V1.LT1", 1, 85.0)]),
            ("b", 3, [("V1.LT1", 3, 85.0, BAD)]),
            ("b", 4, [("V1.LT1", 4, 85.0)]),
            ("t", 8),
            ("t", 9),
        ],
        [
            ("E1.V1.LT1:H", True, 9.0),
            ("E1.V1.LT1:BAD_QUALITY", True, 3.0),
            ("E1.V1.LT1:BAD_QUALITY", False, 4.0),
        ],
    ),
    "out-of-order samples never move state backwards": (
        [("b", 5, [("V1.LT2", 5, 95.0)]), ("b", 6, [("V1.LT2", 2, 50.0)]), ("b", 7, [("V1.LT2", 5, 50.0)])],
        [
            ("E1.V1.LT2:H", True, 5.0),
            ("E1.V1.LT2:H", False, 5.0),
            ("E1.V1.LT2:HH", True, 5.0),
            ("E1.V1.LT2:HH", False, 5.0),
        ],
    ),
    # AT1 NH3 toxic: level 1 = 100 % OEL 28.714 ppm, level 2 = 57.428 ppm; no deadband, no delay.
    "gas levels report the condition; the manager latches": (
        [("b", 1, [("V1.AT1", 1, 30.0)]), ("b", 2, [("V1.AT1", 2, 60.0)]), ("b", 3, [("V1.AT1", 3, 0.0)])],
        [
            ("E1.V1.AT1:GAS_L1", True, 1.0),
            ("E1.V1.AT1:GAS_L1", False, 3.0),
            ("E1.V1.AT1:GAS_L2", True, 2.0),
            ("E1.V1.AT1:GAS_L2", False, 3.0),
        ],
    ),
    "oxygen low and high": (
        [("b", 1, [("P1.AT3", 1, 19.5)]), ("b", 2, [("P1.AT3", 2, 20.9)]), ("b", 3, [("P1.AT3", 3, 23.5)])],
        [("E1.P1.AT3:O2_LOW", True, 1.0), ("E1.P1.AT3:O2_LOW", False, 2.0), ("E1.P1.AT3:O2_HIGH", True, 3.0)],
    ),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("impl", [RuleEngine, ReferenceEngine])
def test_limit_case(name: str, impl: type[RuleEngine] | type[ReferenceEngine]) -> None:
    script, expected = CASES[name]
    assert play(impl(RULES), script, SHOWN) == expected


def test_severity_scale_follows_domain() -> None:
    sev = {k: Severity(int(s)) for k, s in zip(RULES.keys, RULES.severity.tolist(), strict=True)}
    assert sev["E1.V1.LT1:HH"] > sev["E1.V1.LT1:H"] and sev["E1.V1.LT1:LL"] > sev["E1.V1.LT1:L"]
    toxic1, toxic2 = sev["E1.V1.AT1:GAS_L1"], sev["E1.V1.AT1:GAS_L2"]
    comb1, comb2 = sev["E1.P1.AT2:GAS_L1"], sev["E1.P1.AT2:GAS_L2"]
    assert toxic2 > toxic1 and comb2 > comb1  # level 2 outranks level 1
    assert toxic1 > comb1 and toxic2 > comb2  # toxic outranks combustible at the same level
    assert sev["H1.IL1:NO_ACTION"] == Severity.CRITICAL == max(sev.values())


def test_gas_rules_are_latched_and_others_not() -> None:
    latched = {k for k, flag in zip(RULES.keys, RULES.latched.tolist(), strict=True) if flag}
    assert latched == {
        k for k in RULES.keys if k.rsplit(":", 1)[1] in ("GAS_L1", "GAS_L2", "O2_LOW", "O2_HIGH")
    }
    kinds = {RuleKind[k.rsplit(":", 1)[1]] for k in latched}
    assert kinds == {RuleKind.GAS_L1, RuleKind.GAS_L2, RuleKind.O2_LOW, RuleKind.O2_HIGH}
