"""``hazardwatch simulate | replay | export``: the plant simulators on the command line.

Mounted into the main CLI by ``register(app)``. Exit codes follow hazardwatch.cli: 0
success, 2 invalid configuration/scenario/CSV or usage (including a tag key the plant does
not define), 1 any other failure (database unreachable, schema mismatch, a tag the historian
does not know). History from the database goes through ``storage.queries.raw_history`` (see
``_db_rows``); the database is ``--dsn``, else the plant's ``settings.storage.dsn``, else
``$DATABASE_URL``. Time windows are half-open, ``--start`` <= t < ``--end``, for the
database and the CSV alike, so replaying an export over the same window replays every row.
``simulate`` and ``replay`` stop cleanly (servers closed, exit 0) on SIGTERM and on SIGINT,
handled explicitly: a background job of a shell starts with SIGINT ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import typer

from core.errors import ConfigError, StorageError
from core.plant import Plant
from core.redact import redact
from core.registry import TagRegistry
from hazardwatch.cli_common import config_error_exit, load_plant_or_exit, parse_window
from hazardwatch.cli_logging import LOG_FORMAT, LOG_LEVEL_WARNING, start_logging
from hazardwatch.logs import LogFormat

__all__ = ["register"]

DEFAULT_CONFIG = Path("config/demo")
DSN_HELP = "PostgreSQL URL; default settings.storage.dsn, else $DATABASE_URL."
START_HELP = "ISO 8601 start with a UTC offset (e.g. 2024-05-01T08:00:00Z), inclusive."
END_HELP = "ISO 8601 end with a UTC offset, exclusive: values at exactly this time are left out."


def _tags(text: str | None, registry: TagRegistry) -> list[str] | None:
    """The keys in ``--tags`` (None: all), each checked against the plant: exit 2 naming any unknown."""
    if text is None:
        return None
    keys = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if not keys:
        raise typer.BadParameter("give at least one tag key", param_hint="--tags")
    known = set(registry.keys)
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise typer.BadParameter(
            f"unknown tag key(s) in this plant: {', '.join(unknown)}", param_hint="--tags"
        )
    return keys


def _db_rows(
    plant: Plant, start_us: int | None, end_us: int | None, tags: list[str] | None, dsn: str | None
) -> Iterable[tuple[int, str, float, int]]:
    """Raw readings from the historian as (ts_us, key, value, quality), oldest first."""
    from storage.queries import raw_history  # only this path needs the database

    try:
        return raw_history(plant, tags, start_us, end_us, dsn=dsn)
    except StorageError as exc:
        typer.echo(redact(f"cannot read the historian: {exc}"), err=True)
        raise typer.Exit(1) from None


SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.asynccontextmanager
async def _stoppable() -> AsyncIterator[asyncio.Event]:
    """An event that SIGTERM or SIGINT sets; both handled explicitly, since a shell starts a
    background job with SIGINT ignored and Python then never raises KeyboardInterrupt."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in SIGNALS:
        # Not possible off the main thread (an embedding caller): then the caller stops us.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        if stop.is_set():
            typer.echo("stopped on a signal: servers closed")


async def _until(stop: asyncio.Event, work: Awaitable[None]) -> None:
    """Await ``work`` unless ``stop`` is set first (``work`` is then cancelled)."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (task, waiter):
            t.cancel()
        await asyncio.gather(task, waiter, return_exceptions=True)
    failure = None if task.cancelled() else task.exception()
    if failure is not None:
        raise failure


def _announce(sim: Any) -> None:
    for o in sim.opcua:
        typer.echo(f"OPC UA  {o.endpoint}  ({', '.join(d.id for d in o.devices)}, {len(o.index)} tags)")
    for m in sim.modbus:
        typer.echo(f"Modbus  {m.host}:{m.port}  ({', '.join(m.device_ids)})")


def simulate(
    config: Path = typer.Argument(..., help="Plant YAML, or a folder holding plant.yaml."),
    scenario: Path | None = typer.Option(None, "--scenario", help="Scenario YAML (config/demo/scenarios/)."),
    speed: float = typer.Option(1.0, "--speed", min=0.001, help="Simulated seconds per wall second."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed (default: the scenario's, else 0)."),
    rate_hz: float = typer.Option(1.0, "--rate", min=0.01, help="Model steps per wall second."),
    duration_s: float | None = typer.Option(
        None, "--duration", min=0, help="Stop after this many wall seconds."
    ),
    log_level: str = LOG_LEVEL_WARNING,
    log_format: LogFormat = LOG_FORMAT,
) -> None:
    """Serve the plant as live OPC UA and Modbus servers driven by process models and a scenario.

    Runs until --duration, SIGTERM or SIGINT (Ctrl-C), then closes the servers and exits 0.
    """
    start_logging(log_level, log_format)
    from simulators.runner import Simulator
    from simulators.scenario import load_scenario

    plant = load_plant_or_exit(config)
    try:
        sc = load_scenario(scenario, plant) if scenario is not None else None
    except ConfigError as exc:
        raise config_error_exit(exc, scenario) from None

    async def run() -> None:
        async with _stoppable() as stop, Simulator(plant, sc, seed=seed, speed=speed, rate_hz=rate_hz) as sim:
            _announce(sim)
            await _until(stop, asyncio.sleep(duration_s if duration_s is not None else float("inf")))

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


def replay(
    source: str = typer.Option("csv", "--from", help="csv or db."),
    file: Path | None = typer.Option(None, "--file", help="CSV file (with --from csv)."),
    start: str | None = typer.Option(None, "--start", help=START_HELP + " Default: the first value."),
    end: str | None = typer.Option(None, "--end", help=END_HELP + " Default: after the last value."),
    tags: str | None = typer.Option(None, "--tags", help="Comma-separated tag keys (default: all)."),
    speed: float = typer.Option(
        1.0, "--speed", min=0.001, help="Replay speed factor: recorded spacing is divided by it."
    ),
    config: Path = typer.Option(DEFAULT_CONFIG, "--config", help="Plant YAML or folder."),
    original_timestamps: bool = typer.Option(
        False, "--original-timestamps", help="Serve recorded source times."
    ),
    hold_s: float = typer.Option(0.0, "--hold", min=0, help="Keep serving this long after the last value."),
    dsn: str | None = typer.Option(None, "--dsn", help=DSN_HELP + " (With --from db.)", show_default=False),
    log_level: str = LOG_LEVEL_WARNING,
    log_format: LogFormat = LOG_FORMAT,
) -> None:
    """Drive the simulator's servers with recorded values, keeping their original spacing."""
    start_logging(log_level, log_format)
    from simulators.replay import Recording, Replayer, read_csv
    from simulators.runner import Simulator

    plant = load_plant_or_exit(config)
    registry = TagRegistry.from_plant(plant)
    (lo, hi), keys = parse_window(start, end), _tags(tags, registry)
    try:
        if source == "csv":
            if file is None:
                raise typer.BadParameter("--from csv needs --file", param_hint="--file")
            rec = read_csv(file, registry, keys)
        elif source == "db":
            rows = _db_rows(plant, lo, hi, keys, dsn)
            rec = Recording.from_rows((ts, registry.index_of(k), v, q) for ts, k, v, q in rows)
        else:
            raise typer.BadParameter("use csv or db", param_hint="--from")
    except ConfigError as exc:
        raise config_error_exit(exc, file) from None
    keep = np.ones(len(rec), bool)  # [start, end), as the database query selects
    if lo is not None:
        keep &= rec.ts >= lo
    if hi is not None:
        keep &= rec.ts < hi
    rec = Recording(rec.ts[keep], rec.tag[keep], rec.value[keep], rec.quality[keep])
    typer.echo(f"replaying {len(rec)} values over {rec.duration_s:g} s at {speed:g}x")

    async def run() -> None:
        async with _stoppable() as stop, Simulator(plant, autostep=False) as sim:
            _announce(sim)
            await _until(
                stop, Replayer(sim, rec, speed, "ORIGINAL" if original_timestamps else "SHIFTED").run()
            )
            await _until(stop, asyncio.sleep(hold_s))

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


def export(
    start: str = typer.Option(..., "--start", help=START_HELP),
    end: str = typer.Option(..., "--end", help=END_HELP),
    tags: str | None = typer.Option(None, "--tags", help="Comma-separated tag keys (default: all)."),
    out: Path = typer.Option(Path("history.csv"), "--out", help="CSV file to write."),
    config: Path = typer.Option(DEFAULT_CONFIG, "--config", help="Plant YAML or folder."),
    dsn: str | None = typer.Option(None, "--dsn", help=DSN_HELP, show_default=False),
    log_level: str = LOG_LEVEL_WARNING,
    log_format: LogFormat = LOG_FORMAT,
) -> None:
    """Write raw history in [--start, --end) as a replayable CSV, oldest first.

    Columns: time (ISO 8601 UTC), tag (key), value (nan for a BAD reading without one), quality (byte).
    """
    from simulators.replay import write_csv

    start_logging(log_level, log_format)
    plant = load_plant_or_exit(config)
    (lo, hi), keys = parse_window(start, end), _tags(tags, TagRegistry.from_plant(plant))
    rows = _db_rows(plant, lo, hi, keys, dsn)  # read fully before the file is created
    n = write_csv(out, rows)
    typer.echo(f"wrote {n} rows to {out}")


def register(app: typer.Typer) -> None:
    """Add ``simulate``, ``replay`` and ``export`` to the main CLI."""
    app.command("simulate")(simulate)
    app.command("replay")(replay)
    app.command("export")(export)
