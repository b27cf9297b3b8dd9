"""SpoolingWriter without outages: group commit, overflow to disk, backoff, clean close."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from core.batch import ReadingBatch
from core.clock import FakeClock
from storage.db import Conn
from storage.spool import Spool
from storage.spooling import SpoolingWriter
from storage.writer import BatchWriter
from tests.storage.helpers import DB_IDS, GOOD, N_TAGS, T0, S


def second(i: int) -> ReadingBatch:
    """All test tags at second i."""
    n = N_TAGS
    return ReadingBatch.from_arrays(
        np.arange(n), np.full(n, T0 + i * S), np.full(n, float(i)), np.full(n, GOOD)
    )


def make(
    dsn: str, tmp_path: Path, *, max_batch_rows: int = 200_000, max_buffer_rows: int = 10**6
) -> SpoolingWriter:
    async def connect() -> BatchWriter:
        return await BatchWriter.connect(dsn, DB_IDS)

    spool = Spool(tmp_path, max_bytes=1 << 24, segment_bytes=1 << 20)
    return SpoolingWriter(
        connect, DB_IDS, spool, backoff_initial_s=0.05, backoff_max_s=0.2,
        max_batch_rows=max_batch_rows, max_buffer_rows=max_buffer_rows,
    )  # fmt: skip


async def count(conn: Conn) -> int:
    cur = await conn.execute("SELECT count(*) FROM reading")
    row = await cur.fetchone()
    return int(row[0]) if row else -1


async def test_queued_batches_share_transactions(backend: str, conn: Conn, tmp_path: Path) -> None:
    async with make(backend, tmp_path, max_batch_rows=10 * N_TAGS) as writer:
        await writer.wait_drained()  # connected
        for i in range(50):  # no await in between: they all queue up
            await writer.write(second(i))
        await writer.flush()
        m = writer.metrics()
    assert await count(conn) == 50 * N_TAGS
    assert (m["written_batches"], m["transactions"], m["spooled_batches"]) == (50, 5, 0)


async def test_full_buffer_overflows_to_the_spool(backend: str, conn: Conn, tmp_path: Path) -> None:
    async with make(backend, tmp_path, max_buffer_rows=4 * N_TAGS) as writer:
        await writer.wait_drained()
        for i in range(10):
            await writer.write(second(i))
        assert writer.metrics()["spooled_batches"] == 6
        await writer.wait_drained()
        m = writer.metrics()
    assert await count(conn) == 10 * N_TAGS
    assert (m["written_batches"], m["drained_batches"], m["dropped_batches"]) == (4, 6, 0)


async def test_close_writes_what_is_buffered(backend: str, conn: Conn, tmp_path: Path) -> None:
    writer = make(backend, tmp_path)
    await writer.start()
    await writer.wait_drained()
    await writer.write(second(0))
    await writer.close()  # straight away: the batch is still in memory
    assert await count(conn) == N_TAGS
    assert not list(tmp_path.glob("*.seg"))


async def test_backoff_grows_with_jitter_and_is_capped(tmp_path: Path) -> None:
    async def never() -> BatchWriter:
        raise AssertionError("not called")

    writer = SpoolingWriter(
        never, DB_IDS, Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16),
        clock=FakeClock(), backoff_initial_s=1.0, backoff_max_s=8.0, rng=random.Random(7),
    )  # fmt: skip
    for attempt, full in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (10, 8.0)]:
        delays = [writer._backoff_delay(attempt) for _ in range(200)]
        assert full / 2 <= min(delays) and max(delays) <= full
        assert max(delays) - min(delays) > full / 4  # really jittered
