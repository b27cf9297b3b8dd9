"""Retention and partition upkeep: drop whole old partitions/chunks, create future ones.

A partition or chunk goes only when all of it is older than the cutoff (now minus the
retention period), so retention never deletes row by row and never touches the partition
the cutoff falls in. Raw readings and minute rollups have separate periods (DESIGN.md:
400 days and 5 years). Runs as a periodic task; ``plan`` is the dry run of ``apply``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from psycopg import sql

from core.clock import Clock
from core.errors import StorageError
from core.settings import StorageSettings
from storage.db import Backend, Conn, autocommit, translate_errors
from storage.migrate import require_current_schema
from storage.partitions import DAY_US, TimeSlice, ensure_partitions, list_slices

__all__ = ["RetentionPolicy", "apply_retention", "maintain", "plan_retention", "retention_loop"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    raw_days: int = 400
    rollup_days: int = 5 * 366

    @classmethod
    def from_settings(cls, s: StorageSettings) -> RetentionPolicy:
        return cls(raw_days=s.raw_retention_days, rollup_days=s.rollup_retention_days)

    def cutoffs(self, now_us: int) -> dict[str, int]:
        """Table -> time before which whole slices may go."""
        return {"reading": now_us - self.raw_days * DAY_US, "reading_1m": now_us - self.rollup_days * DAY_US}


async def plan_retention(
    conn: Conn, backend: Backend, *, now_us: int, policy: RetentionPolicy
) -> list[TimeSlice]:
    """The partitions/chunks that apply_retention would drop now, oldest first."""
    out: list[TimeSlice] = []
    for table, cutoff in policy.cutoffs(now_us).items():
        out += [s for s in await list_slices(conn, backend, table) if s.end_us <= cutoff]
    return out


async def apply_retention(
    conn: Conn, backend: Backend, *, now_us: int, policy: RetentionPolicy
) -> list[TimeSlice]:
    """Drop what plan_retention lists; return it. ``conn`` must not be inside a transaction."""
    async with autocommit(conn):
        return await _apply(conn, backend, await plan_retention(conn, backend, now_us=now_us, policy=policy))


async def _apply(conn: Conn, backend: Backend, doomed: list[TimeSlice]) -> list[TimeSlice]:
    with translate_errors("apply retention"):
        for s in doomed:
            # One short transaction per slice: dropping takes a brief exclusive lock on the
            # parent, which must not be held across the whole run.
            async with conn.transaction():
                if backend is Backend.TIMESCALEDB:
                    await conn.execute("SELECT drop_chunks(%s, older_than => to_timestamp(%s / 1e6))",
                                       [s.table, s.end_us])  # fmt: skip
                else:
                    name = sql.Identifier(s.schema, s.name) if s.schema else sql.Identifier(s.name)
                    await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
            log.info("retention: dropped %s (%s)", s.name, s.table)
    return doomed


async def maintain(
    conn: Conn, *, now_us: int, settings: StorageSettings, dry_run: bool = False
) -> tuple[list[TimeSlice], list[str]]:
    """One upkeep pass: retention, then partitions for yesterday .. today + ahead.

    Returns (slices dropped or, on a dry run, to be dropped; partitions created).
    """
    async with autocommit(conn):
        backend = await require_current_schema(conn)
        policy = RetentionPolicy.from_settings(settings)
        if dry_run:
            return await plan_retention(conn, backend, now_us=now_us, policy=policy), []
        dropped = await apply_retention(conn, backend, now_us=now_us, policy=policy)
        created: list[str] = []
        if backend is Backend.POSTGRES:
            today = now_us // DAY_US
            created = await ensure_partitions(
                conn, range(today - 1, today + settings.partitions_ahead_days + 1)
            )
        return dropped, created


async def retention_loop(
    connect: Callable[[], Awaitable[Conn]], settings: StorageSettings, clock: Clock
) -> None:
    """Run :func:`maintain` every ``retention_interval_s`` until cancelled.

    Failures are logged on the transition (not on every retry) and never end the loop:
    a missed pass only means partitions are dropped or created an interval later.
    """
    failing = False
    while True:
        try:
            conn = await connect()
            async with conn:
                dropped, created = await maintain(conn, now_us=clock.now_us(), settings=settings)
            if dropped or created:
                log.info("retention: dropped %d slices, created %d partitions", len(dropped), len(created))
            if failing:
                log.warning("retention: database reachable again")
            failing = False
        except Exception as exc:  # never end the loop: an unexpected error is retried too
            if not failing:
                log.warning(
                    "retention: pass failed (%s: %s); retrying every %.0f s",
                    type(exc).__name__, exc, settings.retention_interval_s,
                    exc_info=not isinstance(exc, StorageError),
                )  # fmt: skip
            failing = True
        await clock.sleep(settings.retention_interval_s)
