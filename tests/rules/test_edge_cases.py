"""Edge cases of rule evaluation, as table tests on both engines:
comm-failure markers against device clocks, bad bypass switches, demand without action on
invalid feedback, short trip demands inside one batch, delays on arrival time, severity order
of gas levels, and deadlines across a config edit."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from core.conditions import RuleKind
from core.config import load_plant
from core.quality import Quality
from rules.compile import compile_rules
from rules.engine import RuleEngine
from rules.reference import ReferenceEngine
from rules.ruleset import RuleSet
from rules.snapshot import EngineSnapshot
from tests.rules.streams import BAD, DATA, at, batch, named, play, rules_for_tests

RULES = rules_for_tests()
K = RuleKind
COMM = int(Quality.BAD_COMM_FAILURE)
NAN = math.nan
Impl = type[RuleEngine] | type[ReferenceEngine]

CASES: dict[str, tuple[set[RuleKind], list[tuple[Any, ...]], list[tuple[str, bool, float]]]] = {
    # The collector stamps the marker with its gather time (200); the device's clock runs
    # 60 s behind, so every recovered sample is older than the marker, yet it is news
    "real data replaces a comm-failure marker from a device clock running behind": (
        {K.GAS_L1, K.GAS_L2, K.BAD_QUALITY},
        [
            ("b", 100, [("V1.AT1", 100, 5.0)]),
            ("b", 200, [("V1.AT1", 200, NAN, COMM)]),
            ("b", 230, [("V1.AT1", 170, 80.0)]),
            ("b", 235, [("V1.AT1", 175, 80.0)]),
            ("b", 240, [("V1.AT1", 174, 5.0)]),  # real data older than real data: still dropped
        ],
        [
            ("E1.V1.AT1:GAS_L1", True, 170.0),
            ("E1.V1.AT1:GAS_L2", True, 170.0),
            ("E1.V1.AT1:BAD_QUALITY", True, 200.0),
            ("E1.V1.AT1:BAD_QUALITY", False, 170.0),
        ],
    ),
    # The device's clock runs ahead (200 s: within the allowed skew, so the sample is
    # accepted); the marker still states the link now
    "a comm-failure marker older than a device clock running ahead is not dropped": (
        {K.BAD_QUALITY},
        [("b", 100, [("V1.AT1", 300, 5.0)]), ("b", 200, [("V1.AT1", 200, NAN, COMM)])],
        [("E1.V1.AT1:BAD_QUALITY", True, 200.0)],
    ),
    # A comm glitch on the bypass switch used to end the bypass and restart its age
    "a bad bypass switch keeps the bypass and its age": (
        {K.INPUT_BYPASSED, K.BYPASS_OVERDUE},
        [
            ("b", 0, [("V1.HS1", 0, 1.0)]),
            ("b", 1800, [("V1.HS1", 1800, NAN, BAD)]),
            ("b", 1860, [("V1.HS1", 1860, 1.0)]),
            ("t", 3599),
            ("t", 3600),
        ],
        [("H1.IL1:INPUT_BYPASSED", True, 0.0), ("H1.IL1:BYPASS_OVERDUE", True, 3600.0)],
    ),
    "a bypass switch reading BAD from the start bypasses nothing": (
        {K.INPUT_BYPASSED},
        [("b", 0, [("V1.HS1", 0, 1.0, BAD)]), ("t", 10)],
        [],
    ),
    # Comm loss on a tripped interlock whose valve had closed
    "comm loss on a tripped interlock raises no demand without action": (
        {K.NO_ACTION, K.BAD_QUALITY},
        [
            ("b", 0, [("V1.AT1", 0, 60.0), ("V1.LS1", 0, 0.0), ("P1.XV2", 0, 0.0)]),
            ("b", 10, [("V1.AT1", 10, NAN, COMM), ("V1.LS1", 10, NAN, COMM), ("P1.XV2", 10, NAN, COMM)]),
            ("t", 20),
            ("t", 100),
        ],
        [
            ("E1.V1.AT1:BAD_QUALITY", True, 10.0),
            ("E1.V1.LS1:BAD_QUALITY", True, 10.0),
            ("E1.P1.XV2:BAD_QUALITY", True, 10.0),
        ],
    ),
    # Two samples of AT1 in one batch; the interlock used to see only the last
    "a trip demand lasting one sample inside a batch is seen": (
        {K.TRIP_DEMAND},
        [
            ("b", 0, [("V1.AT1", 0, 5.0), ("V1.LS1", 0, 0.0), ("P1.XV2", 0, 1.0)]),
            ("b", 2, [("V1.AT1", 1, 60.0), ("V1.AT1", 2, 5.0)]),
        ],
        [("H1.IL2:TRIP_DEMAND", True, 1.0), ("H1.IL2:TRIP_DEMAND", False, 2.0)],
    ),
    "a 2oo3 vote met only between two timestamps of one batch is seen": (
        {K.TRIP_DEMAND},
        [
            ("b", 0, [("V1.LT1", 0, 50.0), ("V1.LT2", 0, 50.0), ("V1.LT3", 0, 50.0)]),
            ("b", 3, [("V1.LT1", 1, 95.0), ("V1.LT2", 2, 95.0), ("V1.LT1", 3, 50.0)]),
        ],
        [("H1.IL1:TRIP_DEMAND", True, 2.0), ("H1.IL1:TRIP_DEMAND", False, 3.0)],
    ),
    # The on-delay runs from arrival: one H sample delivered 10 s late cannot satisfy
    # its own 5 s delay ...
    "a late sample does not satisfy its own on-delay": (
        {K.H},
        [("b", 10, [("V1.LT1", 0, 85.0)]), ("b", 11, [("V1.LT1", 1, 50.0)]), ("t", 30)],
        [],
    ),
    # ... and a late condition that persists activates 5 s after it arrived
    "the on-delay of a late sample runs from its arrival": (
        {K.H},
        [("b", 10, [("V1.LT1", 0, 85.0)]), ("t", 14.9), ("t", 15)],
        [("E1.V1.LT1:H", True, 15.0)],
    ),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("impl", [RuleEngine, ReferenceEngine])
def test_edge_case(name: str, impl: Impl) -> None:
    kinds, script, expected = CASES[name]
    assert play(impl(RULES), script, kinds) == expected


@pytest.mark.parametrize("impl", [RuleEngine, ReferenceEngine])
def test_a_deviation_seen_only_between_two_timestamps_of_a_batch_is_seen(impl: Impl) -> None:
    """LT1/LT2 deviation (max 5, on-delay 2 s) starts at 1; no tick comes; the next batch holds
    the deviation at 99 and its end at 100: the pair rule sees both, not just the last."""
    script: list[tuple[Any, ...]] = [
        ("b", 0, [("V1.LT1", 0, 50.0), ("V1.LT2", 0, 50.0)]),
        ("b", 1, [("V1.LT1", 1, 70.0)]),
        ("b", 100, [("V1.LT1", 99, 70.0), ("V1.LT1", 100, 50.0)]),
    ]
    key = "E1.V1.LT1:DEVIATION"
    assert play(impl(RULES), script, {K.DEVIATION}) == [(key, True, 99.0), (key, False, 100.0)]


def test_a_bad_bypass_switch_keeps_its_input_out_of_the_vote() -> None:
    engine = RuleEngine(RULES)
    rows = [("V1.HS1", 0, 1.0), ("V1.LT1", 0, 50.0), ("V1.LT2", 0, 50.0), ("V1.LT3", 0, 50.0)]
    engine.evaluate(batch(RULES, *rows), at(0))
    engine.evaluate(batch(RULES, ("V1.HS1", 1, NAN, COMM)), at(1))
    (status,) = [s for s in engine.interlock_status() if s.key == "H1.IL1"]
    assert status.bypassed == ("E1.V1.LT1",) and status.effective == "2oo2"


def test_toxic_level_1_ranks_below_combustible_level_2_at_the_same_severity() -> None:
    """DOMAIN.md: level 2 outranks level 1, toxic outranks combustible at the same level."""
    engine = RuleEngine(RULES)
    engine.evaluate(batch(RULES, ("V1.AT1", 0, 40.0)), at(0))  # toxic L1 (HIGH), older
    engine.evaluate(batch(RULES, ("P1.AT2", 1, 15.0)), at(1))
    engine.evaluate(batch(RULES, ("P1.AT2", 2, 25.0)), at(2))  # combustible L1 (MEDIUM)
    engine.evaluate(batch(RULES, ("P1.AT2", 3, 60.0), ("V1.AT1", 3, 60.0)), at(3))
    order = [c.key for c in engine.active() if c.kind in (K.GAS_L1, K.GAS_L2)]
    assert order == [
        "E1.V1.AT1:GAS_L2",  # toxic L2 (CRITICAL)
        "E1.P1.AT2:GAS_L2",  # combustible L2 (HIGH, level 2)
        "E1.V1.AT1:GAS_L1",  # toxic L1 (HIGH, level 1), though older
        "E1.P1.AT2:GAS_L1",  # combustible L1 (MEDIUM)
    ]


def _edited(tmp_path: Any, old: str, new: str) -> RuleSet:
    path = DATA / "plant.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    other = tmp_path / "plant.yaml"
    other.write_text(
        text.replace(old, new).replace(
            "../../../config/reference", str((path.parent / "../../../config/reference").resolve())
        )
    )
    return compile_rules(load_plant(other))


@pytest.mark.parametrize("impl", [RuleEngine, ReferenceEngine])
def test_restore_moves_a_running_bypass_age_to_the_edited_approval(tmp_path: Any, impl: Impl) -> None:
    """Approved bypass edited from 1 h to 2 h while a bypass runs: overdue at start + 2 h."""
    edited = _edited(tmp_path, "max_bypass_h: 1", "max_bypass_h: 2")
    old = impl(RULES)
    old.evaluate(batch(RULES, ("V1.HS1", 0, 1.0)), at(0))
    saved = json.loads(json.dumps(old.snapshot().to_dict()))
    new = impl(edited)
    new.restore(EngineSnapshot.from_dict(saved))
    key = "H1.IL1:BYPASS_OVERDUE"
    assert [e for e in named(edited, new.tick(at(3600))) if e[0] == key] == []
    assert [e for e in named(edited, new.tick(at(7199))) if e[0] == key] == []
    assert [e for e in named(edited, new.tick(at(7200))) if e[0] == key] == [(key, True, 7200.0)]


@pytest.mark.parametrize("impl", [RuleEngine, ReferenceEngine])
def test_a_version_1_snapshot_still_resumes(impl: Impl) -> None:
    before = impl(RULES)
    before.evaluate(batch(RULES, ("V1.LT1", 1, 85.0), ("V1.HS1", 1, 1.0)), at(1))
    data = before.snapshot().to_dict()
    n_rule, n_tag = 9, 3  # version 1 columns: the first of each row
    v1 = {
        "version": 1,
        "rules": {k: row[:n_rule] for k, row in data["rules"].items()},
        "tags": {k: row[:n_tag] for k, row in data["tags"].items()},
    }
    after = impl(RULES)
    after.restore(EngineSnapshot.from_dict(json.loads(json.dumps(v1))))
    assert [e for e in named(RULES, after.tick(at(6))) if e[0] == "E1.V1.LT1:H"] == [
        ("E1.V1.LT1:H", True, 6.0)
    ]
    edges = after.evaluate(batch(RULES, ("V1.HS1", 7, NAN, BAD)), at(7))
    assert "H1.IL1:INPUT_BYPASSED" not in [RULES.keys[r] for r in edges.rule.tolist()]
