"""SpoolingWriter.wait_drained returns only once nothing is left to write: not while the last
batch is still in its transaction (the runtime's clean stop relies on it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import psycopg
import pytest

from core.batch import ReadingBatch
from storage.db import Conn
from storage.spool import Spool
from storage.spooling import SpoolingWriter
from storage.writer import BatchWriter
from tests.storage.helpers import DB_IDS, GOOD, N_TAGS, T0


async def scalar(conn: Conn, sql: str) -> int:
    row = await (await conn.execute(sql)).fetchone()
    return int(row[0]) if row else -1


async def test_wait_drained_waits_for_the_write_in_flight(backend: str, conn: Conn, tmp_path: Path) -> None:
    async def connect() -> BatchWriter:
        return await BatchWriter.connect(backend, DB_IDS)

    batch = ReadingBatch.from_arrays(
        np.arange(N_TAGS), np.full(N_TAGS, T0), np.ones(N_TAGS), np.full(N_TAGS, GOOD)
    )
    async with SpoolingWriter(
        connect, DB_IDS, Spool(tmp_path, max_bytes=1 << 24, segment_bytes=1 << 20)
    ) as writer:
        await writer.wait_drained()  # connected, nothing to write
        async with await psycopg.AsyncConnection.connect(backend) as locker:
            # Another session holds the table: the writer's transaction waits on the lock.
            await locker.execute("LOCK TABLE reading IN ACCESS EXCLUSIVE MODE")
            await writer.write(batch)
            async with asyncio.timeout(30):
                while not await scalar(conn, "SELECT count(*) FROM pg_locks WHERE NOT granted"):
                    await asyncio.sleep(0.02)
            with pytest.raises(TimeoutError):  # buffer and spool are empty, but the batch is in flight
                async with asyncio.timeout(0.5):
                    await writer.wait_drained()
        # The lock is gone with its session: the write completes, and only then is it drained.
        async with asyncio.timeout(30):
            await writer.wait_drained()
        assert await scalar(conn, "SELECT count(*) FROM reading") == N_TAGS
        assert writer.metrics()["pending_rows"] == 0
