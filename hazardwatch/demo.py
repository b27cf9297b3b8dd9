"""`hazardwatch demo` and `make demo`: the simulated plant and the collectors until Ctrl-C.

``demo`` runs ``hazardwatch.run.serve`` against the simulated plant on free loopback ports and,
with no DATABASE_URL, an embedded PostgreSQL under ``<data_dir>/pg``; everything is stopped
cleanly on the way out. The production entry point is hazardwatch/run.py, which does not import
this module (nor the simulators).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from rich.console import Console

from alarms.delivery_setup import DeliverySetup
from alarms.rationale import RationaleDefaults
from core.plant import Plant
from hazardwatch.demo_api import DEMO_PASSWORD, running_api
from hazardwatch.run import serve
from hazardwatch.runtime import RuntimeOptions
from simulators.launch import start_simulator
from storage.embedded import EmbeddedPostgres, dsn_or_embedded

__all__ = ["demo"]

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def _database(plant: Plant, console: Console) -> AsyncIterator[str]:
    dsn, embedded = await asyncio.to_thread(dsn_or_embedded, plant.settings)
    if embedded is not None:
        console.print(
            f"database: embedded PostgreSQL in {plant.settings.embedded_path} (no DATABASE_URL set)"
        )
    else:
        console.print("database: configured DSN")
    try:
        yield dsn
    finally:
        if isinstance(embedded, EmbeddedPostgres):
            await asyncio.to_thread(embedded.stop)


async def demo(
    plant: Plant,
    console: Console,
    *,
    scenario: Path | None,
    speed: float = 1.0,
    view: bool,
    duration_s: float | None,
    options: RuntimeOptions,
    rationale: RationaleDefaults | None = None,
    delivery: DeliverySetup | None = None,
) -> None:
    """``rationale``: the plant's rationalization defaults (the compile of its check has them);
    the run compiles the plant again, for the simulator's ports."""
    async with _database(plant, console) as dsn:
        console.print("simulated plant: starting OPC UA and Modbus servers on free loopback ports…")
        if scenario is not None:
            console.print(f"scenario: {scenario} at {speed:g}x")
        async with (
            running_api(plant, dsn, rationale) as api,
            start_simulator(plant, scenario, seed=None, autostep=True, speed=speed) as sim,
        ):
            console.print(f"operator console: {api.url}console/  (API docs: {api.url}docs)", soft_wrap=True)
            console.print(f"demo logins (password {DEMO_PASSWORD}):", soft_wrap=True)
            for who in api.logins:
                where = f" {who.enterprise}" if who.enterprise else ""
                console.print(f"  {who.username} ({who.role.value}{where})", soft_wrap=True, markup=False)
            await serve(
                sim.plant_for_clients(),
                dsn,
                console,
                view=view,
                duration_s=duration_s,
                options=options,
                rationale=rationale,
                delivery=delivery,
            )
