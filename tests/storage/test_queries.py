"""History and latest reads: raw rows, buckets from raw and from reading_1m agree, latest."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg import sql

from core.batch import ReadingBatch
from core.clock import to_datetime
from core.config import load_plant
from core.quality import Quality
from core.registry import TagRegistry
from storage.db import Conn
from storage.migrate import require_current_schema
from storage.queries import bucket_sql, history, latest, raw_history
from storage.registry_sync import sync_registry
from storage.writer import BatchWriter
from tests.storage.helpers import DB_IDS, GOOD, T0, S, batch

MIN = 60 * S
START = T0 - T0 % (3600 * S)  # an hour boundary


def sample() -> ReadingBatch:
    """Two tags, one reading every 7 s for 20 minutes; every 5th BAD, one NaN."""
    ts = START + np.arange(0, 20 * MIN, 7 * S)
    n = len(ts)
    quality = np.where(np.arange(n) % 5 == 0, int(Quality.BAD), GOOD)
    value = np.sin(np.arange(n) / 10.0) * 100
    value[3] = np.nan
    return ReadingBatch.from_arrays(
        np.repeat([0, 1], n),
        np.concatenate([ts, ts]),
        np.concatenate([value, value * 2]),
        np.concatenate([quality, quality]),
    )


@pytest.fixture
async def filled(backend: str) -> str:
    writer = await BatchWriter.connect(backend, DB_IDS)
    try:
        data = sample()
        for part in np.array_split(np.arange(len(data)), 7):  # minutes split across batches
            await writer.write(data.select(part))
    finally:
        await writer.close()
    return backend


async def test_raw_history_returns_what_was_written(filled: str, conn: Conn) -> None:
    h = await history(conn, [1, 2], START, START + 20 * MIN)
    data = sample()
    order = np.lexsort((data.ts, data.tag))
    assert h.source == "reading"
    np.testing.assert_array_equal(h.tag_id, DB_IDS[data.tag[order]])
    np.testing.assert_array_equal(h.time, data.ts[order])
    np.testing.assert_array_equal(h.last, data.value[order])
    usable = (h.quality & 0x40) != 0
    np.testing.assert_array_equal(h.avg[usable], h.last[usable])
    assert np.isnan(h.avg[~usable]).all() and h.count.sum() == usable.sum()


@pytest.mark.parametrize("bucket_s", [60, 300, 3600])
async def test_rollup_buckets_equal_raw_buckets(filled: str, conn: Conn, bucket_s: int) -> None:
    start, end = START + 90 * S, START + 13 * MIN  # deliberately unaligned
    fast = await history(conn, [1, 2], start, end, bucket_s)
    slow = await history(conn, [1, 2], start, end, bucket_s, source="raw")
    assert (fast.source, slow.source) == ("reading_1m", "reading")
    for field in ("tag_id", "time", "count", "bad_count", "quality", "min", "max", "last"):
        np.testing.assert_array_equal(getattr(fast, field), getattr(slow, field), err_msg=field)
    np.testing.assert_allclose(fast.avg, slow.avg, rtol=1e-12)
    assert fast.time[0] == START + (0 if bucket_s > 60 else MIN)  # widened to whole buckets


async def test_odd_buckets_come_from_raw_rows(filled: str, conn: Conn) -> None:
    h = await history(conn, [2], START, START + 20 * MIN, 90)
    assert h.source == "reading"
    assert np.all(np.diff(h.time) == 90 * S) and len(h) == 14  # 20 min in 90 s buckets
    assert h.count.sum() + h.bad_count.sum() == len(sample()) // 2
    with pytest.raises(ValueError):
        await history(conn, [2], START, START + MIN, 90, source="rollup")


async def test_latest(filled: str, conn: Conn) -> None:
    data = sample()
    got = await latest(conn, [2, 1, 3])
    np.testing.assert_array_equal(got.tag_id, [1, 2])
    last = data.ts.max()
    np.testing.assert_array_equal(got.time, [last, last])
    assert got.value[1] == 2 * got.value[0]
    empty = await latest(conn, [3])
    assert len(empty.tag_id) == 0 and empty.value.dtype == np.float64


async def test_bucket_helper_agrees_across_backends(conn: Conn) -> None:
    backend = await require_current_schema(conn)
    beijing_midnight = -8 * 3600 * S  # 1970-01-01 00:00 +08:00
    ts = T0 + 5 * 3600 * S
    query = sql.SQL("SELECT (extract(epoch FROM {}) * 1e6)::int8").format(
        bucket_sql(backend, 86_400 * S, sql.Literal(to_datetime(ts)), beijing_midnight)
    )
    cur = await conn.execute(query)
    day_start = beijing_midnight + (ts - beijing_midnight) // (86_400 * S) * 86_400 * S
    assert await cur.fetchone() == (day_start,)


async def test_raw_history_adapter_for_the_cli(backend: str) -> None:
    plant = load_plant(Path(__file__).parent / "data" / "plant.yaml")
    async with await psycopg.AsyncConnection.connect(backend, autocommit=True) as conn:
        ids = (await sync_registry(conn, plant, now_us=T0)).tag_ids
    registry = TagRegistry.from_plant(plant).with_db_ids(ids)
    writer = await BatchWriter.connect(backend, registry.db_id)
    try:
        await writer.write(batch([(1, T0 + S, 2.0, GOOD), (0, T0, 1.0, GOOD), (2, T0 + 2 * S, 3.0, GOOD)]))
    finally:
        await writer.close()
    rows = await asyncio.to_thread(raw_history, plant, ["SY.V1.LT1", "SY.V1.PT1"], None, None, dsn=backend)
    assert rows == [(T0, "SY.V1.LT1", 1.0, GOOD), (T0 + S, "SY.V1.PT1", 2.0, GOOD)]
    everything = await asyncio.to_thread(raw_history, plant, None, T0 + S, T0 + 3 * S, dsn=backend)
    assert [key for _, key, _, _ in everything] == ["SY.V1.PT1", "SY.V1.TT1"]
