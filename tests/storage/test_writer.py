"""BatchWriter against real PostgreSQL and TimescaleDB: round trip, idempotence, latest, NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.errors import BatchError, DatabaseUnavailable
from core.quality import Quality
from storage.db import Conn
from storage.writer import BatchWriter, to_db_ids
from tests.storage.helpers import DB_IDS, GOOD, T0, S, batch, latest, stored


async def test_round_trip(backend: str, conn: Conn) -> None:
    rows = [(i % 5, T0 + (i // 5) * S + 17, i * 1.5, GOOD) for i in range(50)]
    writer = await BatchWriter.connect(backend, DB_IDS)
    try:
        result = await writer.write(batch(rows))
    finally:
        await writer.close()
    assert (result.rows, result.inserted, result.slow_path) == (50, 50, False)
    assert await stored(conn) == sorted((DB_IDS[t], ts, v, q) for t, ts, v, q in rows)


async def test_duplicate_batch_inserts_nothing_new(backend: str, conn: Conn) -> None:
    first = batch([(0, T0, 1.0, GOOD), (1, T0, 2.0, GOOD)])
    overlapping = batch([(0, T0, 99.0, GOOD), (1, T0 + S, 3.0, GOOD), (1, T0 + S, 4.0, GOOD)])
    writer = await BatchWriter.connect(backend, DB_IDS)
    try:
        await writer.write(first)
        again = await writer.write(first)
        mixed = await writer.write(overlapping)
    finally:
        await writer.close()
    assert (again.inserted, again.slow_path) == (0, True)
    assert (mixed.rows, mixed.inserted) == (3, 1)  # the in-batch duplicate counts once
    assert await stored(conn) == [(1, T0, 1.0, GOOD), (2, T0, 2.0, GOOD), (2, T0 + S, 3.0, GOOD)]
    cur = await conn.execute("SELECT tag_id, count, sum FROM reading_1m ORDER BY 1")
    assert await cur.fetchall() == [(1, 1, 1.0), (2, 2, 5.0)]


async def test_out_of_order_batch_never_regresses_latest(backend: str, conn: Conn) -> None:
    writer = await BatchWriter.connect(backend, DB_IDS)
    try:
        await writer.write(batch([(0, T0 + 10 * S, 10.0, GOOD), (1, T0, 1.0, GOOD)]))
        await writer.write(batch([(0, T0 + 5 * S, 5.0, GOOD), (1, T0 + 2 * S, 2.0, GOOD)]))
    finally:
        await writer.close()
    assert await latest(conn) == {1: (T0 + 10 * S, 10.0, GOOD), 2: (T0 + 2 * S, 2.0, GOOD)}


async def test_non_finite_values_are_stored_bad(backend: str, conn: Conn) -> None:
    rows = [(0, T0, math.nan, GOOD), (0, T0 + S, math.inf, GOOD), (0, T0 + 2 * S, 7.0, GOOD)]
    writer = await BatchWriter.connect(backend, DB_IDS)
    try:
        await writer.write(batch(rows))
    finally:
        await writer.close()
    got = await stored(conn)
    assert [q for *_, q in got] == [0, 0, GOOD]
    assert math.isnan(got[0][2]) and got[1][2] == math.inf
    cur = await conn.execute("SELECT min, max, sum, count, bad_count, last_value FROM reading_1m")
    assert await cur.fetchall() == [(7.0, 7.0, 7.0, 1, 2, 7.0)]


async def test_rollup_merges_minute_split_over_batches(backend: str, conn: Conn) -> None:
    minute = T0 - T0 % (60 * S)
    writer = await BatchWriter.connect(backend, DB_IDS)
    try:
        await writer.write(batch([(0, minute + 10 * S, 4.0, GOOD), (0, minute + 50 * S, 1.0, GOOD)]))
        await writer.write(
            batch([(0, minute + 30 * S, 9.0, GOOD), (0, minute + 5 * S, -2.0, int(Quality.BAD))])
        )
    finally:
        await writer.close()
    cur = await conn.execute("SELECT min, max, sum, count, bad_count, last_value FROM reading_1m")
    assert await cur.fetchall() == [(1.0, 9.0, 14.0, 3, 1, 1.0)]


async def test_partitions_are_created_for_any_day(backend: str, conn: Conn) -> None:
    days = [T0 - 400 * 86_400 * S, T0, T0 + 30 * 86_400 * S]
    writer = await BatchWriter.connect(backend, DB_IDS)
    try:
        await writer.write(batch([(0, ts, 1.0, GOOD) for ts in days]))
    finally:
        await writer.close()
    assert [ts for _, ts, _, _ in await stored(conn)] == days


async def test_unknown_tag_index_is_rejected() -> None:
    with pytest.raises(BatchError):
        to_db_ids(batch([(len(DB_IDS), T0, 1.0, GOOD)]), DB_IDS)
    with pytest.raises(BatchError):
        to_db_ids(batch([(0, T0, 1.0, GOOD)]), np.zeros(1, np.int32))


async def test_unreachable_database_raises_database_unavailable() -> None:
    with pytest.raises(DatabaseUnavailable):
        await BatchWriter.connect("postgresql://postgres@127.0.0.1:1/postgres", DB_IDS, connect_timeout_s=1)
