"""A safety function that can no longer act is an alarm of its own (issue 11 item 9): the manager
raises and returns "SIF disabled" with its reasons, and RuleSink reports each interlock's first
known state and then its changes only (test plant: H1.IL1 2oo3 on LT1/LT2/LT3, LT1 bypassed by
HS1; H1.IL3 out of service). The service holds the changes with the edges until it has recovered,
against real PostgreSQL and TimescaleDB."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alarms.changes import SifChange
from alarms.journal import Commit
from alarms.manager import AlarmManager
from alarms.model import Catalog
from alarms.service import AlarmService
from core.clock import FakeClock
from core.settings import AlarmSettings
from hazardwatch.rule_sink import RuleSink
from rules.engine import RuleEngine
from storage.db import Backend
from tests.rules.streams import BAD, at, batch, plant_for_tests, rules_for_tests
from tests.support.databases import fetch_all, migrated_db
from tests.support.waiting import eventually

IL1, IL3 = "H1.IL1", "H1.IL3"
SIF1, SIF3 = f"{IL1}.sif_disabled", f"{IL3}.sif_disabled"
DOWN = SifChange(IL1, True, 0, 2, ("E1.V1.LT1",), ("E1.V1.LT2", "E1.V1.LT3"))
BACK = SifChange(IL1, False, 1, 2, ("E1.V1.LT1",), ("E1.V1.LT2",))


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog(plant_for_tests(), rules_for_tests())


@pytest.fixture
def manager(catalog: Catalog) -> AlarmManager:
    return AlarmManager(catalog, AlarmSettings())


def actions(c: Commit | None) -> list[tuple[str, str, str, str]]:
    assert c is not None
    return [(j.alarm_key, j.action, j.old_status, j.new_status) for j in c.journal]


def test_disabled_raises_a_critical_alarm_that_says_why(manager: AlarmManager) -> None:
    c = manager.sif([DOWN], 5_000)
    assert actions(c) == [(SIF1, "RAISED", "normal", "unacknowledged")]
    assert c is not None and c.rules == ()  # no rule behind it: nothing of the engine to keep
    (j,) = c.journal
    assert (j.at_us, j.value, j.limit, j.actor) == (5_000, 0.0, 2.0, "engine")
    assert j.detail == {
        "bypassed": ["E1.V1.LT1"],
        "failed": ["E1.V1.LT2", "E1.V1.LT3"],
        "in_service": True,
        "reason": "bypassed: E1.V1.LT1; failed: E1.V1.LT2, E1.V1.LT3",
        "reason_zh": "旁路：E1.V1.LT1；故障：E1.V1.LT2、E1.V1.LT3",
    }
    (row,) = c.alarms
    assert (row.key, row.kind, row.priority, row.status, row.latching) == (
        SIF1, "SIF_DISABLED", "critical", "unacknowledged", False,
    )  # fmt: skip
    (out,) = c.outbox
    assert (out.event, out.priority, out.labels["interlock"]) == ("raised", "critical", IL1)
    assert "安全仪表功能失效" in out.message_zh and "故障：E1.V1.LT2、E1.V1.LT3" in out.message_zh
    assert "SIF disabled" in out.message_en and "bypassed: E1.V1.LT1" in out.message_en


def test_raised_again_is_nothing_and_an_input_voting_again_returns_it(manager: AlarmManager) -> None:
    manager.sif([DOWN], 5_000)
    assert manager.sif([DOWN], 6_000) is None  # already active: no commit, no seq used
    assert manager.seq == 0
    c = manager.sif([BACK], 7_000)
    assert actions(c) == [(SIF1, "RETURNED", "unacknowledged", "returned_unacknowledged")]
    assert c is not None and c.journal[0].value == 1.0 and c.journal[0].limit == 2.0
    assert c.journal[0].detail is not None and c.journal[0].detail["failed"] == ["E1.V1.LT2"]


def test_able_is_skipped_unless_its_alarm_is_on(manager: AlarmManager) -> None:
    assert manager.sif([BACK, SifChange("H1.IL2", False, 2, 1)], 5_000) is None
    assert manager.seq == -1 and manager.alarms == {}


def test_out_of_service_says_so(manager: AlarmManager) -> None:
    c = manager.sif([SifChange(IL3, True, 1, 1, in_service=False)], 5_000)
    assert actions(c) == [(SIF3, "RAISED", "normal", "unacknowledged")]
    assert c is not None and c.journal[0].detail is not None
    assert c.journal[0].detail["reason"] == "out of service" and "联锁停用" in c.outbox[0].message_zh


# --- RuleSink: reports first known states, then changes only -----------------------------------


def sink_into(manager: AlarmManager, clock: FakeClock) -> tuple[RuleSink, list[Commit]]:
    sink = RuleSink(RuleEngine(rules_for_tests()), clock)
    commits: list[Commit] = []

    def on_sif(changes: tuple[SifChange, ...]) -> None:
        c = manager.sif(changes, clock.now_us())
        if c is not None:
            commits.append(c)

    sink.on_sif = on_sif
    return sink, commits


async def test_sink_raises_once_and_returns_when_an_input_votes_again(manager: AlarmManager) -> None:
    clock = FakeClock(at(1))
    sink, commits = sink_into(manager, clock)
    await sink.write(batch(rules_for_tests(), ("V1.LT1", 1, 50)))  # IL1 able; IL3 out of service
    assert [actions(c) for c in commits] == [[(SIF3, "RAISED", "normal", "unacknowledged")]]
    await sink.write(batch(rules_for_tests(), ("V1.HS1", 1, 1), ("V1.LT2", 1, 0, BAD), ("V1.LT3", 1, 0, BAD)))
    assert actions(commits[-1]) == [(SIF1, "RAISED", "normal", "unacknowledged")]
    assert commits[-1].journal[0].detail == DOWN.detail()
    n = len(commits)
    await sink.write(batch(rules_for_tests(), ("V1.LT2", 2, 0, BAD), ("V1.LT1", 2, 95)))  # still 0oo0
    clock.advance(1)
    await sink.write(batch(rules_for_tests(), ("V1.LT2", 2, 50)))
    assert len(commits) == n + 1
    assert actions(commits[-1]) == [(SIF1, "RETURNED", "unacknowledged", "returned_unacknowledged")]
    assert commits[-1].journal[0].value == 1.0


async def test_sink_of_a_new_run_returns_an_alarm_cleared_while_it_was_down(manager: AlarmManager) -> None:
    manager.sif([DOWN], at(0))
    sink, commits = sink_into(manager, FakeClock(at(1)))
    await sink.write(batch(rules_for_tests(), ("V1.LT1", 1, 50), ("V1.LT2", 1, 50), ("V1.LT3", 1, 50)))
    assert actions(commits[0]) == [
        (SIF1, "RETURNED", "unacknowledged", "returned_unacknowledged"),
        (SIF3, "RAISED", "normal", "unacknowledged"),
    ]


# --- AlarmService: held with the edges until the state is loaded --------------------------------


@pytest.fixture(params=[Backend.POSTGRES, Backend.TIMESCALEDB], ids=str)
def dsn(request: pytest.FixtureRequest) -> Iterator[str]:
    with migrated_db(request.param) as url:
        yield url


async def rows(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    return await fetch_all(dsn, sql)


async def test_service_holds_changes_until_recovered_then_stores_them(
    catalog: Catalog, dsn: str, tmp_path: Path
) -> None:
    clock = FakeClock(at(1))
    svc = AlarmService(catalog, AlarmSettings(command_poll_s=5.0), tmp_path, dsn, clock)
    svc.sif([DOWN])
    assert svc.manager.seq == -1  # held: the state is not loaded yet
    await svc.recover()
    svc.start()
    try:
        await eventually(lambda: svc.stored_seq == 0, timeout=10)
        assert await rows(dsn, "SELECT key, kind, priority, status, condition FROM alarm_state") == [
            (SIF1, "SIF_DISABLED", "critical", "unacknowledged", True)
        ]
        ((detail,),) = await rows(dsn, "SELECT detail FROM alarm_journal")
        assert detail["reason"] == DOWN.reason()[1]
    finally:
        await svc.close()
