"""A real alarm engine (alarms.service.AlarmService, the one writer) on a test database, for the
API's tests: raise and clear alarms by condition edges, and let it apply the commands the API
submits, as ``hazardwatch run`` would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np

from alarms.model import Catalog
from alarms.service import AlarmService
from core.clock import SystemClock
from core.conditions import ConditionEdges
from core.plant import Plant
from core.settings import AlarmSettings
from rules.compile import compile_rules
from tests.support.waiting import eventually

# Alarm keys of the two-enterprise plant (tests/core/data/two_enterprises.yaml)
AA_HH = "AA.V1.LT1:HH"  # high priority, enterprise AA (孝义市)
AA_GAS = "AA.V1.AT1:GAS_L2"  # critical, AA
BB_GAS = "BB.G1.AT1:GAS_L2"  # critical, BB (文水县)


class Engine:
    def __init__(self, service: AlarmService) -> None:
        self.service = service
        self.catalog = service.catalog

    async def edges(self, *rows: tuple[str, bool, float], limit: float = 8.6) -> None:
        """Condition edges (alarm key, active, value) now; returns once they are in the database."""
        idx = [self.catalog.by_key(k).rule for k, *_ in rows]  # type: ignore[union-attr]
        n = len(rows)
        ts = SystemClock().now_us()
        self.service.edges(
            ConditionEdges.of(
                np.array(idx),
                np.array([r[1] for r in rows]),
                np.full(n, ts),
                np.array([r[2] for r in rows]),
                np.full(n, limit),
                np.full(n, 3, np.uint8),
            )
        )
        target = self.service.manager.seq
        await eventually(lambda: self.service.stored_seq >= target, timeout=15)

    async def raise_(self, *keys: str) -> None:
        await self.edges(*((k, True, 9.5) for k in keys))

    async def clear(self, *keys: str) -> None:
        await self.edges(*((k, False, 1.0) for k in keys))


@asynccontextmanager
async def running_engine(plant: Plant, dsn: str, log_dir: Path) -> AsyncIterator[Engine]:
    """The engine applying commands (polled every 0.2 s besides NOTIFY) until the block ends."""
    catalog = Catalog(plant, compile_rules(plant))
    service = AlarmService(catalog, AlarmSettings(command_poll_s=0.2), log_dir, dsn, SystemClock())
    await service.recover()
    service.start()
    try:
        yield Engine(service)
    finally:
        await service.close()
