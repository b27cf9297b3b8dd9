"""`hazardwatch run`: the collectors, rules and historian against the configured plant until Ctrl-C.

``serve`` runs a Runtime until SIGINT/SIGTERM (or a duration), with an optional rich live view;
``run`` is the production entry (a configured database, never the embedded one). ``hazardwatch
demo`` (hazardwatch/demo.py) reuses ``serve`` around the simulated plant.

Invariant: this is the production import path, so nothing here (directly or transitively) imports
the simulators or pytest/hypothesis; tests/hazardwatch/test_install_without_dev.py checks that in a
venv without the dev extras.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from rich.console import Console
from rich.live import Live

from alarms.delivery_setup import DeliverySetup
from alarms.rationale import RationaleDefaults
from core.clock import Clock
from core.config import tune_collector_for_service
from core.errors import DatabaseUnavailable
from core.plant import Plant
from hazardwatch.compile_all import Compiled
from hazardwatch.live_view import render_view
from hazardwatch.runtime import Runtime, RuntimeOptions
from storage.embedded import configured_dsn

__all__ = ["run", "serve"]


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def serve(
    plant: Plant,
    dsn: str,
    console: Console,
    *,
    view: bool,
    duration_s: float | None,
    options: RuntimeOptions,
    clock: Clock | None = None,
    compiled: Compiled | None = None,
    rationale: RationaleDefaults | None = None,
    delivery: DeliverySetup | None = None,
) -> Runtime:
    """Run ``plant`` until a signal or ``duration_s``; ``clock``, ``compiled``, ``rationale``
    and ``delivery`` as for Runtime."""
    tune_collector_for_service()
    runtime = Runtime(
        plant, dsn, options=options, clock=clock, compiled=compiled, rationale=rationale, delivery=delivery
    )
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
    clock: Clock | None = None,
    compiled: Compiled | None = None,
) -> None:
    """Production entry: ``dsn``, else the configured database (the embedded server is for the
    demo); ``compiled``: the plant as the config check compiled it, with ``clock``."""
    dsn = dsn or configured_dsn(plant.settings.storage)
    if not dsn:
        raise DatabaseUnavailable(
            "no database configured: set DATABASE_URL or settings.storage.dsn, or pass --dsn"
        )
    await serve(
        plant, dsn, console, view=view, duration_s=duration_s, options=options, clock=clock, compiled=compiled
    )
