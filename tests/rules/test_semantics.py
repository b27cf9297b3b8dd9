"""Rule semantics from docs/configuration.md, scenarios written from the docs before running
(issue 9, items 11-14), on both engines: the rate of change over its window, samples stamped
far in the future, demand without action after a short demand, and back-tests that do not
depend on their batch size.

Test plant (tests/rules/data/plant.yaml): LT1 ROC at 30 %/min over 10 s; LT2 H 80 / HH 90 with
no on-delay; LT3 stale after 30 s; PT1 H 1.5 MPa with the pressure on-delay (15 s); IL1 2oo3 on
LT1/LT2/LT3 >= 90, final element XV1 safe at 0 within 10 s.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from core.clock import US_PER_S, to_datetime
from core.conditions import RuleKind, Severity
from core.config import load_plant
from core.errors import ConfigError
from hazardwatch.cli_rules import register
from rules.backtest import backtest, batches_of
from rules.compile import compile_rules
from rules.engine import RuleEngine
from rules.reference import ReferenceEngine
from tests.rules.streams import BAD, DATA, T0, at, batch, play, rules_for_tests, series

RULES = rules_for_tests()
K = RuleKind
NAN = math.nan
Impl = type[RuleEngine] | type[ReferenceEngine]
Case = tuple[set[RuleKind], list[tuple[Any, ...]], list[tuple[str, bool, float]]]
ROC = "E1.V1.LT1:ROC"
FUTURE = 320_000_000  # s after T0 (2023-11): a stamp in 2034


def _ramp(t: float) -> float:
    return 50.0 + 0.6 * min(t, 30.0)  # 36 %/min for 30 s, then flat


# --- 11: rate of change over window_s -----------------------------------------------------------
# "rate over window_s" = |v - v(t - window_s)| / window_s, v(t - window_s) the newest sample at
# or before t - window_s: a step is one alarm for as long as it lies inside the window.
RATE: dict[str, Case] = {
    "a step raises one alarm that holds while the step is inside the window": (
        {K.ROC},
        series("V1.LT1", [(s, 50.0 if s < 15 else 56.0) for s in range(41)]),
        [(ROC, True, 15.0), (ROC, False, 25.0)],
    ),
    "two steps are two alarms": (
        {K.ROC},
        series("V1.LT1", [(s, 50.0 if s < 15 else 56.0 if s < 45 else 62.0) for s in range(71)]),
        [(ROC, True, 15.0), (ROC, False, 25.0), (ROC, True, 45.0), (ROC, False, 55.0)],
    ),
    "a step just over the limit does not chatter": (
        {K.ROC},
        series("V1.LT1", [(s, 50.0 if s < 11 else 55.5) for s in range(40)]),
        [(ROC, True, 11.0), (ROC, False, 21.0)],
    ),
    "a step between sparse samples (a subscription reports changes only)": (
        {K.ROC},
        series("V1.LT1", [(0, 50.0), (100, 56.0), (105, 56.0), (111, 56.0)]),
        [(ROC, True, 100.0), (ROC, False, 111.0)],
    ),
    "a step then silence (a subscription, value unchanged) clears a window after the last sample": (
        {K.ROC},
        [*series("V1.LT1", [(0, 50.0), (100, 56.0), (104, 56.5)]), ("t", 113.9), ("t", 114), ("t", 200)],
        [(ROC, True, 100.0), (ROC, False, 114.0)],
    ),
    "a ramp faster than the limit is one alarm while the window holds more than the limit": (
        {K.ROC},
        series("V1.LT1", [(s, _ramp(s)) for s in range(45)]),
        [(ROC, True, 9.0), (ROC, False, 32.0)],  # 5.4 % in 9 s already exceeds 30 %/min
    ),
    "a ramp slower than the limit raises nothing": (
        {K.ROC},
        series("V1.LT1", [(s, 50.0 + 0.4 * s) for s in range(45)]),
        [],
    ),
    "bad data restarts the measurement: no alarm across the gap, none cleared by it": (
        {K.ROC},
        series("V1.LT1", [(0, 50.0), (15, 56.0), (16, NAN), (30, 70.0), (35, 70.0), (41, 70.0)]),
        [(ROC, True, 15.0), (ROC, False, 41.0)],
    ),
}


@pytest.mark.parametrize("name", RATE)
@pytest.mark.parametrize("impl", [RuleEngine, ReferenceEngine])
def test_rate_of_change(name: str, impl: Impl) -> None:
    kinds, script, expected = RATE[name]
    assert play(impl(RULES), script, kinds) == expected


def test_a_backtest_counts_one_rate_alarm_per_step() -> None:
    rows = [(at(s), "E1.V1.LT1", 50.0 if s < 11 else 55.5 if s < 51 else 61.0, 0xC0) for s in range(120)]
    result = backtest(RULES, RULES, batches_of(rows, RULES.tag_keys))
    assert [(r.kind, r.current) for r in result.rows if r.kind == "ROC"] == [("ROC", 2)]


# --- 12: samples stamped far in the future --------------------------------------------------------
AHEAD: dict[str, Case] = {
    "one sample stamped in 2034 is rejected, shown, and later real samples count": (
        {K.H, K.HH, K.BAD_QUALITY, K.CLOCK_AHEAD},
        [
            ("b", 0, [("V1.LT2", 0, 50.0)]),
            ("b", 1, [("V1.LT2", FUTURE, 95.0)]),
            ("b", 2, [("V1.LT2", 2, 95.0)]),
            ("b", 3, [("V1.LT2", 3, 50.0)]),
            ("b", 4, [("V1.LT2", 4, NAN, BAD)]),
        ],
        [
            ("E1.V1.LT2:H", True, 2.0),
            ("E1.V1.LT2:H", False, 3.0),
            ("E1.V1.LT2:HH", True, 2.0),
            ("E1.V1.LT2:HH", False, 3.0),
            ("E1.V1.LT2:BAD_QUALITY", True, 4.0),
            ("E1.V1.LT2:CLOCK_AHEAD", True, 1.0),
            ("E1.V1.LT2:CLOCK_AHEAD", False, 2.0),
        ],
    ),
    "a future stamp on an interlock input does not suppress a real 2oo3 demand": (
        {K.TRIP_DEMAND},
        [
            ("b", 0, [("V1.LT1", 0, 50.0), ("V1.LT2", 0, 50.0), ("V1.LT3", 0, 50.0), ("V1.XV1", 0, 1.0)]),
            ("b", 1, [("V1.LT2", FUTURE, 50.0)]),
            ("b", 2, [("V1.LT1", 2, 95.0), ("V1.LT2", 2, 95.0), ("V1.LT3", 2, 50.0)]),
        ],
        [("H1.IL1:TRIP_DEMAND", True, 2.0)],
    ),
    "a clock running ahead within the allowed skew is accepted": (
        {K.H, K.CLOCK_AHEAD},
        [("b", 0, [("V1.LT2", 60, 85.0)]), ("b", 61, [("V1.LT2", 121, 50.0)])],
        [("E1.V1.LT2:H", True, 60.0), ("E1.V1.LT2:H", False, 121.0)],
    ),
    "a device whose clock runs ahead shows until it delivers in time, and goes stale": (
        {K.CLOCK_AHEAD, K.STALE},
        [
            ("b", 0, [("V1.LT3", 0, 50.0)]),
            ("b", 10, [("V1.LT3", 910, 50.0)]),
            ("b", 20, [("V1.LT3", 920, 50.0)]),
            ("t", 30),
            ("b", 40, [("V1.LT3", 40, 50.0)]),
        ],
        [
            ("E1.V1.LT3:CLOCK_AHEAD", True, 10.0),
            ("E1.V1.LT3:CLOCK_AHEAD", False, 40.0),
            ("E1.V1.LT3:STALE", True, 30.0),  # nothing usable arrived for 30 s
            ("E1.V1.LT3:STALE", False, 40.0),
        ],
    ),
}


@pytest.mark.parametrize("name", AHEAD)
@pytest.mark.parametrize("impl", [RuleEngine, ReferenceEngine])
def test_samples_stamped_ahead(name: str, impl: Impl) -> None:
    kinds, script, expected = AHEAD[name]
    assert play(impl(RULES), script, kinds) == expected


def test_rejected_samples_are_counted_and_logged_once_per_tag(caplog: pytest.LogCaptureFixture) -> None:
    engine = RuleEngine(RULES)
    with caplog.at_level(logging.WARNING, logger="rules.engine"):
        for s in range(3):
            engine.evaluate(batch(RULES, ("V1.LT2", FUTURE + s, 50.0), ("V1.LT1", s, 50.0)), at(s))
        engine.evaluate(batch(RULES, ("V1.LT3", FUTURE, 50.0)), at(4))
    assert engine.rejected_ahead == 4
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "E1.V1.LT2" in lines[0] and "E1.V1.LT3" in lines[1]
    (cond,) = [c for c in engine.active() if c.kind == K.CLOCK_AHEAD and c.subject == "E1.V1.LT2"]
    assert cond.severity == Severity.MEDIUM and cond.limit == 300.0 and cond.value > 3e8
    assert cond.since_us == at(0)


def _plant_with(tmp_path: Path, block: str) -> Path:
    text = (DATA / "plant.yaml").read_text(encoding="utf-8")
    ref = str((DATA / "../../../config/reference").resolve())
    path = tmp_path / "plant.yaml"
    path.write_text(
        text.replace("../../../config/reference", ref).replace(
            "name: rules test plant\n", f"name: t\n{block}"
        )
    )
    return path


def test_the_allowed_skew_is_a_setting(tmp_path: Path) -> None:
    rules = compile_rules(load_plant(_plant_with(tmp_path, "settings: {rules: {max_clock_ahead_s: 10}}\n")))
    assert rules.ahead_us == 10 * US_PER_S
    edges = RuleEngine(rules).evaluate(batch(rules, ("V1.LT2", 11, 95.0)), at(0))
    assert "E1.V1.LT2:CLOCK_AHEAD" in [rules.keys[r] for r in edges.rule.tolist()]


@pytest.mark.parametrize("value", ["0", ".inf", ".nan", "1.0e400", "100000"])
def test_an_unusable_skew_is_refused_with_its_line(tmp_path: Path, value: str) -> None:
    path = _plant_with(tmp_path, f"settings:\n  rules:\n    max_clock_ahead_s: {value}\n")
    with pytest.raises(ConfigError) as info:
        load_plant(path)
    (issue,) = info.value.issues
    assert issue.line == 5 and "max_clock_ahead_s" in issue.path and "unknown" not in issue.message


# --- 13: demand without action from the demand's start --------------------------------------------
DEMAND = [("V1.LT1", 1, 95.0), ("V1.LT2", 1, 95.0), ("V1.LT3", 1, 50.0)]
OVER = [("V1.LT1", 3, 50.0), ("V1.LT2", 3, 50.0)]
NO_ACTION: dict[str, Case] = {
    "a short demand with a valve that never moved is a failure on demand": (
        {K.TRIP_DEMAND, K.NO_ACTION},
        [("b", 0, [("V1.XV1", 0, 1.0)]), ("b", 1, DEMAND), ("b", 3, OVER), ("t", 10.9), ("t", 11), ("t", 60)],
        [
            ("H1.IL1:TRIP_DEMAND", True, 1.0),
            ("H1.IL1:TRIP_DEMAND", False, 3.0),
            ("H1.IL1:NO_ACTION", True, 11.0),
        ],
    ),
    "the failure on demand clears once the valve reaches its safe position": (
        {K.NO_ACTION},
        [
            ("b", 0, [("V1.XV1", 0, 1.0)]),
            ("b", 1, DEMAND),
            ("b", 3, OVER),
            ("t", 11),
            ("b", 40, [("V1.XV1", 40, 0.0)]),
        ],
        [("H1.IL1:NO_ACTION", True, 11.0), ("H1.IL1:NO_ACTION", False, 40.0)],
    ),
    "a valve that closed in time after a short demand may reopen": (
        {K.NO_ACTION},
        [
            ("b", 0, [("V1.XV1", 0, 1.0)]),
            ("b", 1, DEMAND),
            ("b", 3, OVER),
            ("b", 5, [("V1.XV1", 5, 0.0)]),
            ("b", 8, [("V1.XV1", 8, 1.0)]),
            ("t", 30),
        ],
        [],
    ),
    "a short demand seen in the data when no tick comes": (
        {K.NO_ACTION},
        [("b", 0, [("V1.XV1", 0, 1.0)]), ("b", 1, DEMAND), ("b", 3, OVER), ("b", 12, [("V1.XV1", 12, 1.0)])],
        [("H1.IL1:NO_ACTION", True, 12.0)],
    ),
}


@pytest.mark.parametrize("name", NO_ACTION)
@pytest.mark.parametrize("impl", [RuleEngine, ReferenceEngine])
def test_demand_without_action(name: str, impl: Impl) -> None:
    kinds, script, expected = NO_ACTION[name]
    assert play(impl(RULES), script, kinds) == expected


# --- 14: a back-test does not depend on its batch size --------------------------------------------
def _pressure_excursion() -> list[tuple[int, str, float, int]]:
    """PT1 above H (1.5 MPa) from 10 to 30 s: one H alarm at 25 s (pressure on-delay 15 s)."""
    return [(at(s), "E1.V1.PT1", 1.6 if 10 <= s <= 30 else 1.0, 0xC0) for s in range(60)]


@pytest.mark.parametrize("batch_s", [1.0, 7.5, 60.0, 3600.0])
def test_on_delay_alarms_whatever_the_batch(batch_s: float) -> None:
    result = backtest(RULES, RULES, batches_of(_pressure_excursion(), RULES.tag_keys, batch_s))
    assert [(r.subject, r.kind, r.current) for r in result.rows if r.kind == "H"] == [("E1.V1.PT1", "H", 1)]
    assert (result.start_us, result.end_us, result.readings) == (at(0), at(59), 60)


def test_backtest_command_prints_the_window_of_the_history(tmp_path: Path) -> None:
    from simulators.replay import write_csv

    csv = tmp_path / "history.csv"
    write_csv(csv, _pressure_excursion())
    app = typer.Typer()
    register(app)
    window = ["--start", to_datetime(at(-10)).isoformat(), "--end", to_datetime(at(100)).isoformat()]
    outs = [
        CliRunner().invoke(app, ["backtest", str(DATA), *window, "--csv", str(csv), "--batch", b])
        for b in ("1", "60")
    ]
    assert all(out.exit_code == 0 for out in outs), [out.output for out in outs]
    first = outs[1].output.splitlines()[0]
    assert first.startswith(
        f"60 readings {to_datetime(at(0)).isoformat()} .. {to_datetime(at(59)).isoformat()}"
    )
    assert outs[1].output == outs[0].output


KEYS = ["E1.V1.LT1", "E1.V1.LT2", "E1.V1.LT3", "E1.V1.PT1", "E1.V1.HS1", "E1.V1.XV1", "E1.V1.AT1"]


@st.composite
def history(draw: st.DrawFn) -> list[tuple[int, str, float, int]]:
    rows, t = [], T0 + draw(st.integers(0, 10 * US_PER_S))
    for _ in range(draw(st.integers(1, 80))):
        t += draw(st.sampled_from([0, 0, 200_000, 1_000_000, 1_000_000, 3_000_000, 16_000_000, 70_000_000]))
        key = draw(st.sampled_from(KEYS))
        value = draw(st.sampled_from([0.0, 1.0, 1.6, 50.0, 56.0, 85.0, 95.0, NAN]))
        rows.append((t, key, value, draw(st.sampled_from([0xC0, 0xC0, 0xC0, BAD]))))
    return rows


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history(), st.sampled_from([0.3, 2.5, 7.0, 60.0, 3600.0]))
def test_backtest_results_do_not_depend_on_the_batch_size(
    rows: list[tuple[int, str, float, int]], batch_s: float
) -> None:
    one = backtest(RULES, RULES, batches_of(rows, RULES.tag_keys, 1.0))
    other = backtest(RULES, RULES, batches_of(rows, RULES.tag_keys, batch_s))
    assert other == one


def _restarted(engine: RuleEngine | ReferenceEngine, impl: Impl) -> RuleEngine | ReferenceEngine:
    import json

    from rules.snapshot import EngineSnapshot

    after = impl(RULES)
    after.restore(EngineSnapshot.from_dict(json.loads(json.dumps(engine.snapshot().to_dict()))))
    return after


@pytest.mark.parametrize("impl", [RuleEngine, ReferenceEngine])
def test_a_restart_keeps_the_response_check(impl: Impl) -> None:
    before = impl(RULES)
    play(before, [("b", 0, [("V1.XV1", 0, 1.0)]), ("b", 1, DEMAND), ("b", 3, OVER)], {K.NO_ACTION})
    after = _restarted(before, impl)
    assert play(after, [("t", 10.9), ("t", 11)], {K.NO_ACTION}) == [("H1.IL1:NO_ACTION", True, 11.0)]


@pytest.mark.parametrize("impl", [RuleEngine, ReferenceEngine])
def test_a_restart_keeps_the_rate_window(impl: Impl) -> None:
    """A snapshot keeps the rate's kept samples: the alarm of a step taken just before the stop
    clears one window after the step, as without the restart."""
    before = impl(RULES)
    steps = series("V1.LT1", [(s, 50.0 if s < 15 else 56.0) for s in range(18)])
    assert play(before, steps, {K.ROC}) == [(ROC, True, 15.0)]
    after = _restarted(before, impl)
    assert play(after, series("V1.LT1", [(s, 56.0) for s in range(18, 30)]), {K.ROC}) == [(ROC, False, 25.0)]


@pytest.mark.parametrize("impl", [RuleEngine, ReferenceEngine])
def test_a_snapshot_without_kept_samples_restarts_from_the_reference(impl: Impl) -> None:
    """Files written before the ring was saved: the reference and the newest sample remain,
    so the alarm clears a window after that newest sample."""
    import json

    from rules.snapshot import EngineSnapshot

    before = impl(RULES)
    play(before, series("V1.LT1", [(s, 50.0 if s < 15 else 56.0) for s in range(18)]), {K.ROC})
    data = json.loads(json.dumps(before.snapshot().to_dict()))
    assert data.pop("roc")
    after = impl(RULES)
    after.restore(EngineSnapshot.from_dict(data))
    assert play(after, series("V1.LT1", [(s, 56.0) for s in range(18, 30)]), {K.ROC}) == [(ROC, False, 27.0)]


@pytest.mark.parametrize("window", ["3", "60"])
def test_kept_samples_fit_an_edited_window(tmp_path: Path, window: str) -> None:
    """The rate window edited while a rate alarm is active: both engines restore the same ring
    (thinned and cut to the new window) and agree from there on."""
    text = (DATA / "plant.yaml").read_text(encoding="utf-8")
    ref = str((DATA / "../../../config/reference").resolve())
    edited = text.replace("../../../config/reference", ref).replace("window_s: 10}", f"window_s: {window}}}")
    path = tmp_path / "plant.yaml"
    path.write_text(edited, encoding="utf-8")
    new_rules = compile_rules(load_plant(path))
    engines = []
    for impl in (RuleEngine, ReferenceEngine):
        before = impl(RULES)
        play(before, series("V1.LT1", [(s / 4, 50.0 if s < 60 else 56.0) for s in range(70)]), {K.ROC})
        after: RuleEngine | ReferenceEngine = impl(new_rules)
        after.restore(before.snapshot())
        engines.append(after)
    vec, want = engines
    assert not vec.snapshot().differences(want.snapshot())
    rest = series("V1.LT1", [(18 + s / 4, 56.0) for s in range(300)])
    assert play(vec, rest, {K.ROC}) == play(want, rest, {K.ROC})
    assert not vec.snapshot().differences(want.snapshot())


def _rules_with_rate(tmp_path: Path, rate: str) -> Any:
    text = (DATA / "plant.yaml").read_text(encoding="utf-8")
    text = text.replace("../../../config/reference", str(DATA.parents[2] / "config" / "reference"))
    text = text.replace("rate: {max_per_min: 30, window_s: 10}", f"rate: {rate}")
    (tmp_path / "plant.yaml").write_text(text, encoding="utf-8")
    return compile_rules(load_plant(tmp_path))


def _two_slopes(t: float) -> float:
    return 20.0 + 0.6 * min(t, 30.0) + 0.45 * min(max(t - 30.0, 0.0), 30.0)  # 36 %/min, then 27 %/min


@pytest.mark.parametrize("impl", [RuleEngine, ReferenceEngine])
@pytest.mark.parametrize(
    ("rate", "cleared_at"),
    [
        ("{max_per_min: 30, window_s: 10}", 37.0),  # 27 %/min is below the limit
        ("{max_per_min: 30, window_s: 10, deadband: 6}", 62.0),  # ... but not below 30 − 6
    ],
)
def test_rate_clears_below_the_limit_minus_its_deadband(
    tmp_path: Path, impl: Impl, rate: str, cleared_at: float
) -> None:
    script = series("V1.LT1", [(s, _two_slopes(s)) for s in range(90)])
    edges = play(impl(_rules_with_rate(tmp_path, rate)), script, {K.ROC})
    assert edges == [(ROC, True, 9.0), (ROC, False, cleared_at)]


def test_a_rate_deadband_at_or_above_the_limit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"plant\.yaml:\d+ .*rate\.deadband: the rate deadband must be below"
    ):
        _rules_with_rate(tmp_path, "{max_per_min: 30, window_s: 10, deadband: 30}")


@pytest.mark.parametrize("impl", [RuleEngine, ReferenceEngine])
def test_a_state_saved_with_a_sample_from_the_future_does_not_blind_the_tag(impl: Impl) -> None:
    """A rule-state file written before samples ahead were refused may hold a 2034 sample."""
    import json

    from rules.snapshot import EngineSnapshot

    before = impl(RULES)
    raised = before.evaluate(batch(RULES, ("V1.LT2", FUTURE, 95.0)), at(FUTURE))  # its clock said so
    on = {RULES.keys[r] for r, a in zip(raised.rule.tolist(), raised.active.tolist(), strict=True) if a}
    assert {"E1.V1.LT2:H", "E1.V1.LT2:HH"} <= on
    after = impl(RULES)
    after.restore(EngineSnapshot.from_dict(json.loads(json.dumps(before.snapshot().to_dict()))))
    edges = after.evaluate(batch(RULES, ("V1.LT2", 100, 50.0)), at(100))
    cleared = {
        RULES.keys[r] for r, on in zip(edges.rule.tolist(), edges.active.tolist(), strict=True) if not on
    }
    assert {"E1.V1.LT2:H", "E1.V1.LT2:HH"} <= cleared
