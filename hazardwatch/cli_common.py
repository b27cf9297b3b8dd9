"""Helpers every CLI module shares: config errors as exit code 2, UTC time options."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from hazardwatch.compile_all import Compiled

from alarms.rationale import defaults_for
from core.clock import Clock, from_datetime
from core.config import collector_paused, load_plant, load_plant_located
from core.errors import ConfigError
from core.plant import Plant

__all__ = [
    "config_error_exit",
    "load_compiled_or_exit",
    "load_plant_or_exit",
    "parse_time",
    "parse_window",
    "with_data_dir",
]


def config_error_exit(exc: ConfigError, what: object) -> typer.Exit:
    """Print every issue (file:line path: message) to stderr; the Exit to raise (code 2)."""
    for issue in exc.issues:
        typer.echo(str(issue), err=True)
    typer.echo(f"{len(exc.issues)} error(s) in {what}", err=True)
    return typer.Exit(2)


def load_plant_or_exit(config: Path, *, compile_check: bool = False) -> Plant:
    """The validated plant, or exit 2 listing every error.

    ``compile_check``: also compile it the way ``run`` does (rules, read plans, sources), so
    that a config this accepts cannot crash a run (``check``, ``demo``; ``run`` keeps the
    compile: ``load_compiled_or_exit``); commands that never collect skip it and never load
    the protocol libraries.
    """
    if compile_check:
        return load_compiled_or_exit(config)[0]
    try:
        plant: Plant = load_plant(config)
    except ConfigError as exc:
        raise config_error_exit(exc, config) from None
    return plant


def load_compiled_or_exit(
    config: Path, *, data_dir: Path | None = None, pki_dir: str | None = None, clock: Clock | None = None
) -> tuple[Plant, Compiled]:
    """The validated plant (with ``data_dir``, when given) and what it compiles into with
    ``clock`` and the PKI directory ``pki_dir`` (relative to the data directory; None: the
    compile's default), or exit 2 listing every error. ``run`` starts its Runtime with this
    compile, the config check, instead of compiling again; the compile carries the plant's
    alarm rationalization defaults, so a broken reference file fails the check too."""
    from alarms.delivery_setup import load_delivery
    from hazardwatch.compile_all import compile_checked  # loads asyncua and pymodbus

    try:
        # loading and compiling build millions of objects that live as long as the command
        with collector_paused(keep=True):
            plant, source = load_plant_located(config)
            plant = with_data_dir(plant, data_dir)
            if pki_dir is None:
                compiled = compile_checked(plant, source, clock)
            else:
                compiled = compile_checked(plant, source, clock, str(plant.settings.local_path(pki_dir)))
            compiled = dataclasses.replace(
                compiled, rationale=defaults_for(config, plant), delivery=load_delivery(config, plant)
            )
    except ConfigError as exc:
        raise config_error_exit(exc, config) from None
    return plant, compiled


def with_data_dir(plant: Plant, data_dir: Path | None) -> Plant:
    """``plant`` with ``settings.data_dir`` set to ``data_dir`` (unchanged when None)."""
    if data_dir is None:
        return plant
    settings = plant.settings.model_copy(update={"data_dir": str(data_dir)})
    return plant.model_copy(update={"settings": settings})


def parse_time(text: str, name: str) -> int:
    """An ISO 8601 time with a UTC offset (``Z`` accepted) as UTC microseconds."""
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 time", param_hint=name) from None
    if dt.tzinfo is None:
        raise typer.BadParameter("give a UTC offset (e.g. 2024-05-01T08:00:00Z)", param_hint=name)
    return from_datetime(dt)


def parse_window(start: str | None, end: str | None) -> tuple[int | None, int | None]:
    """``--start`` (inclusive) and ``--end`` (exclusive); either may be open."""
    lo = None if start is None else parse_time(start, "--start")
    hi = None if end is None else parse_time(end, "--end")
    if lo is not None and hi is not None and hi <= lo:
        raise typer.BadParameter("must be later than --start", param_hint="--end")
    return lo, hi
