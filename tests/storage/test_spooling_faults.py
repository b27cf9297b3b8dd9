"""SpoolingWriter against bad data and faults: nothing blocks good data, nothing is lost silently."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import numpy as np
import psycopg
import pytest

import storage.spool as spool_module
from core.batch import ReadingBatch
from core.errors import DatabaseUnavailable
from storage.db import Conn
from storage.spool import Spool
from storage.spooling import SpoolingWriter
from storage.writer import BatchWriter
from tests.storage.helpers import DB_IDS, GOOD, T0, S, batch, stored
from tests.storage.test_outage import numbered_batch, proxied, spooling_writer, stored_batches, wait_connected

OPC_UA_MAX = 253_402_300_799_000_000  # 9999-12-31 23:59:59 UTC, OPC UA's "infinity"


def make(dsn: str, spool_dir: Path) -> SpoolingWriter:
    return spooling_writer(dsn, Spool(spool_dir, max_bytes=1 << 24, segment_bytes=1 << 20))


async def test_out_of_range_timestamps_are_counted_not_written_and_stop_nothing(
    backend: str, conn: Conn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with make(backend, tmp_path) as writer:
        await wait_connected(writer)
        await writer.write(batch([(0, T0, 1.0, GOOD), (1, OPC_UA_MAX, 2.0, GOOD), (2, -(2**62), 3.0, GOOD)]))
        await writer.write(batch([(3, 2**62, 4.0, GOOD)]))  # nothing left to store
        async with asyncio.timeout(20):  # a dead task would never settle
            await writer.flush()
            for i in range(1, 4):
                await writer.write(batch([(0, T0 + i * S, float(i), GOOD)]))
            await writer.flush()
        assert writer._task is not None and not writer._task.done()
        m = writer.metrics()
    assert [(tag, v) for tag, _, v, _ in await stored(conn)] == [(1, 1.0), (1, 1.0), (1, 2.0), (1, 3.0)]
    assert (m["rejected_rows"], m["spooled_batches"], m["task_errors"]) == (3, 0, 0)
    assert caplog.text.count("before 1970-01-01") == 1 and caplog.text.count("at or after 2200-01-01") == 1


async def test_out_of_range_timestamps_spooled_by_an_older_version_are_counted(
    backend: str, conn: Conn, tmp_path: Path
) -> None:
    old = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    old.append(ReadingBatch.from_rows([(1, T0, 1.0, GOOD), (2, OPC_UA_MAX, 2.0, GOOD)]))  # database ids
    old.close()
    async with make(backend, tmp_path) as writer:
        async with asyncio.timeout(20):
            await writer.wait_drained()
        m = writer.metrics()
    assert [(tag, ts) for tag, ts, _, _ in await stored(conn)] == [(1, T0)]
    assert (m["rejected_rows"], m["drained_batches"], m["duplicate_rows"]) == (1, 1, 0)


async def refuse_values_above(conn: Conn, limit: float) -> None:
    """What an admin's constraint (or a trigger) does: the database refuses some data."""
    await conn.execute(f"ALTER TABLE reading ADD CONSTRAINT hw_test_sane CHECK (value < {limit})".encode())


async def test_refused_batch_is_quarantined_and_does_not_block_the_group(
    backend: str, conn: Conn, tmp_path: Path
) -> None:
    await refuse_values_above(conn, 1000)
    poison = batch([(5, T0, 1e6, GOOD)])
    async with make(backend, tmp_path) as writer:
        await wait_connected(writer)
        for i in range(10):  # no await in between: one group, poison in the middle
            await writer.write(poison if i == 4 else numbered_batch(i))
        await writer.flush()
        for i in range(10, 13):  # and history keeps flowing afterwards
            await writer.write(numbered_batch(i))
        await writer.flush()
        m = writer.metrics()
    assert sorted(await stored_batches(conn)) == [i for i in range(13) if i != 4]
    assert (m["quarantined_batches"], m["quarantined_rows"], m["pending_batches"]) == (1, 1, 0)
    assert (m["written_batches"], m["dropped_batches"]) == (12, 0)
    quarantine = Spool(tmp_path / "quarantine", max_bytes=1 << 20, segment_bytes=1 << 16)
    (record,) = quarantine.take(100)
    assert record.batch == ReadingBatch(np.array([6], np.int32), poison.ts, poison.value, poison.quality)


async def test_refused_spooled_batch_is_quarantined_and_the_backlog_drains(
    backend: str, conn: Conn, tmp_path: Path
) -> None:
    await refuse_values_above(conn, 1000)
    old = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    for i in range(6):  # spooled during an outage, with database ids
        b = numbered_batch(i) if i != 2 else batch([(5, T0, 1e6, GOOD)])
        old.append(ReadingBatch(DB_IDS.take(b.tag), b.ts, b.value, b.quality))
    old.close()
    async with make(backend, tmp_path) as writer:
        async with asyncio.timeout(20):
            await writer.wait_drained()
        m = writer.metrics()
    assert sorted(await stored_batches(conn)) == [0, 1, 3, 4, 5]
    assert (m["quarantined_batches"], m["drained_batches"], m["pending_batches"]) == (1, 5, 0)
    assert not list(tmp_path.glob("*.seg"))
    assert len(list((tmp_path / "quarantine").glob("*.seg"))) == 1


async def test_writer_task_survives_an_unexpected_error(backend: str, conn: Conn, tmp_path: Path) -> None:
    attempts = 0

    async def connect() -> BatchWriter:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("a bug in a connector")  # not a StorageError
        return await BatchWriter.connect(backend, DB_IDS)

    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    async with SpoolingWriter(connect, DB_IDS, spool, backoff_initial_s=0.05, backoff_max_s=0.1) as writer:
        await writer.write(numbered_batch(0))
        async with asyncio.timeout(20):
            await writer.wait_drained()
        m = writer.metrics()
    assert await stored_batches(conn) == {0: 16}
    assert m["task_errors"] == 1


async def test_close_spools_the_buffer_even_if_the_task_died(tmp_path: Path) -> None:
    async def unreachable() -> BatchWriter:
        raise DatabaseUnavailable("down")

    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    writer = SpoolingWriter(unreachable, DB_IDS, spool)

    async def died() -> None:
        raise OverflowError("date value out of range")

    writer._task = asyncio.create_task(died())
    await asyncio.sleep(0)
    writer._buffer.append(numbered_batch(0))  # what the task had buffered when it died
    writer._buffer_rows = 16
    await writer.close()  # does not raise
    assert Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16).pending_batches == 1


async def test_disk_full_while_spooling_is_counted_and_the_writer_goes_on(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, dsn = await proxied(backend)
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    real = spool_module._write_all

    def disk_full(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    try:
        async with spooling_writer(dsn, spool) as writer:
            await wait_connected(writer)
            await proxy.cut()
            monkeypatch.setattr(spool_module, "_write_all", disk_full)
            for i in range(5):  # buffered; the task's write fails, and so does spooling them
                await writer.write(numbered_batch(i))
            await writer.flush()
            m = writer.metrics()
            assert (m["dropped_batches"], m["dropped_rows"], m["spool_write_errors"]) == (5, 80, 5)
            assert writer._task is not None and not writer._task.done()
            monkeypatch.setattr(spool_module, "_write_all", real)
            await proxy.restore()
            for i in range(5, 8):
                await writer.write(numbered_batch(i))
            async with asyncio.timeout(30):
                await writer.wait_drained()
    finally:
        await proxy.stop()
    async with await psycopg.AsyncConnection.connect(backend) as conn:
        assert sorted(await stored_batches(conn)) == [5, 6, 7]
