"""``hazardwatch db upgrade | sync | retention | status``: the historian on the command line.

Mounted by hazardwatch.cli as ``app.add_typer(db_app, name="db")``. The database is
``--dsn``, else ``$DATABASE_URL``. Exit codes follow hazardwatch.cli: 0 success, 2 invalid
configuration or usage, 1 any other failure (database unreachable, schema mismatch).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from core.clock import SystemClock, to_datetime
from core.config import load_plant
from core.errors import ConfigError, StorageError
from core.plant import Plant
from core.redact import redact
from core.settings import StorageSettings
from hazardwatch.cli_logging import LOG_FORMAT, LOG_LEVEL_WARNING, start_logging
from hazardwatch.logs import LogFormat
from storage.db import Conn, connect
from storage.migrate import latest_version, require_current_schema, schema_state, upgrade
from storage.partitions import DAY_US, TimeSlice, ensure_partitions, list_slices
from storage.registry_sync import sync_registry
from storage.retention import maintain

__all__ = ["db_app"]

db_app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
out = Console()
err = Console(stderr=True)
T = TypeVar("T")

DSN_OPTION = typer.Option(None, "--dsn", help="PostgreSQL URL; default $DATABASE_URL.", show_default=False)


def _dsn(dsn: str | None) -> str:
    resolved = dsn or os.environ.get("DATABASE_URL")
    if not resolved:
        err.print(
            "no database given: pass --dsn or set DATABASE_URL (e.g. postgresql://user@host/db)",
            soft_wrap=True,
        )
        raise typer.Exit(2)
    return resolved


def _plant(config: Path) -> Plant:
    try:
        plant: Plant = load_plant(config)
    except ConfigError as exc:
        for issue in exc.issues:
            err.print(str(issue), markup=False, highlight=False, soft_wrap=True)
        err.print(f"{len(exc.issues)} error(s) in {config}", style="bold red")
        raise typer.Exit(2) from None
    return plant


def _run(dsn: str, job: Callable[[Conn], Awaitable[T]]) -> T:
    """Run ``job`` on one autocommit connection; storage errors exit 1 with their message."""

    async def main() -> T:
        async with await connect(dsn, autocommit=True, application_name="hazardwatch-cli") as conn:
            return await job(conn)

    try:
        return asyncio.run(main())
    except StorageError as exc:
        text = redact(f"{type(exc).__name__}: {exc}")  # storage redacts too: never print a password
        err.print(text, markup=False, highlight=False, style="red", soft_wrap=True)
        raise typer.Exit(1) from None


def _day(us: int) -> str:
    return to_datetime(us).strftime("%Y-%m-%d %H:%M")


@db_app.command("upgrade")
def upgrade_cmd(
    dsn: str | None = DSN_OPTION, log_level: str = LOG_LEVEL_WARNING, log_format: LogFormat = LOG_FORMAT
) -> None:
    """Apply pending schema migrations (safe to re-run) and create partitions ahead."""
    start_logging(log_level, log_format)

    async def job(conn: Conn) -> tuple[list[Any], str, list[str]]:
        applied = await upgrade(conn)
        backend = await require_current_schema(conn)
        created: list[str] = []
        if backend.value == "postgres":
            today = SystemClock().now_us() // DAY_US
            created = await ensure_partitions(
                conn, range(today - 1, today + StorageSettings().partitions_ahead_days + 1)
            )
        return applied, backend.value, created

    applied, backend, created = _run(_dsn(dsn), job)
    for m in applied:
        out.print(f"applied {m.version:04d}_{m.name}")
    out.print(f"schema at version {latest_version()} ({backend}); {len(applied)} migration(s) applied")
    if created:
        out.print(f"created {len(created)} partition(s)")


@db_app.command("sync")
def sync_cmd(
    config: Path = typer.Argument(..., help="Plant YAML, or a folder holding plant.yaml."),
    dsn: str | None = DSN_OPTION,
    log_level: str = LOG_LEVEL_WARNING,
    log_format: LogFormat = LOG_FORMAT,
) -> None:
    """Mirror the plant's enterprises, hazard sources, units and tags into the registry tables."""
    start_logging(log_level, log_format)
    plant = _plant(config)

    async def job(conn: Conn) -> Any:
        await require_current_schema(conn)
        return await sync_registry(conn, plant, now_us=SystemClock().now_us())

    report = _run(_dsn(dsn), job)
    table = Table(show_edge=False)
    for col in ("table", "added", "updated", "retired", "revived"):
        table.add_column(col, justify="left" if col == "table" else "right")
    for name, c in report.counts.items():
        table.add_row(name, str(c.added), str(c.updated), str(c.retired), str(c.revived))
    out.print(table)
    out.print(f"{len(report.tag_ids)} active tags")


@db_app.command("retention")
def retention_cmd(
    dsn: str | None = DSN_OPTION,
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be dropped."),
    config: Path | None = typer.Option(
        None, "--config", help="Take retention periods from this plant config."
    ),
    log_level: str = LOG_LEVEL_WARNING,
    log_format: LogFormat = LOG_FORMAT,
) -> None:
    """Drop partitions/chunks older than the retention periods; create future partitions."""
    start_logging(log_level, log_format)
    settings = _plant(config).settings.storage if config else StorageSettings()
    now_us = SystemClock().now_us()

    async def job(conn: Conn) -> tuple[list[TimeSlice], list[str]]:
        return await maintain(conn, now_us=now_us, settings=settings, dry_run=dry_run)

    slices, created = _run(_dsn(dsn), job)
    out.print(
        f"raw readings kept {settings.raw_retention_days} days, rollups {settings.rollup_retention_days} days"
    )
    table = Table(show_edge=False)
    for col in ("table", "partition/chunk", "from (UTC)", "to (UTC)"):
        table.add_column(col)
    for s in slices:
        table.add_row(s.table, s.name, _day(s.start_us), _day(s.end_us))
    if slices:
        out.print(table)
    verb = "would drop" if dry_run else "dropped"
    out.print(
        f"{verb} {len(slices)} partition(s)/chunk(s)" + (f"; created {len(created)}" if created else "")
    )


@db_app.command("status")
def status_cmd(
    dsn: str | None = DSN_OPTION, log_level: str = LOG_LEVEL_WARNING, log_format: LogFormat = LOG_FORMAT
) -> None:
    """Schema version and backend, registry size, stored time range per table."""
    start_logging(log_level, log_format)

    async def job(conn: Conn) -> dict[str, Any]:
        state = await schema_state(conn)
        info: dict[str, Any] = {"version": state.version, "backend": state.backend}
        if state.version != latest_version() or state.backend is None:
            return info
        cur = await conn.execute(
            "SELECT count(*) FILTER (WHERE retired_at IS NULL), count(*) FILTER (WHERE retired_at IS NOT NULL) "
            "FROM tag"
        )
        info["tags"] = await cur.fetchone()
        cur = await conn.execute("SELECT max(time) FROM tag_latest")
        info["newest"] = (await cur.fetchone() or (None,))[0]
        info["slices"] = {t: await list_slices(conn, state.backend, t) for t in ("reading", "reading_1m")}
        return info

    info = _run(_dsn(dsn), job)
    code = latest_version()
    backend = info["backend"].value if info["backend"] else "-"
    out.print(f"schema version {info['version']} (code {code}), backend {backend}")
    if "tags" not in info:
        err.print("schema is not current: run `hazardwatch db upgrade`", style="yellow")
        raise typer.Exit(1)
    out.print(
        f"tags: {info['tags'][0]} active, {info['tags'][1]} retired; newest reading {info['newest'] or '-'}"
    )
    for table, slices in info["slices"].items():
        span = f"{_day(slices[0].start_us)} .. {_day(slices[-1].end_us)}" if slices else "-"
        out.print(f"{table}: {len(slices)} partition(s)/chunk(s), {span}")
