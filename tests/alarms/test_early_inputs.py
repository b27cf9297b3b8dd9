"""AlarmService before its state is loaded (the database was down at start): condition edges,
SIF and suppression changes are held in order; past ``max_early_edges`` the oldest condition
edges are dropped and counted, never a SIF or suppression change (their senders report a
change once: a dropped one would never come again)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from alarms.changes import SuppressionChange
from alarms.model import Catalog
from alarms.service import AlarmService
from core.clock import FakeClock
from core.conditions import ConditionEdges
from core.config import load_plant
from core.settings import AlarmSettings
from rules.compile import compile_rules
from storage.db import Backend
from tests.support.databases import fetch_all, migrated_db

PLANT = Path(__file__).parent / "data" / "suppression.yaml"
FL, LH, TANK = "E1.R1.FI-101:L", "E1.R1.LT-101:H", "E1.T1.LT-201:H"
T0 = 1_700_000_000_000_000


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    plant = load_plant(PLANT)
    return Catalog(plant, compile_rules(plant))


@pytest.fixture
def dsn() -> Iterator[str]:
    with migrated_db(Backend.POSTGRES) as url:
        yield url


def edge(catalog: Catalog, key: str) -> ConditionEdges:
    alarm = catalog.by_key(key)
    assert alarm is not None
    return ConditionEdges.of([alarm.rule], [True], [T0], [99.0], [50.0], [0])


async def test_held_suppression_outlives_dropped_edges(catalog: Catalog, dsn: str, tmp_path: Path) -> None:
    svc = AlarmService(
        catalog, AlarmSettings(command_poll_s=5.0), tmp_path, dsn, FakeClock(T0), max_early_edges=2
    )
    svc.edges(edge(catalog, FL))  # the oldest edge: dropped below
    svc.suppression([SuppressionChange("H1.U1", True, "装置停车", "E1.R1.FI-101", 0.2)])
    svc.edges(edge(catalog, LH))
    svc.edges(edge(catalog, TANK))  # a third edge: over the limit
    assert svc.early_dropped._value.get() == 1
    await svc.recover()
    svc.start()
    try:
        assert svc.manager.alarms[LH].status == "suppressed"  # the unit's shutdown was applied
        assert svc.manager.alarms[TANK].status == "unacknowledged"  # U2 is not suppressed
        assert svc.manager.alarms[FL].status == "suppressed" and not svc.manager.alarms[FL].condition
    finally:
        assert await svc.close()
    stored = dict(
        await fetch_all(dsn, "SELECT key, status FROM alarm_state WHERE key IN (%s, %s)", (LH, TANK))
    )
    assert stored == {LH: "suppressed", TANK: "unacknowledged"}
