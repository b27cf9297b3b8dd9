"""The ``--log-level`` and ``--log-format`` options every command that logs shares, and their setup.

Logging starts when the command starts; the app's callback registers ``stop_logging`` on
close, so everything a command logged is written before the command returns (in-process
runs and tests too), and at exit otherwise.
"""

from __future__ import annotations

import typer

from hazardwatch.logs import LogFormat, parse_level, setup, shutdown

__all__ = ["LOG_FORMAT", "LOG_LEVEL_INFO", "LOG_LEVEL_WARNING", "start_logging", "stop_logging"]

_LEVEL_HELP = "DEBUG, INFO, WARNING, ERROR or CRITICAL."
LOG_LEVEL_INFO = typer.Option("INFO", "--log-level", help=_LEVEL_HELP)
LOG_LEVEL_WARNING = typer.Option("WARNING", "--log-level", help=_LEVEL_HELP)
LOG_FORMAT = typer.Option(
    LogFormat.AUTO,
    "--log-format",
    case_sensitive=False,
    help="auto: rich on a terminal, one plain line per record otherwise (files, journald); "
    "rich; plain; json: one object per line (ts, level, logger, message, exception).",
)


def start_logging(level: str, fmt: LogFormat) -> None:
    try:
        parse_level(level)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--log-level") from None
    setup(level, fmt)


def stop_logging() -> None:
    shutdown()
