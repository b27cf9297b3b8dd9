"""`hazardwatch run` and `make demo`: the collectors (and the simulated plant) until Ctrl-C.

``serve`` runs a Runtime until SIGINT/SIGTERM (or a duration), with an optional rich live
view. ``demo`` adds the simulated plant on free loopback ports and, with no DATABASE_URL,
an embedded PostgreSQL under ``<data_dir>/pg``; everything is stopped cleanly on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from rich.console import Console
from rich.live import Live

from core.errors import DatabaseUnavailable
from core.plant import Plant
from hazardwatch.live_view import render_view
from hazardwatch.runtime import Runtime, RuntimeOptions
from simulators.fixtures import start_simulator
from storage.embedded import EmbeddedPostgres, configured_dsn, dsn_or_embedded

__all__ = ["demo", "serve"]

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


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def serve(
    plant: Plant, dsn: str, console: Console, *, view: bool, duration_s: float | None, options: RuntimeOptions
) -> Runtime:
    runtime = Runtime(plant, dsn, options=options)
    stop = _stop_event()
    await runtime.start()
    loop = asyncio.get_running_loop()
    deadline = None if duration_s is None else loop.time() + duration_s
    if runtime.metrics_server is not None:
        console.print(f"metrics: http://{runtime.metrics_server.host}:{runtime.metrics_server.port}/metrics")
    try:
        live = Live(render_view(runtime), console=console, refresh_per_second=2) if view else None
        with live or contextlib.nullcontext():
            console.print("live view (Ctrl-C to stop)" if view else "running (Ctrl-C to stop)")
            while not stop.is_set() and (deadline is None or loop.time() < deadline):
                wait = 0.5 if deadline is None else max(0.0, min(0.5, deadline - loop.time()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await stop.wait()
                if live is not None:
                    live.update(render_view(runtime))
    finally:
        console.line()
        console.print("stopping: flushing queues to the historian…")
        await runtime.stop()
        console.print(runtime.summary().text(), soft_wrap=True)
    return runtime


async def run(
    plant: Plant,
    console: Console,
    *,
    view: bool,
    duration_s: float | None,
    options: RuntimeOptions,
    dsn: str | None = None,
) -> None:
    """Production entry: ``dsn``, else the configured database (the embedded server is for the demo)."""
    dsn = dsn or configured_dsn(plant.settings.storage)
    if not dsn:
        raise DatabaseUnavailable(
            "no database configured: set DATABASE_URL or settings.storage.dsn, or pass --dsn"
        )
    await serve(plant, dsn, console, view=view, duration_s=duration_s, options=options)


async def demo(
    plant: Plant,
    console: Console,
    *,
    scenario: Path | None,
    speed: float = 1.0,
    view: bool,
    duration_s: float | None,
    options: RuntimeOptions,
) -> None:
    async with _database(plant, console) as dsn:
        console.print("simulated plant: starting OPC UA and Modbus servers on free loopback ports…")
        if scenario is not None:
            console.print(f"scenario: {scenario} at {speed:g}x")
        async with start_simulator(plant, scenario, seed=None, autostep=True, speed=speed) as sim:
            await serve(
                sim.plant_for_clients(), dsn, console, view=view, duration_s=duration_s, options=options
            )
