"""Real outages: the writer reaches the database through a proxy the test cuts and restores."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from core.batch import ReadingBatch
from storage.db import Conn
from storage.spool import Spool
from storage.spool_format import encode_record
from storage.spooling import SpoolingWriter
from storage.writer import BatchWriter
from tests.storage.helpers import DB_IDS, GOOD, N_TAGS, T0, S
from tests.support.proxy import TcpProxy

TAGS_PER_BATCH = 16


def numbered_batch(i: int) -> ReadingBatch:
    """Batch i: TAGS_PER_BATCH tags at second i; value encodes i so rows are traceable."""
    tags = (np.arange(TAGS_PER_BATCH) + i) % N_TAGS
    return ReadingBatch.from_arrays(
        tags,
        np.full(TAGS_PER_BATCH, T0 + i * S),
        np.full(TAGS_PER_BATCH, float(i)),
        np.full(TAGS_PER_BATCH, GOOD),
    )


async def proxied(dsn: str) -> tuple[TcpProxy, str]:
    info = conninfo_to_dict(dsn)
    proxy = TcpProxy(int(info.get("port") or 5432), target_host=str(info.get("host", "127.0.0.1")))
    port = await proxy.start()
    return proxy, make_conninfo(dsn, host="127.0.0.1", port=port)


def spooling_writer(dsn: str, spool: Spool) -> SpoolingWriter:
    async def connect() -> BatchWriter:
        return await BatchWriter.connect(dsn, DB_IDS, connect_timeout_s=2)

    return SpoolingWriter(
        connect, DB_IDS, spool, backoff_initial_s=0.05, backoff_max_s=0.4, write_timeout_s=10
    )


async def stored_batches(conn: Conn) -> dict[int, int]:
    """Batch number -> rows stored for it; also proves no (tag, time) is stored twice."""
    cur = await conn.execute(
        "SELECT value::int, count(*), count(DISTINCT (tag_id, time)) FROM reading GROUP BY 1"
    )
    rows = await cur.fetchall()
    assert all(n == distinct for _, n, distinct in rows)
    return {int(i): int(n) for i, n, _ in rows}


async def wait_connected(writer: SpoolingWriter) -> None:
    async with asyncio.timeout(10):
        while not writer.connected:
            await asyncio.sleep(0.01)


async def test_cut_connection_loses_nothing_and_duplicates_nothing(
    backend: str, conn: Conn, tmp_path: Path
) -> None:
    proxy, dsn = await proxied(backend)
    spool = Spool(tmp_path, max_bytes=64 << 20, segment_bytes=16 << 10)
    n_batches, cut_at, restore_at = 120, 30, 90
    try:
        async with spooling_writer(dsn, spool) as writer:
            await wait_connected(writer)
            for i in range(n_batches):
                await writer.write(numbered_batch(i))
                if i == cut_at:
                    await proxy.cut()
                if i == restore_at:
                    await proxy.restore()
                # 40 ms apart: the proxy stays cut for 60 batches, about 2.5 s of wall time.
                await asyncio.sleep(0.04)
            async with asyncio.timeout(30):
                await writer.wait_drained()
            metrics = writer.metrics()
    finally:
        await proxy.stop()
    assert await stored_batches(conn) == dict.fromkeys(range(n_batches), TAGS_PER_BATCH)
    assert metrics["spooled_batches"] >= restore_at - cut_at - 1
    assert metrics["drained_batches"] == metrics["spooled_batches"]
    assert metrics["dropped_batches"] == metrics["dropped_rows"] == 0
    cur = await conn.execute("SELECT sum(count)::int FROM reading_1m")
    assert await cur.fetchone() == (n_batches * TAGS_PER_BATCH,)
    assert proxy.connections >= 2  # it really reconnected through the proxy


async def test_tiny_spool_drops_oldest_and_counts_them(backend: str, conn: Conn, tmp_path: Path) -> None:
    record = len(encode_record(numbered_batch(0)))
    # Room for 6 records in segments of 2: spooling 20 batches must drop the oldest 14.
    spool = Spool(tmp_path, max_bytes=6 * record + 3 * 8, segment_bytes=2 * record + 8)
    proxy, dsn = await proxied(backend)
    n_batches = 20
    try:
        async with spooling_writer(dsn, spool) as writer:
            await wait_connected(writer)
            await proxy.cut()
            for i in range(n_batches):
                await writer.write(numbered_batch(i))
            await writer.flush()
            dropped = writer.metrics()["dropped_batches"], writer.metrics()["dropped_rows"]
            await proxy.restore()
            async with asyncio.timeout(30):
                await writer.wait_drained()
    finally:
        await proxy.stop()
    kept = await stored_batches(conn)
    assert sorted(kept) == list(range(n_batches - len(kept), n_batches))  # newest survive, in full
    assert dropped == (n_batches - len(kept), (n_batches - len(kept)) * TAGS_PER_BATCH)
    assert dropped[0] == 14


async def test_database_down_at_start_then_up(backend: str, tmp_path: Path) -> None:
    proxy, dsn = await proxied(backend)
    await proxy.cut()
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    try:
        async with spooling_writer(dsn, spool) as writer:
            for i in range(5):
                await writer.write(numbered_batch(i))
            await writer.flush()
            assert writer.metrics()["spooled_batches"] == 5 and not writer.connected
            await proxy.restore()
            async with asyncio.timeout(30):
                await writer.wait_drained()
    finally:
        await proxy.stop()
    async with await psycopg.AsyncConnection.connect(backend) as conn:
        assert len(await stored_batches(conn)) == 5
