"""Table tests: MooN voting with bypassed and failed inputs, demand without action timing,
bypass age and out of service (IL1 2oo3 on LT1/LT2/LT3 >= 90 with LT1 bypassed by HS1,
final element XV1 safe at 0 within 10 s, bypass approved for 1 h; IL3 out of service)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from core.conditions import RuleKind, Severity
from rules.engine import RuleEngine
from rules.interlock import SIF_ABLE, SIF_DISABLED, SIF_UNKNOWN
from rules.reference import ReferenceEngine
from tests.rules.streams import BAD, GOOD, at, batch, play, rules_for_tests

RULES = rules_for_tests()
K = RuleKind
HI, NORMAL = 95.0, 50.0

# (LT1, LT2, LT3, HS1 bypass) as (value, quality); -> (demand, effective voting, votes)
VOTING: dict[str, tuple[tuple[tuple[float, int], ...], bool, str, int]] = {
    "2oo3 all normal": (((NORMAL, GOOD), (NORMAL, GOOD), (NORMAL, GOOD), (0, GOOD)), False, "2oo3", 0),
    "2oo3 one high": (((HI, GOOD), (NORMAL, GOOD), (NORMAL, GOOD), (0, GOOD)), False, "2oo3", 1),
    "2oo3 two high trips": (((HI, GOOD), (HI, GOOD), (NORMAL, GOOD), (0, GOOD)), True, "2oo3", 2),
    "2oo3 three high trips": (((HI, GOOD), (HI, GOOD), (HI, GOOD), (0, GOOD)), True, "2oo3", 3),
    "bypassed input leaves 2oo2, one high is not enough": (
        ((NORMAL, GOOD), (HI, GOOD), (NORMAL, GOOD), (1, GOOD)),
        False,
        "2oo2",
        1,
    ),
    "bypassed input leaves 2oo2, both high trip": (
        ((NORMAL, GOOD), (HI, GOOD), (HI, GOOD), (1, GOOD)),
        True,
        "2oo2",
        2,
    ),
    "a bypassed input's vote does not count": (
        ((HI, GOOD), (HI, GOOD), (NORMAL, GOOD), (1, GOOD)),
        False,
        "2oo2",
        1,
    ),
    "failed input leaves 2oo2, both high trip": (
        ((HI, GOOD), (HI, GOOD), (0, BAD), (0, GOOD)),
        True,
        "2oo2",
        2,
    ),
    "failed input leaves 2oo2, one high is not enough": (
        ((HI, GOOD), (NORMAL, GOOD), (0, BAD), (0, GOOD)),
        False,
        "2oo2",
        1,
    ),
    "NaN counts as failed": (((HI, GOOD), (float("nan"), GOOD), (NORMAL, GOOD), (0, GOOD)), False, "2oo2", 1),
    "two failed leave 1oo1": (((HI, GOOD), (0, BAD), (0, BAD), (0, GOOD)), True, "1oo1", 1),
    "bypassed and failed leave 1oo1": (((NORMAL, GOOD), (HI, GOOD), (0, BAD), (1, GOOD)), True, "1oo1", 1),
    "a bad bypass switch does not bypass": (
        ((HI, GOOD), (HI, GOOD), (NORMAL, GOOD), (1, BAD)),
        True,
        "2oo3",
        2,
    ),
}


@pytest.mark.parametrize("name", VOTING)
@pytest.mark.parametrize("impl", [RuleEngine, ReferenceEngine])
def test_voting(name: str, impl: type[RuleEngine] | type[ReferenceEngine]) -> None:
    (lt1, lt2, lt3, hs1), demand, effective, votes = VOTING[name]
    engine = impl(RULES)
    rows = [
        (ref, 1, v, q)
        for ref, (v, q) in zip(("V1.LT1", "V1.LT2", "V1.LT3", "V1.HS1"), (lt1, lt2, lt3, hs1), strict=True)
    ]
    edges = engine.evaluate(batch(RULES, *rows, ("V1.XV1", 1, 0)), at(1))
    demand_rule = RULES.index_of("H1.IL1:TRIP_DEMAND")
    assert [(a, ts) for r, a, ts, *_ in edges.rows() if r == demand_rule] == (
        [(True, at(1))] if demand else []
    )
    if isinstance(engine, RuleEngine):
        (status,) = [s for s in engine.interlock_status() if s.key == "H1.IL1"]
        assert (status.demand, status.effective, status.votes, status.voting) == (
            demand,
            effective,
            votes,
            "2oo3",
        )


def test_every_input_failed_holds_the_demand() -> None:
    engine = RuleEngine(RULES)
    engine.evaluate(batch(RULES, ("V1.LT1", 1, HI), ("V1.LT2", 1, HI), ("V1.LT3", 1, HI)), at(1))
    edges = engine.evaluate(
        batch(RULES, ("V1.LT1", 2, 0, BAD), ("V1.LT2", 2, 0, BAD), ("V1.LT3", 2, 0, BAD)), at(2)
    )
    assert RULES.index_of("H1.IL1:TRIP_DEMAND") not in edges.rule.tolist()
    (status,) = [s for s in engine.interlock_status() if s.key == "H1.IL1"]
    assert status.demand and status.effective == "0oo0" and len(status.failed) == 3


DEMAND = [("V1.LT1", 1, HI), ("V1.LT2", 1, HI), ("V1.LT3", 1, NORMAL)]
TIMING: dict[str, tuple[set[RuleKind], list[tuple[Any, ...]], list[tuple[str, bool, float]]]] = {
    "demand without action after the response time, on a tick": (
        {K.TRIP_DEMAND, K.NO_ACTION},
        [("b", 0, [("V1.XV1", 0, 1)]), ("b", 1, DEMAND), ("t", 10.9), ("t", 11)],
        [("H1.IL1:TRIP_DEMAND", True, 1.0), ("H1.IL1:NO_ACTION", True, 11.0)],
    ),
    "the valve closing in time means no alarm": (
        {K.NO_ACTION},
        [("b", 0, [("V1.XV1", 0, 1)]), ("b", 1, DEMAND), ("b", 8, [("V1.XV1", 8, 0)]), ("t", 30)],
        [],
    ),
    "a late close clears demand without action": (
        {K.NO_ACTION},
        [("b", 0, [("V1.XV1", 0, 1)]), ("b", 1, DEMAND), ("t", 11), ("b", 12, [("V1.XV1", 12, 0)])],
        [("H1.IL1:NO_ACTION", True, 11.0), ("H1.IL1:NO_ACTION", False, 12.0)],
    ),
    # r1 §6: invalid feedback is reported as the feedback tag's BAD_QUALITY, not as a critical
    # demand without action; issue 9 #13: the response time still runs from the demand, so
    # valid feedback after the deadline that is not safe raises it at once (not 10 s later)
    "bad valve feedback holds demand without action and shows as bad quality": (
        {K.NO_ACTION, K.BAD_QUALITY},
        [
            ("b", 0, [("V1.XV1", 0, 1)]),
            ("b", 1, DEMAND),
            ("b", 5, [("V1.XV1", 5, 0, BAD)]),
            ("t", 11),
            ("t", 20),
            ("b", 21, [("V1.XV1", 21, 1)]),
            ("t", 30.9),
            ("t", 31),
        ],
        [
            ("E1.V1.XV1:BAD_QUALITY", True, 5.0),
            ("E1.V1.XV1:BAD_QUALITY", False, 21.0),
            ("H1.IL1:NO_ACTION", True, 21.0),
        ],
    ),
    "demand without action seen in the data when no tick comes": (
        {K.NO_ACTION},
        [("b", 0, [("V1.XV1", 0, 1)]), ("b", 1, DEMAND), ("b", 12, [("V1.XV1", 12, 1)])],
        [("H1.IL1:NO_ACTION", True, 12.0)],
    ),
    "bypass raised at once and again when older than approved": (
        {K.INPUT_BYPASSED, K.BYPASS_OVERDUE},
        [("b", 0, [("V1.HS1", 0, 1)]), ("t", 3599), ("t", 3600), ("b", 3700, [("V1.HS1", 3700, 0)])],
        [
            ("H1.IL1:INPUT_BYPASSED", True, 0.0),
            ("H1.IL1:INPUT_BYPASSED", False, 3700.0),
            ("H1.IL1:BYPASS_OVERDUE", True, 3600.0),
            ("H1.IL1:BYPASS_OVERDUE", False, 3700.0),
        ],
    ),
    "an interlock out of service is reported from the start": (
        {K.OUT_OF_SERVICE},
        [("t", 5), ("t", 6)],
        [("H1.IL3:OUT_OF_SERVICE", True, 5.0)],
    ),
    "1oo2 with a discrete input": (
        {K.TRIP_DEMAND},
        [
            ("b", 1, [("V1.AT1", 1, 10), ("V1.LS1", 1, 0)]),
            ("b", 2, [("V1.LS1", 2, 1)]),
            ("b", 3, [("V1.LS1", 3, 0)]),
        ],
        [("H1.IL2:TRIP_DEMAND", True, 2.0), ("H1.IL2:TRIP_DEMAND", False, 3.0)],
    ),
}


@pytest.mark.parametrize("name", TIMING)
@pytest.mark.parametrize("impl", [RuleEngine, ReferenceEngine])
def test_interlock_timing(name: str, impl: type[RuleEngine] | type[ReferenceEngine]) -> None:
    kinds, script, expected = TIMING[name]
    assert play(impl(RULES), script, kinds) == expected


def test_demand_without_action_is_critical() -> None:
    engine = RuleEngine(RULES)
    engine.evaluate(batch(RULES, ("V1.XV1", 0, 1)), at(0))
    engine.evaluate(batch(RULES, *DEMAND), at(1))
    edges = engine.tick(at(11))
    (row,) = [r for r in edges.rows() if r[0] == RULES.index_of("H1.IL1:NO_ACTION")]
    assert row[5] == Severity.CRITICAL and row[3] == 1.0 and row[4] == 0.0  # feedback 1, safe 0


# IL1's inputs (LT1, LT2, LT3, HS1 bypassing LT1) as (value, quality), None for never reported
# -> IL1's sif_state: a 2oo3 can act while one input votes; IL3 (out of service) never can
OK, OUT = (NORMAL, GOOD), (0, BAD)
SIF: dict[str, tuple[tuple[tuple[float, int] | None, ...], int]] = {
    "nothing reported: not known yet": ((None, None, None, None), SIF_UNKNOWN),
    "all healthy": ((OK, OK, OK, (0, GOOD)), SIF_ABLE),
    "one bypassed (2oo2)": ((OK, OK, OK, (1, GOOD)), SIF_ABLE),
    "one failed (2oo2)": ((OUT, OK, OK, (0, GOOD)), SIF_ABLE),
    "one bypassed, one failed (1oo1)": ((OK, OUT, OK, (1, GOOD)), SIF_ABLE),
    "two failed (1oo1)": ((OUT, OUT, OK, None), SIF_ABLE),
    "one bypassed, two failed (0oo0)": ((OK, OUT, OUT, (1, GOOD)), SIF_DISABLED),
    "a bypassed input that never reported counts as bypassed": ((None, OUT, OUT, (1, GOOD)), SIF_DISABLED),
    "three failed (0oo0)": ((OUT, OUT, OUT, (0, GOOD)), SIF_DISABLED),
    "NaN counts as failed": (((float("nan"), GOOD), OUT, OUT, None), SIF_DISABLED),
    "two failed, one never reported: not known yet": ((OUT, OUT, None, None), SIF_UNKNOWN),
    "one healthy is enough whatever the others": ((OUT, None, OK, None), SIF_ABLE),
}
IL1, IL3 = RULES.interlocks.keys.index("H1.IL1"), RULES.interlocks.keys.index("H1.IL3")


@pytest.mark.parametrize("name", SIF)
def test_sif_state(name: str) -> None:
    inputs, want = SIF[name]
    engine = RuleEngine(RULES)
    rows = [
        (ref, 1, *given)
        for ref, given in zip(("V1.LT1", "V1.LT2", "V1.LT3", "V1.HS1"), inputs, strict=True)
        if given is not None
    ]
    if rows:
        engine.evaluate(batch(RULES, *rows), at(1))
    which, state = engine.sif_state()
    assert which.tolist() == [0, 1, 2]  # the first call: every interlock
    assert (int(state[IL1]), int(state[IL3])) == (want, SIF_DISABLED)
    (status,) = engine.interlock_status(np.array([IL1]))
    assert status.key == "H1.IL1" and status.m == 2
    assert (status.can_vote == 0) == (want != SIF_ABLE)


def test_sif_state_is_of_the_interlocks_whose_inputs_changed_status() -> None:
    engine = RuleEngine(RULES)
    engine.evaluate(batch(RULES, ("V1.LT1", 1, 0, BAD), ("V1.LT2", 1, 0, BAD), ("V1.LT3", 1, 0, BAD)), at(1))
    which, state = engine.sif_state()
    assert state[which.tolist().index(IL1)] == SIF_DISABLED
    assert engine.sif_state()[0].size == 0
    engine.evaluate(batch(RULES, ("V1.LT1", 2, 0, BAD)), at(2))  # still failed: no change
    engine.tick(at(3))
    assert engine.sif_state()[0].size == 0
    engine.evaluate(batch(RULES, ("V1.LT3", 4, NORMAL), ("V1.AT1", 4, 10)), at(4))
    which, state = engine.sif_state()
    assert which.tolist() == [IL1, IL1 + 1] and state.tolist() == [SIF_ABLE, SIF_ABLE]
    (status,) = engine.interlock_status(np.array([IL1]))
    assert (status.can_vote, status.failed) == (1, ("E1.V1.LT1", "E1.V1.LT2"))


def test_sif_state_after_restore_is_the_restored_tag_state() -> None:
    engine = RuleEngine(RULES)
    engine.evaluate(batch(RULES, ("V1.LT1", 1, 0, BAD), ("V1.LT2", 1, 0, BAD), ("V1.LT3", 1, 0, BAD)), at(1))
    again = RuleEngine(RULES)
    again.restore(engine.snapshot())
    which, state = again.sif_state()  # before any batch or tick
    assert which.tolist() == [0, 1, 2] and state[IL1] == SIF_DISABLED
