"""Retention drops exactly the partitions/chunks wholly older than the cutoff; upkeep creates ahead."""

from __future__ import annotations

import asyncio
import contextlib

import psycopg

from core.clock import FakeClock
from core.errors import DatabaseUnavailable
from core.settings import StorageSettings
from storage.db import Backend, Conn
from storage.migrate import require_current_schema
from storage.partitions import DAY_US, list_slices
from storage.retention import RetentionPolicy, apply_retention, maintain, plan_retention, retention_loop
from storage.writer import BatchWriter
from tests.storage.helpers import DB_IDS, GOOD, T0, batch

NOW = T0 - T0 % DAY_US + 12 * 3600 * 1_000_000  # noon UTC: the cutoff falls mid-day


async def fill(dsn: str, days_back: list[int]) -> None:
    writer = await BatchWriter.connect(dsn, DB_IDS)
    try:
        await writer.write(batch([(0, NOW - d * DAY_US, float(d), GOOD) for d in days_back]))
    finally:
        await writer.close()


async def days_stored(conn: Conn, table: str) -> list[int]:
    column = "time" if table == "reading" else "last_time"
    cur = await conn.execute(
        f"SELECT (({NOW} - extract(epoch FROM {column}) * 1e6) / {DAY_US})::int FROM {table}"
    )
    return sorted(int(r[0]) for r in await cur.fetchall())


async def test_drops_exactly_the_wholly_old_slices(backend: str, conn: Conn) -> None:
    days_back = [500, 470, 403, 401, 400, 399, 30, 1, 0]
    await fill(backend, days_back)
    kind = await require_current_schema(conn)
    policy = RetentionPolicy(raw_days=400, rollup_days=450)
    cutoffs = policy.cutoffs(NOW)
    before = {t: await list_slices(conn, kind, t) for t in ("reading", "reading_1m")}
    expected = sorted(s for t, slices in before.items() for s in slices if s.end_us <= cutoffs[t])
    assert {s.table for s in expected} == {"reading", "reading_1m"}

    planned = await plan_retention(conn, kind, now_us=NOW, policy=policy)
    assert sorted(planned) == expected
    assert sorted(await apply_retention(conn, kind, now_us=NOW, policy=policy)) == expected

    for table, slices in before.items():
        assert await list_slices(conn, kind, table) == [s for s in slices if s not in expected]
    # Day 400 sits in the slice the cutoff falls in (noon, 400 days ago): it stays.
    assert await days_stored(conn, "reading") == [0, 1, 30, 399, 400]
    oldest_rollup = min(s.start_us for s in await list_slices(conn, kind, "reading_1m"))
    assert all(NOW - d * DAY_US >= oldest_rollup for d in await days_stored(conn, "reading_1m"))
    rollup_days = await days_stored(conn, "reading_1m")
    assert 500 not in rollup_days and 403 in rollup_days  # 500: over a month past the cutoff
    assert await plan_retention(conn, kind, now_us=NOW, policy=policy) == []


async def test_dry_run_changes_nothing_and_upkeep_creates_ahead(backend: str, conn: Conn) -> None:
    await fill(backend, [420, 0])
    settings = StorageSettings(raw_retention_days=400, partitions_ahead_days=3)
    would, created = await maintain(conn, now_us=NOW, settings=settings, dry_run=True)
    assert [s.table for s in would] == ["reading"] and created == []
    assert await days_stored(conn, "reading") == [0, 420]

    dropped, created = await maintain(conn, now_us=NOW, settings=settings)
    assert dropped == would
    assert await days_stored(conn, "reading") == [0]
    kind = await require_current_schema(conn)
    if kind is Backend.POSTGRES:
        today = NOW // DAY_US
        days = {s.start_us // DAY_US for s in await list_slices(conn, kind, "reading")}
        assert set(range(today - 1, today + 4)) <= days
        assert len(created) >= 3
        again = await maintain(conn, now_us=NOW, settings=settings)
        assert again == ([], [])


async def test_writer_recreates_a_partition_retention_dropped(backend: str) -> None:
    writer = await BatchWriter.connect(backend, DB_IDS)
    try:
        await writer.write(batch([(0, NOW - 500 * DAY_US, 1.0, GOOD)]))
        async with await psycopg.AsyncConnection.connect(backend, autocommit=True) as conn:
            kind = await require_current_schema(conn)
            await apply_retention(conn, kind, now_us=NOW, policy=RetentionPolicy())
        late = await writer.write(batch([(0, NOW - 500 * DAY_US + 1, 2.0, GOOD)]))  # cached day, now gone
    finally:
        await writer.close()
    assert late.inserted == 1


async def test_retention_loop_survives_failures_and_keeps_running(backend: str, conn: Conn) -> None:
    await fill(backend, [500, 0])
    attempts = 0

    async def flaky_connect() -> Conn:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise DatabaseUnavailable("first pass: database not up yet")
        return await psycopg.AsyncConnection.connect(backend)

    clock = FakeClock(NOW)
    task = asyncio.create_task(retention_loop(flaky_connect, StorageSettings(retention_interval_s=60), clock))
    try:
        async with asyncio.timeout(20):
            while 500 in await days_stored(conn, "reading") or attempts < 3:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert await days_stored(conn, "reading") == [0]
    assert clock.monotonic() >= 60 * (attempts - 1)  # it slept its interval between passes


async def test_retention_loop_survives_an_unexpected_error(backend: str, conn: Conn) -> None:
    await fill(backend, [500, 0])
    attempts = 0

    async def buggy_connect() -> Conn:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("not a StorageError")
        return await psycopg.AsyncConnection.connect(backend)

    task = asyncio.create_task(
        retention_loop(buggy_connect, StorageSettings(retention_interval_s=60), FakeClock(NOW))
    )
    try:
        async with asyncio.timeout(20):
            while 500 in await days_stored(conn, "reading"):
                assert not task.done(), task.exception()
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert attempts >= 2
