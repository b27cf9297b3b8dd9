"""The ``hazardwatch`` command line: one entry point, subcommands mounted from their packages.

Exit codes: 0 success, 2 invalid configuration or usage, 1 any other failure.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

import hazardwatch
from core.clock import SystemClock
from core.errors import ConfigError, SchemaError, StorageError
from core.plant import ModbusDevice, OpcUaDevice, Plant
from core.redact import redact
from hazardwatch.cli_common import config_error_exit, load_compiled_or_exit, load_plant_or_exit, with_data_dir
from hazardwatch.cli_logging import LOG_FORMAT, LOG_LEVEL_INFO, LOG_LEVEL_WARNING, start_logging, stop_logging
from hazardwatch.logs import LogFormat
from hazardwatch.runtime import RuntimeOptions

app = typer.Typer(
    name="hazardwatch",
    help="HazardWatch: real-time monitoring and alarms for major hazard sources (重大危险源).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        out.print(f"hazardwatch {hazardwatch.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Monitor temperature, pressure, level, flow and gas detectors; raise and route alarms."""
    # A command's log records are all written before it returns (in-process runs too).
    ctx.call_on_close(stop_logging)


@app.command()
def check(config: Path = typer.Argument(..., help="Plant YAML, or a folder holding plant.yaml.")) -> None:
    """Validate a plant config and compile it as ``run`` would (rules, read plans, sources; nothing
    connects), then summarise it, or list every error (exit code 2)."""
    plant = load_plant_or_exit(config, compile_check=True)
    routes = _check_routes(config, plant)
    tags = plant.tags()
    protocol_of = {d.id: ("OPC UA" if isinstance(d, OpcUaDevice) else "Modbus") for d in plant.devices()}
    hazard_sources = [h for e in plant.enterprises for h in e.hazard_sources]
    summary = Table(title=f"{plant.name}: {config}", show_edge=False)
    for col in ("enterprise", "county", "hazard sources", "grades", "tags", "devices"):
        summary.add_column(col)
    for ent in plant.enterprises:
        grades = Counter(f"{h.grade}级" for h in ent.hazard_sources)
        summary.add_row(
            f"{ent.code} {ent.name}",
            ent.county,
            str(len(ent.hazard_sources)),
            " ".join(f"{g}×{n}" for g, n in sorted(grades.items())),
            str(sum(len(h.tags) for h in ent.hazard_sources)),
            str(len(ent.devices)),
        )
    out.print(summary)
    by_kind = Counter(t.kind.value for t in tags)
    by_source = Counter(protocol_of[t.source.device] for t in tags)
    interlocks = sum(len(h.interlocks) for h in hazard_sources)
    out.print(
        f"{len(plant.enterprises)} enterprises, {len(hazard_sources)} hazard sources, {len(tags)} tags, "
        f"{len(plant.devices())} devices "
        f"({sum(isinstance(d, OpcUaDevice) for d in plant.devices())} OPC UA, "
        f"{sum(isinstance(d, ModbusDevice) for d in plant.devices())} Modbus), {interlocks} interlocks"
    )
    out.print("tags per kind:   " + ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items())))
    out.print("tags per source: " + ", ".join(f"{k} {n}" for k, n in sorted(by_source.items())))
    if routes:
        out.print(routes)
    out.print("config OK", style="bold green")


def _check_routes(config: Path, plant: Plant) -> str:
    """Routes, channels and rosters beside the plant, compiled as ``run`` compiles them (exit 2
    on any problem); a line saying what they hold, or that nothing is notified."""
    from alarms.delivery_setup import load_delivery

    try:
        setup = load_delivery(config, plant)
    except ConfigError as exc:
        raise config_error_exit(exc, config) from None
    if setup is None:
        return "routes: no routes.yaml beside the plant: alarms are journaled but nobody is notified"
    return setup.summary()


def _logging(level: str, fmt: LogFormat) -> None:
    """Logging through the queue (hazardwatch.logs): never on the event loop's hot path."""
    start_logging(level, fmt)


def _options(metrics_port: int | None, pki_dir: str | None) -> RuntimeOptions:
    if pki_dir is None:
        return RuntimeOptions(metrics_port=metrics_port)
    return RuntimeOptions(metrics_port=metrics_port, pki_dir=pki_dir)


DATA_DIR_OPTION = typer.Option(
    None,
    "--data-dir",
    help="Directory for the spool, rule state, heartbeat and certificates (default: settings.data_dir, var).",
    show_default=False,
)


@app.command()
def run(
    config: Path = typer.Argument(..., help="Plant YAML, or a folder holding plant.yaml."),
    metrics_port: int = typer.Option(
        9108, "--metrics-port", help="Port of /metrics on 127.0.0.1 (0: any free port)."
    ),
    duration_s: float | None = typer.Option(None, "--duration", min=0, help="Stop after this many seconds."),
    view: bool = typer.Option(False, "--view/--no-view", help="Show the live terminal view."),
    pki_dir: str | None = typer.Option(
        None,
        "--pki-dir",
        help="Where OPC UA client certificates are kept (default: pki under the data directory).",
        show_default=False,
    ),
    dsn: str | None = typer.Option(
        None,
        "--dsn",
        help="PostgreSQL URL; default settings.storage.dsn, else $DATABASE_URL.",
        show_default=False,
    ),
    data_dir: Path | None = DATA_DIR_OPTION,
    log_level: str = LOG_LEVEL_INFO,
    log_format: LogFormat = LOG_FORMAT,
) -> None:
    """Collect every configured tag into the historian until Ctrl-C (SIGINT/SIGTERM)."""
    _logging(log_level, log_format)
    options = _options(metrics_port, pki_dir)
    clock = SystemClock()
    plant, compiled = load_compiled_or_exit(config, data_dir=data_dir, pki_dir=options.pki_dir, clock=clock)
    from hazardwatch.run import run as run_plant  # never hazardwatch.demo: it imports the simulators

    try:
        asyncio.run(
            run_plant(
                plant,
                out,
                view=view,
                duration_s=duration_s,
                options=options,
                dsn=dsn,
                clock=clock,
                compiled=compiled,
            )
        )
    except StorageError as exc:
        # No database, an unreachable one at start, or a schema newer than this code.
        # One line, whatever the width (log shippers), and never a password (storage redacts too).
        err.print(f"hazardwatch run: {redact(str(exc))}", markup=False, soft_wrap=True)
        raise typer.Exit(
            2 if isinstance(exc, SchemaError) or "no database configured" in str(exc) else 1
        ) from None


@app.command()
def demo(
    config: Path = typer.Argument(Path("config/demo"), help="Plant YAML, or a folder holding plant.yaml."),
    scenario: str | None = typer.Option(
        None,
        "--scenario",
        help="Scenario YAML for the simulated plant (default: scenarios/ammonia-leak.yaml beside the plant, "
        "if present; 'none' for a quiet plant).",
    ),
    speed: float = typer.Option(1.0, "--speed", min=0.01, help="Simulated seconds per wall second."),
    metrics_port: int = typer.Option(0, "--metrics-port", help="Port of /metrics (default: any free port)."),
    duration_s: float | None = typer.Option(None, "--duration", min=0, help="Stop after this many seconds."),
    view: bool = typer.Option(True, "--view/--no-view", help="Show the live terminal view."),
    data_dir: Path | None = DATA_DIR_OPTION,
    log_level: str = LOG_LEVEL_WARNING,
    log_format: LogFormat = LOG_FORMAT,
) -> None:
    """The whole chain on one machine: simulated plant -> collectors -> rules -> historian, with a live view."""
    _logging(log_level, log_format)
    plant, compiled = load_compiled_or_exit(config)
    plant = with_data_dir(plant, data_dir)
    from hazardwatch.demo import demo as run_demo

    base = config if config.is_dir() else config.parent
    default = base / "scenarios" / "ammonia-leak.yaml"
    chosen = (
        None
        if scenario == "none"
        else Path(scenario)
        if scenario
        else (default if default.exists() else None)
    )
    options = _options(metrics_port, None)
    try:
        asyncio.run(
            run_demo(
                plant,
                out,
                scenario=chosen,
                speed=speed,
                view=view,
                duration_s=duration_s,
                options=options,
                rationale=compiled.rationale,
                delivery=compiled.delivery,
            )
        )
    except StorageError as exc:  # a configured database that cannot be used: say so, no traceback
        err.print(f"hazardwatch demo: {redact(str(exc))}", markup=False, soft_wrap=True)
        raise typer.Exit(2 if isinstance(exc, SchemaError) else 1) from None


def _mount() -> None:
    """Subcommands from the modules that own them (explicit, no import-time discovery)."""
    from hazardwatch import cli_api, cli_grafana, cli_rosters, cli_routes, cli_rules, cli_sim
    from hazardwatch.cli_alarms import alarms_app

    cli_sim.register(app)
    cli_rules.register(app)
    cli_routes.register(app)
    cli_rosters.register(app)
    cli_api.register(app)
    cli_grafana.register(app)
    app.add_typer(alarms_app, name="alarms")
    try:
        from hazardwatch.cli_db import db_app
    except ImportError:  # pragma: no cover — storage lands in its own issue
        return
    app.add_typer(db_app, name="db", help="Historian database: migrations, registry sync, retention.")


_mount()


def main() -> None:
    app()
