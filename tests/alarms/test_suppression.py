"""ISA-18.2 suppression by design (issue: suppress_when): a unit whose ``suppress_when`` holds has
its process alarms suppressed, gas and data-quality alarms never; edges while suppressed are
tracked, not announced; the end re-announces what is on. Test plant tests/alarms/data/suppression.yaml:
H1.U1 (R1, P1) is shut down while E1.R1.FI-101 < 0.5; H1.U2 declares nothing. RuleSink and the
engine feed a real manager; the service is run against real PostgreSQL, across a restart."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from alarms.changes import SuppressionChange
from alarms.journal import Commit
from alarms.manager import AlarmManager
from alarms.model import SUPPRESSIBLE_KINDS, Catalog
from alarms.service import AlarmService
from alarms.store import PendingCommand
from core.clock import FakeClock
from core.conditions import ConditionEdges, RuleKind
from core.config import load_plant
from core.plant import Plant, updated
from core.settings import AlarmSettings
from hazardwatch.rule_sink import RuleSink, UnitConditions
from rules.compile import compile_rules
from rules.engine import RuleEngine
from rules.ruleset import RuleSet
from storage.db import Backend
from tests.rules.streams import BAD, GOOD, at, batch
from tests.support.databases import fetch_all, migrated_db
from tests.support.waiting import eventually

PLANT = Path(__file__).parent / "data" / "suppression.yaml"
FL, LL_, LH, XS = "E1.R1.FI-101:L", "E1.R1.LT-101:L", "E1.R1.LT-101:H", "E1.P1.XS-101:STATE"
GAS1, TANK = "E1.P1.AT-101:GAS_L1", "E1.T1.LT-201:H"
U1_PROCESS = [FL, LL_, LH, XS]  # in rule order
DOWN = SuppressionChange("H1.U1", True, "装置停车", "E1.R1.FI-101", 0.2)
UP = SuppressionChange("H1.U1", False, "装置停车", "E1.R1.FI-101", 50.0)


@cache
def plant() -> Plant:
    p: Plant = load_plant(PLANT)
    return p


@cache
def rules() -> RuleSet:
    return compile_rules(plant())


@pytest.fixture
def catalog() -> Catalog:
    return Catalog(plant(), rules())


@pytest.fixture
def manager(catalog: Catalog) -> AlarmManager:
    return AlarmManager(catalog, AlarmSettings())


def actions(c: Commit | None) -> list[tuple[str, str, str, str]]:
    assert c is not None
    return [(j.alarm_key, j.action, j.old_status, j.new_status) for j in c.journal]


def statuses(m: AlarmManager) -> dict[str, str]:
    return {k: a.status for k, a in m.alarms.items()}


# --- the catalog: which alarms a unit's suppression hides ---------------------------------------


def test_a_unit_hides_its_process_alarms_only(catalog: Catalog) -> None:
    assert [a.key for a in catalog.suppressible("H1.U1")] == U1_PROCESS
    assert catalog.suppressible("H1.U2") == ()  # declares no suppress_when
    assert catalog.suppressible("H9.U1") == ()
    assert RuleKind.GAS_L1 not in SUPPRESSIBLE_KINDS and RuleKind.BAD_QUALITY not in SUPPRESSIBLE_KINDS
    assert RuleKind.O2_LOW not in SUPPRESSIBLE_KINDS and RuleKind.TRIP_DEMAND not in SUPPRESSIBLE_KINDS


# --- the manager ---------------------------------------------------------------------------------


def test_shutdown_suppresses_raised_and_never_raised_process_alarms_in_one_commit(
    manager: AlarmManager,
) -> None:
    manager.edges(edges_of(manager, (LL_, True, 5.0, 20.0)), at(1))
    manager.command(command(LL_, "ack"), at(1.5))
    c = manager.suppress([DOWN], at(2))
    assert actions(c) == [
        (FL, "SUPPRESSED", "normal", "suppressed"),
        (LL_, "SUPPRESSED", "acknowledged", "suppressed"),
        (LH, "SUPPRESSED", "normal", "suppressed"),
        (XS, "SUPPRESSED", "normal", "suppressed"),
    ]
    assert c is not None and c.outbox == ()  # hiding is not announced
    assert {j.actor for j in c.journal} == {"engine"}
    assert c.journal[0].detail == {
        "unit": "H1.U1",
        "tag": "E1.R1.FI-101",
        "value": 0.2,
        "reason": "装置停车: E1.R1.FI-101 = 0.2",
        "reason_zh": "装置停车：E1.R1.FI-101 = 0.2",
    }
    ((actor, action, target, detail),) = c.audit
    assert (actor, action, target, detail["alarms"]) == ("engine", "suppress", "H1.U1", 4)
    assert {r.key: (r.status, r.reason) for r in c.alarms}[LL_] == ("suppressed", "装置停车")
    assert GAS1 not in statuses(manager)


def test_an_announced_alarm_not_yet_acknowledged_is_never_suppressed(manager: AlarmManager) -> None:
    manager.edges(edges_of(manager, (LL_, True, 5.0, 20.0), (LH, True, 95.0, 80.0)), at(1))
    manager.edges(edges_of(manager, (LH, False, 50.0, 80.0)), at(1.5))
    assert statuses(manager) == {LL_: "unacknowledged", LH: "returned_unacknowledged"}
    c = manager.suppress([DOWN], at(2))
    assert [k for k, *_ in actions(c)] == [FL, XS]
    assert statuses(manager)[LL_] == "unacknowledged" and statuses(manager)[LH] == "returned_unacknowledged"
    assert c is not None and c.audit[0][3]["alarms"] == 2
    c = manager.suppress([UP], at(3))  # only what was hidden comes back
    assert [k for k, *_ in actions(c)] == [FL, XS]
    assert statuses(manager)[LL_] == "unacknowledged"


def variant(tmp_path: Path, *edits: tuple[str, str], extra: str = "") -> Catalog:
    """The test plant with its text edited (each edit must apply) and YAML appended."""
    text = PLANT.read_text(encoding="utf-8")
    text = text.replace(
        "reference: ../../../config/reference", f"reference: {PLANT.parents[3]}/config/reference"
    )
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    (tmp_path / "plant.yaml").write_text(text + extra, encoding="utf-8")
    p = load_plant(tmp_path, env={})
    return Catalog(p, compile_rules(p))


def test_a_latching_alarm_is_never_suppressed_so_its_latch_stays(tmp_path: Path) -> None:
    catalog = variant(tmp_path, ("limits: {l: 20, h: 80,", "limits: {latched: true, l: 20, h: 80,"))
    assert catalog.by_key(LH).latching  # type: ignore[union-attr]
    assert [a.key for a in catalog.suppressible("H1.U1")] == [FL, XS]
    m = AlarmManager(catalog, AlarmSettings())
    m.edges(edges_of(m, (LH, True, 95.0, 80.0)), at(1))
    m.command(command(LH, "ack"), at(1.5))
    m.edges(edges_of(m, (LH, False, 50.0, 80.0)), at(2))
    assert m.alarms[LH].status == "latched"
    m.suppress([DOWN], at(3))
    m.suppress([UP], at(4))
    assert m.alarms[LH].status == "latched"  # only an operator's reset ends it
    assert catalog.suppressing_unit(catalog.by_key(LH)) is None  # type: ignore[arg-type]


GAS_RATE = (
    "gas: {gas: CH4, detector: COMBUSTIBLE}",
    "gas: {gas: CH4, detector: COMBUSTIBLE}\n            rate: {max_per_min: 10}",
)
SAFETY_TAGS = """        interlocks:
          - code: SIS-1
            name: 合成塔液位低低联锁
            voting: 1oo1
            inputs:
              - {tag: R1.LT-101, op: "<", value: 10, bypass: R1.HS-101}
            final_element: {tag: P1.XV-101, safe_value: 0}
"""
SAFETY_EXTRA = """          - code: HS-101
            name: 液位联锁旁路开关
            equipment: R1
            kind: DISCRETE
            source: {device: OPC1, node: s=HS-101}
            state: {alarm_value: 1}
          - code: XV-101
            name: 进料切断阀阀位
            equipment: P1
            kind: DISCRETE
            source: {device: OPC1, node: s=XV-101}
            state: {alarm_value: 1}
"""


def test_no_alarm_of_a_gas_tag_nor_of_a_safety_functions_tags_is_suppressed(tmp_path: Path) -> None:
    catalog = variant(tmp_path, GAS_RATE)
    gas_roc = "E1.P1.AT-101:ROC"
    assert catalog.by_key(gas_roc) is not None and gas_roc not in [
        a.key for a in catalog.suppressible("H1.U1")
    ]
    assert catalog.suppressing_unit(catalog.by_key(gas_roc)) is None  # type: ignore[arg-type]
    # an interlock's input (LT-101), bypass switch (HS-101) and final element (XV-101)
    (tmp_path / "b").mkdir()
    catalog = variant(
        tmp_path / "b", ("        tags:\n", SAFETY_TAGS + "        tags:\n"), extra=SAFETY_EXTRA
    )
    assert (
        catalog.by_key("E1.R1.HS-101:STATE") is not None and catalog.by_key("E1.P1.XV-101:STATE") is not None
    )
    assert [a.key for a in catalog.suppressible("H1.U1")] == [FL, XS]
    assert catalog.suppressing_unit(catalog.by_key(LH)) is None  # type: ignore[arg-type]


def test_while_suppressed_edges_are_tracked_not_announced_and_gas_still_raises(
    manager: AlarmManager,
) -> None:
    manager.suppress([DOWN], at(1))
    c = manager.edges(edges_of(manager, (LH, True, 95.0, 80.0), (GAS1, True, 30.0, 25.0)), at(2))
    assert actions(c) == [
        (LH, "CONDITION", "suppressed", "suppressed"),
        (GAS1, "RAISED", "normal", "unacknowledged"),
    ]
    assert c is not None and [o.alarm_key for o in c.outbox] == [GAS1]
    assert manager.alarms[LH].condition is True


def test_restart_of_the_unit_reannunciates_what_is_on_and_returns_the_rest(manager: AlarmManager) -> None:
    manager.suppress([DOWN], at(1))
    manager.edges(edges_of(manager, (LH, True, 95.0, 80.0)), at(2))
    c = manager.suppress([UP], at(3))
    assert actions(c) == [
        (FL, "UNSUPPRESSED", "suppressed", "normal"),
        (LL_, "UNSUPPRESSED", "suppressed", "normal"),
        (LH, "UNSUPPRESSED", "suppressed", "unacknowledged"),
        (LH, "RERAISED", "suppressed", "unacknowledged"),
        (XS, "UNSUPPRESSED", "suppressed", "normal"),
    ]
    assert c is not None
    ((out,),) = [c.outbox]
    assert (out.alarm_key, out.event) == (LH, "reraised")
    assert c.journal[out.n].action == "RERAISED"
    assert "解除设计抑制" in out.message_zh and "suppression by design ended" in out.message_en
    assert c.audit[0][1] == "unsuppress"
    assert statuses(manager) == {FL: "normal", LL_: "normal", LH: "unacknowledged", XS: "normal"}


def test_a_state_already_held_journals_nothing(manager: AlarmManager) -> None:
    assert manager.suppress([UP], at(1)) is None  # a first known state of a running unit
    assert manager.alarms == {} and manager.seq == -1
    manager.suppress([DOWN], at(2))
    seq = manager.seq
    assert manager.suppress([DOWN], at(3)) is None
    # a restart: the stored rows, then the first evaluation reports the unit again
    again = AlarmManager(manager.catalog, AlarmSettings(), seq=seq, alarms=manager.alarms)
    assert again.suppress([DOWN], at(4)) is None
    assert again.seq == seq
    assert actions(again.suppress([UP], at(5)))[0] == (FL, "UNSUPPRESSED", "suppressed", "normal")


def test_a_removed_alarm_stays_removed_and_is_suppressed_again_when_restored(
    manager: AlarmManager,
) -> None:
    manager.edges(edges_of(manager, (LH, True, 95.0, 80.0)), at(1))
    manager.command(command(LH, "remove", reason="变送器检修"), at(2))
    c = manager.suppress([DOWN], at(3))
    assert c is not None and LH not in [j.alarm_key for j in c.journal]
    assert manager.alarms[LH].status == "out_of_service"
    c = manager.command(command(LH, "restore"), at(4))
    assert actions(c) == [
        (LH, "RESTORED", "out_of_service", "unacknowledged"),
        (LH, "RERAISED", "out_of_service", "unacknowledged"),
        (LH, "SUPPRESSED", "unacknowledged", "suppressed"),
    ]
    assert c.outbox == () and c.commands[0].result == "suppressed"


def test_after_a_restart_a_restored_alarm_of_a_unit_stored_suppressed_is_suppressed_again(
    manager: AlarmManager,
) -> None:
    manager.edges(edges_of(manager, (LH, True, 95.0, 80.0)), at(1))
    manager.command(command(LH, "remove", reason="变送器检修"), at(2))
    manager.suppress([DOWN], at(3))
    # the state as loaded; the unit's tag not read yet (or BAD): no report before the restore
    again = AlarmManager(manager.catalog, AlarmSettings(), seq=manager.seq, alarms=manager.alarms)
    assert set(again.suppressed_units) == {"H1.U1"}
    c = again.command(command(LH, "restore"), at(4))
    assert actions(c)[-1] == (LH, "SUPPRESSED", "unacknowledged", "suppressed")
    assert c.outbox == () and c.commands[0].result == "suppressed"
    assert c.journal[-1].detail["value"] is None and c.journal[-1].detail["tag"] == "E1.R1.FI-101"
    assert again.alarms[LH].reason == "装置停车"
    # a unit stored running, or whose alarms no suppress_when hides any more, is not rebuilt
    assert AlarmManager(manager.catalog, AlarmSettings(), alarms={}).suppressed_units == {}


def test_an_alarm_no_unit_hides_any_more_is_released_at_start(manager: AlarmManager) -> None:
    manager.suppress([DOWN], at(1))
    stored = dict(manager.alarms)
    # as if a previous config had suppressed H1.U2 (LT-201 H) and its suppress_when was removed
    stored[TANK] = dataclasses.replace(stored[LH], key=TANK, subject="E1.T1.LT-201", unit="U2")
    again = AlarmManager(manager.catalog, AlarmSettings(), seq=manager.seq, alarms=stored)
    c = again.release_suppressions(at(2))
    assert actions(c) == [(TANK, "UNSUPPRESSED", "suppressed", "normal")]
    assert c is not None and [(a[1], a[2], a[3]["alarms"]) for a in c.audit] == [("unsuppress", "H1.U2", 1)]
    assert again.release_suppressions(at(3)) is None  # U1's stay: its suppress_when holds them


def command(key: str, name: str, **args: Any) -> PendingCommand:
    return PendingCommand(f"id-{name}-{key}", key, name, "张三", "engineer", None, dict(args), 0)


def edges_of(m: AlarmManager, *rows: tuple[str, bool, float, float]) -> ConditionEdges:
    keys = rules().keys
    return ConditionEdges.of(
        [keys.index(k) for k, *_ in rows],
        [a for _, a, _, _ in rows],
        [at(0.5)] * len(rows),
        [v for _, _, v, _ in rows],
        [lim for *_, lim in rows],
        [0] * len(rows),
    )


# --- RuleSink: evaluates each unit's condition on the engine's values ------------------------------


def sink_into(manager: AlarmManager, clock: FakeClock) -> tuple[RuleSink, list[Commit], list[Any]]:
    sink = RuleSink(RuleEngine(rules()), clock)
    sink.suppression = UnitConditions(plant(), rules().tag_keys)
    commits: list[Commit] = []
    reported: list[tuple[SuppressionChange, ...]] = []

    def keep(c: Commit | None) -> None:
        if c is not None:
            commits.append(c)

    sink.on_edges = lambda e: keep(manager.edges(e, clock.now_us()))

    def on_suppression(changes: tuple[SuppressionChange, ...]) -> None:
        reported.append(changes)
        keep(manager.suppress(changes, clock.now_us()))

    sink.on_suppression = on_suppression
    return sink, commits, reported


async def test_sink_reports_the_first_state_once_then_changes_and_holds_on_bad(manager: AlarmManager) -> None:
    clock = FakeClock(at(1))
    sink, commits, reported = sink_into(manager, clock)
    await sink.write(batch(rules(), ("R1.LT-101", 1, 50)))  # the flow not known yet: nothing
    assert reported == []
    await sink.write(batch(rules(), ("R1.FI-101", 1, 50), ("P1.XS-101", 1, 1), ("P1.AT-101", 1, 0)))
    assert reported == [(UP,)] and commits == []  # running: nothing to unsuppress
    await sink.write(batch(rules(), ("R1.FI-101", 2, 40)))
    assert len(reported) == 1  # no change, no report
    # shutdown: the flow falls below its L and the unit's suppression point in one batch, the
    # pump stops: the unit is suppressed first, so the shutdown's own alarms are only tracked
    clock.advance(2)
    await sink.write(batch(rules(), ("R1.FI-101", 3, 0.2), ("P1.XS-101", 3, 0)))
    assert reported[-1] == (SuppressionChange("H1.U1", True, "装置停车", "E1.R1.FI-101", 0.2),)
    assert [a[:2] for a in actions(commits[-2])] == [(k, "SUPPRESSED") for k in U1_PROCESS]
    assert {a[1] for a in actions(commits[-1])} == {"CONDITION"} and commits[-1].outbox == ()
    # a leak during the shutdown is announced; the level running away is not
    await sink.write(batch(rules(), ("P1.AT-101", 4, 30), ("R1.LT-101", 4, 95)))
    assert [(k, a) for k, a, *_ in actions(commits[-1])] == [(LH, "CONDITION"), (GAS1, "RAISED")]
    assert [o.alarm_key for o in commits[-1].outbox] == [GAS1]
    n = len(reported)
    await sink.write(batch(rules(), ("R1.FI-101", 5, 50, BAD)))  # BAD: the unit stays as it was
    await sink.write(batch(rules(), ("R1.FI-101", 6, float("nan"))))
    assert len(reported) == n
    await sink.write(batch(rules(), ("R1.FI-101", 7, 50), ("P1.XS-101", 7, 1)))  # back in operation
    assert reported[-1] == (SuppressionChange("H1.U1", False, "装置停车", "E1.R1.FI-101", 50.0),)
    assert [o.alarm_key for o in commits[-1].outbox] == [LH]
    assert statuses(manager)[LH] == "unacknowledged" and statuses(manager)[XS] == "normal"


@pytest.mark.parametrize(
    ("reading", "suppressed"),
    [
        (-5.0, None),  # failed low on [0, 100]: beyond the OUT_OF_RANGE margin (1.25 %)
        (-1.3, None),
        (float("-inf"), None),
        (float("nan"), None),
        (-1.2, True),  # inside the margin: a reading of a stopped flow
        (0.2, True),
    ],
)
def test_a_reading_out_of_the_tags_range_or_not_finite_holds_the_unit_like_a_bad_one(
    reading: float, suppressed: bool | None
) -> None:
    units = UnitConditions(plant(), rules().tag_keys)
    flow = rules().tag_keys.index("E1.R1.FI-101")
    value = np.full(len(rules().tag_keys), 1.0)
    valid = np.ones(len(value), bool)
    value[flow] = 50.0
    assert [c.suppressed for c in units.changes(value, valid, at(1)) if c.unit == "H1.U1"] == [False]
    value[flow] = reading  # GOOD quality: the hub calls it valid
    got = [c.suppressed for c in units.changes(value, valid, at(2)) if c.unit == "H1.U1"]
    assert got == ([] if suppressed is None else [suppressed])


def test_a_reading_not_finite_holds_a_unit_whose_tag_has_no_range() -> None:
    units = UnitConditions(plant(), rules().tag_keys)
    status = rules().tag_keys.index("E1.K1.XS-301")  # DISCRETE; U3 is shut down while it is 0
    value, valid = np.zeros(len(rules().tag_keys)), np.ones(len(rules().tag_keys), bool)
    assert [c.suppressed for c in units.changes(value, valid, at(1)) if c.unit == "H1.U3"] == [True]
    for reading in (float("inf"), float("-inf")):
        value[status] = reading
        for now in (at(100), at(200)):  # past its off_delay_s too
            assert [c for c in units.changes(value, valid, now) if c.unit == "H1.U3"] == []


async def test_sink_announces_an_alarm_of_a_batch_that_came_on_before_the_samples_shutdown(
    manager: AlarmManager,
) -> None:
    clock = FakeClock(at(10))
    sink, commits, reported = sink_into(manager, clock)
    await sink.write(batch(rules(), ("R1.FI-101", 1, 50), ("R1.LT-101", 1, 50), ("P1.XS-101", 1, 1)))
    # one catch-up batch: the level high at t=2 while running (flow 50), the unit stops at t=5
    await sink.write(batch(rules(), ("R1.LT-101", 2, 95), ("R1.FI-101", 2, 50), ("R1.FI-101", 5, 0.1)))
    assert reported[-1] == (SuppressionChange("H1.U1", True, "装置停车", "E1.R1.FI-101", 0.1),)
    raised, hidden, tracked = commits[-3:]
    assert actions(raised) == [(LH, "RAISED", "normal", "unacknowledged")]
    assert [o.alarm_key for o in raised.outbox] == [LH]
    assert [k for k, *_ in actions(hidden)] == [FL, LL_, XS]  # LH awaits its acknowledgement
    assert actions(tracked) == [(FL, "CONDITION", "suppressed", "suppressed")] and tracked.outbox == ()
    assert [j.at_us for c in commits for j in c.journal if j.alarm_key == LH] == [at(2)]


async def test_sink_waits_for_the_units_on_and_off_delays_and_a_bad_reading_restarts_them(
    manager: AlarmManager,
) -> None:
    clock = FakeClock(at(1))
    sink, commits, reported = sink_into(manager, clock)

    async def status(s: float, value: float, quality: int = GOOD) -> list[tuple[str, bool]]:
        clock.advance(s - (clock.now_us() - at(0)) / 1e6)
        n = len(reported)
        await sink.write(batch(rules(), ("K1.XS-301", s, value, quality)))
        return [(c.unit, c.suppressed) for changes in reported[n:] for c in changes]

    assert await status(1, 1) == [("H1.U3", False)]  # the first known state: at once
    assert await status(2, 0) == []  # stopped: on_delay_s 10 runs
    assert await status(11, 0) == []
    assert await status(12, 0) == [("H1.U3", True)]
    assert [a[:2] for a in actions(commits[-1])] == [("E1.K1.PT-301:L", "SUPPRESSED")]
    assert await status(13, 1) == []  # started: off_delay_s 5 runs
    assert await status(15, 1, BAD) == []  # a BAD reading: the state held, the delay restarts
    assert await status(16, 1) == []
    assert await status(20, 1) == []
    assert await status(21, 1) == [("H1.U3", False)]
    assert await status(22, 0) == [] and await status(23, 1) == [] and await status(40, 1) == []  # a blip


async def test_sink_of_a_new_run_reports_the_stored_shutdown_without_a_second_journal(
    manager: AlarmManager,
) -> None:
    manager.suppress([DOWN], at(0))
    again = AlarmManager(manager.catalog, AlarmSettings(), seq=manager.seq, alarms=manager.alarms)
    sink, commits, reported = sink_into(again, FakeClock(at(1)))
    await sink.write(batch(rules(), ("R1.FI-101", 1, 0.1)))
    assert reported == [(SuppressionChange("H1.U1", True, "装置停车", "E1.R1.FI-101", 0.1),)]
    # the flow's L edge is new to this engine (tracked while suppressed); nothing is suppressed again
    assert [actions(c) for c in commits] == [[(FL, "CONDITION", "suppressed", "suppressed")]]
    assert commits[0].audit == () and again.seq == manager.seq + 1


# --- AlarmService: held with the edges until recovered; a restart journals nothing twice ------------


@pytest.fixture(params=[Backend.POSTGRES], ids=str)
def dsn(request: pytest.FixtureRequest) -> Iterator[str]:
    with migrated_db(request.param) as url:
        yield url


async def test_service_stores_suppression_and_a_restart_keeps_it_without_new_rows(
    catalog: Catalog, dsn: str, tmp_path: Path
) -> None:
    clock = FakeClock(at(1))
    svc = AlarmService(catalog, AlarmSettings(command_poll_s=5.0), tmp_path, dsn, clock)
    svc.suppression([DOWN])
    assert svc.manager.seq == -1  # held: the state is not loaded yet
    await svc.recover()
    svc.start()
    try:
        await eventually(lambda: svc.stored_seq == 0, timeout=10)
    finally:
        await svc.close()
    rows = await fetch_all(dsn, "SELECT key, status, reason FROM alarm_state ORDER BY key")
    assert rows == sorted((k, "suppressed", "装置停车") for k in U1_PROCESS)
    journal = await fetch_all(dsn, "SELECT count(*) FROM alarm_journal")
    audit = await fetch_all(dsn, "SELECT actor, action, target FROM audit_log")
    assert journal == [(4,)] and audit == [("engine", "suppress", "H1.U1")]

    svc = AlarmService(catalog, AlarmSettings(command_poll_s=5.0), tmp_path, dsn, clock)
    await svc.recover()
    svc.start()
    try:
        svc.suppression([DOWN])  # the new run's first evaluation
        assert svc.manager.seq == 0
        svc.suppression([UP])
        await eventually(lambda: svc.stored_seq == 1, timeout=10)
    finally:
        await svc.close()
    assert await fetch_all(dsn, "SELECT count(*) FROM alarm_journal") == [(8,)]
    assert await fetch_all(dsn, "SELECT DISTINCT status FROM alarm_state") == [("normal",)]


async def test_service_releases_at_start_what_a_removed_suppress_when_held(
    catalog: Catalog, dsn: str, tmp_path: Path
) -> None:
    clock = FakeClock(at(1))
    svc = AlarmService(catalog, AlarmSettings(command_poll_s=5.0), tmp_path, dsn, clock)
    await svc.recover()
    svc.start()
    try:
        svc.suppression([DOWN])
        await eventually(lambda: svc.stored_seq == 0, timeout=10)
    finally:
        await svc.close()
    # the config edited: U1 declares no suppress_when any more
    hs = plant().enterprises[0].hazard_sources[0]
    hs = updated(hs, {"units": [updated(u, {"suppress_when": None}) for u in hs.units]})
    edited = updated(plant(), {"enterprises": [updated(plant().enterprises[0], {"hazard_sources": [hs]})]})
    svc = AlarmService(Catalog(edited, rules()), AlarmSettings(command_poll_s=5.0), tmp_path, dsn, clock)
    await svc.recover()
    svc.start()
    try:
        await eventually(lambda: svc.stored_seq == 1, timeout=10)
    finally:
        await svc.close()
    assert await fetch_all(dsn, "SELECT DISTINCT status FROM alarm_state") == [("normal",)]
    assert await fetch_all(dsn, "SELECT action, target FROM audit_log ORDER BY seq") == [
        ("suppress", "H1.U1"),
        ("unsuppress", "H1.U1"),
    ]
