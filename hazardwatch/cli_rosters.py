"""``hazardwatch rosters show CONFIG``: who is on duty at each desk (enterprise duty rooms,
county and city bureau duty desks) at a moment, from ``rosters.yaml`` beside the plant;
phone numbers masked. Exit 2 on a bad plant or rosters file (every problem at file:line) or an
unknown desk."""

from __future__ import annotations

from pathlib import Path

import typer

from alarms.roster_load import load_rosters
from alarms.roster_show import describe
from core.clock import SystemClock
from core.errors import ConfigError
from hazardwatch.cli_common import config_error_exit, load_plant_or_exit, parse_time

__all__ = ["register", "rosters_app"]

rosters_app = typer.Typer(help="Duty rosters: who is on duty at each desk.", no_args_is_help=True)


@rosters_app.command("show")
def show(
    config: Path = typer.Argument(..., help="Plant YAML, or a folder holding plant.yaml (and rosters.yaml)."),
    at: str | None = typer.Option(None, "--at", help="When, ISO 8601 with offset (default: now)."),
    desk: str | None = typer.Option(None, "--desk", help="Only this desk (its code)."),
    rosters: Path | None = typer.Option(
        None, "--rosters", help="The rosters file (default: rosters.yaml beside the plant)."
    ),
) -> None:
    """One line per desk: code, name, what it answers for, the shift (local times), who is on duty."""
    plant = load_plant_or_exit(config)
    path = rosters or (config if config.is_dir() else config.parent) / "rosters.yaml"
    if not path.exists():
        typer.echo(f"no rosters file: {path} (write one, or pass --rosters)", err=True)
        raise typer.Exit(2)
    try:
        loaded = load_rosters(path, plant)
    except ConfigError as exc:
        raise config_error_exit(exc, path) from None
    at_us = parse_time(at, "--at") if at is not None else SystemClock().now_us()
    try:
        lines = describe(loaded, at_us, desk)
    except KeyError as exc:
        typer.echo(f"--desk: {exc.args[0]}", err=True)
        raise typer.Exit(2) from None
    for line in lines:
        typer.echo(line)


def register(app: typer.Typer) -> None:
    app.add_typer(rosters_app, name="rosters")
