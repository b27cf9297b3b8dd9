"""BatchWriter: one ReadingBatch -> reading, reading_1m and tag_latest in one transaction.

Fast path: the batch, sorted by (tag, time), is one binary COPY straight into ``reading``;
its minute partials (computed in numpy, rollup.py) are a second COPY into a temp table,
merged into ``reading_1m`` and ``tag_latest`` by two set-based upserts. Only when the COPY
hits a duplicate (tag_id, time) is the transaction redone through a staging table with
``ON CONFLICT DO NOTHING RETURNING``, and the partials are then computed in SQL from the
rows actually inserted. Invariants: a replayed batch changes nothing; rollups count each
stored reading exactly once; tag_latest never moves back in time; a failure leaves no
part of a batch behind.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np
import psycopg

from core.batch import ReadingBatch
from core.errors import BatchError, DatabaseUnavailable
from storage import pgcopy
from storage.db import Backend, Conn, connect, translate_errors
from storage.migrate import require_current_schema
from storage.partitions import PartitionCache
from storage.rollup import MinutePartials, prepare

__all__ = ["MAX_TS_US", "MIN_TS_US", "BatchWriter", "WriteResult", "split_time_range", "to_db_ids"]

# Timestamps the historian stores: [1970-01-01, 2200-01-01) UTC, in µs. Anything outside
# is a broken clock or a sentinel (OPC UA's 9999-12-31 "infinity", DateTime.MinValue) and
# would break partition date math or be refused by the database, so it is set aside.
MIN_TS_US = 0
MAX_TS_US = 7_258_118_400_000_000  # 2200-01-01 00:00:00 UTC

READING_COLUMNS: tuple[pgcopy.PgColumn, ...] = (
    ("time", "timestamptz"),
    ("tag_id", "int4"),
    ("value", "float8"),
    ("quality", "int2"),
)
PARTIAL_COLUMNS: tuple[pgcopy.PgColumn, ...] = (
    ("tag_id", "int4"),
    ("bucket", "timestamptz"),
    ("min", "float8"),
    ("max", "float8"),
    ("sum", "float8"),
    ("count", "int4"),
    ("bad_count", "int4"),
    ("last_time", "timestamptz"),
    ("last_value", "float8"),
    ("last_quality", "int2"),
    ("tag_last", "bool"),
)

_TEMP_TABLES = b"""
CREATE TEMP TABLE IF NOT EXISTS hw_stage_reading
    (time timestamptz, tag_id integer, value float8, quality smallint) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS hw_stage_rollup
    (tag_id integer, bucket timestamptz, min float8, max float8, sum float8, count integer,
     bad_count integer, last_time timestamptz, last_value float8, last_quality smallint,
     tag_last boolean) ON COMMIT DELETE ROWS;
"""

# The stage table is filled in (tag_id, bucket) order (numpy sorts the fast path, the slow
# path inserts ORDER BY) and a fresh temp table is scanned in insertion order, so
# concurrent writers lock rollup rows in the same order without paying for a sort here
# (a sort costs 10-30 % of these statements). Were that order ever lost, the worst case
# is a detected deadlock: the batch fails as DatabaseUnavailable and is retried via the
# spool. NaN in min/max stands for "no usable reading".
_MERGE = b"""
INSERT INTO reading_1m AS r
    (tag_id, bucket, min, max, sum, count, bad_count, last_time, last_value, last_quality)
SELECT tag_id, bucket, NULLIF(min, 'NaN'), NULLIF(max, 'NaN'), sum, count, bad_count,
       last_time, last_value, last_quality
FROM hw_stage_rollup
ON CONFLICT (tag_id, bucket) DO UPDATE SET
    min = LEAST(r.min, EXCLUDED.min),
    max = GREATEST(r.max, EXCLUDED.max),
    sum = r.sum + EXCLUDED.sum,
    count = r.count + EXCLUDED.count,
    bad_count = r.bad_count + EXCLUDED.bad_count,
    last_time = GREATEST(r.last_time, EXCLUDED.last_time),
    last_value = CASE WHEN EXCLUDED.last_time > r.last_time THEN EXCLUDED.last_value ELSE r.last_value END,
    last_quality = CASE WHEN EXCLUDED.last_time > r.last_time THEN EXCLUDED.last_quality
                        ELSE r.last_quality END;
INSERT INTO tag_latest AS l (tag_id, time, value, quality)
SELECT tag_id, last_time, last_value, last_quality FROM hw_stage_rollup WHERE tag_last
ON CONFLICT (tag_id) DO UPDATE SET time = EXCLUDED.time, value = EXCLUDED.value, quality = EXCLUDED.quality
WHERE l.time < EXCLUDED.time;
"""

# The fallback computes the same partials as rollup.prepare, from the RETURNING rows only.
_SLOW_INSERT = b"""
WITH ins AS (
    INSERT INTO reading (time, tag_id, value, quality)
    SELECT time, tag_id, value, quality FROM hw_stage_reading
    ON CONFLICT (tag_id, time) DO NOTHING
    RETURNING time, tag_id, value, quality
), agg AS (
    SELECT tag_id,
           date_bin('1 minute', time, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS bucket,
           min(value) FILTER (WHERE quality & 64 <> 0) AS min,
           max(value) FILTER (WHERE quality & 64 <> 0) AS max,
           coalesce(sum(value) FILTER (WHERE quality & 64 <> 0), 0) AS sum,
           count(*) FILTER (WHERE quality & 64 <> 0) AS count,
           count(*) FILTER (WHERE quality & 64 = 0) AS bad_count,
           max(time) AS last_time,
           (array_agg(value ORDER BY time DESC))[1] AS last_value,
           (array_agg(quality ORDER BY time DESC))[1] AS last_quality
    FROM ins GROUP BY 1, 2
)
INSERT INTO hw_stage_rollup
SELECT tag_id, bucket, min, max, sum, count, bad_count, last_time, last_value, last_quality,
       bucket = max(bucket) OVER (PARTITION BY tag_id)
FROM agg ORDER BY tag_id, bucket;
"""


@dataclass(frozen=True, slots=True)
class WriteResult:
    rows: int  # rows in the batch
    inserted: int  # rows new to the database; the rest were already stored or rejected
    slow_path: bool  # a duplicate forced the staging-table path
    rejected: int = 0  # rows with a timestamp outside [MIN_TS_US, MAX_TS_US), not written

    @property
    def duplicates(self) -> int:
        return self.rows - self.rejected - self.inserted


def to_db_ids(batch: ReadingBatch, db_ids: np.ndarray) -> ReadingBatch:
    """The same batch with its dense registry indices replaced by database tag ids.

    ``db_ids[i]`` is the ``tag.id`` of registry index ``i`` (from storage.registry_sync).
    """
    if len(batch) == 0:
        return batch
    lo, hi = int(batch.tag.min()), int(batch.tag.max())
    if lo < 0 or hi >= len(db_ids):
        raise BatchError(f"tag index out of range 0..{len(db_ids) - 1}: saw {lo}..{hi}")
    ids = db_ids.take(batch.tag).astype(np.int32, copy=False)
    if int(ids.min()) <= 0:
        raise BatchError("batch holds a tag index with no database id")
    ids.flags.writeable = False
    return ReadingBatch(ids, batch.ts, batch.value, batch.quality)


def split_time_range(batch: ReadingBatch) -> tuple[ReadingBatch, ReadingBatch]:
    """``(storable, rejected)``: rows inside and outside [MIN_TS_US, MAX_TS_US).

    Cheap when all rows are in range (the usual case): ``batch`` itself is returned.
    """
    if len(batch) == 0 or (int(batch.ts.min()) >= MIN_TS_US and int(batch.ts.max()) < MAX_TS_US):
        return batch, ReadingBatch.empty()
    ok = (batch.ts >= MIN_TS_US) & (batch.ts < MAX_TS_US)
    return batch.select(ok), batch.select(~ok)


class BatchWriter:
    """Writes batches over one connection it owns; not for concurrent use (serialize calls).

    ``db_ids`` maps the dense tag index of incoming batches to database ids; see
    :func:`to_db_ids`. After DatabaseUnavailable the writer is dead: close it and connect
    a new one.
    """

    def __init__(self, conn: Conn, db_ids: np.ndarray, backend: Backend) -> None:
        if conn.autocommit:
            raise ValueError("BatchWriter needs a connection in transaction mode")
        self._conn = conn
        self.db_ids = np.asarray(db_ids, dtype=np.int32)
        self.backend = backend
        self._partitions = PartitionCache()
        self._broken = False
        # Cumulative wall time per phase of the fast path (for metrics and the benchmark).
        self.phase_seconds = dict.fromkeys(("prepare", "copy", "rollup", "commit"), 0.0)

    @classmethod
    async def connect(cls, dsn: str, db_ids: np.ndarray, *, connect_timeout_s: float = 5.0) -> BatchWriter:
        """Connect, check the schema is current, and prepare the session's staging tables."""
        conn = await connect(dsn, connect_timeout_s=connect_timeout_s, application_name="hazardwatch-writer")
        try:
            backend = await require_current_schema(conn)
            with translate_errors("prepare writer session"):
                await conn.execute(_TEMP_TABLES)
                await conn.commit()
        except BaseException:
            await conn.close()
            raise
        return cls(conn, db_ids, backend)

    @property
    def closed(self) -> bool:
        return self._broken or self._conn.closed

    async def close(self) -> None:
        await self._conn.close()

    async def write(self, batch: ReadingBatch) -> WriteResult:
        """Write a batch whose ``tag`` holds dense registry indices."""
        return await self.write_resolved(to_db_ids(batch, self.db_ids))

    async def write_resolved(self, batch: ReadingBatch) -> WriteResult:
        """Write a batch whose ``tag`` already holds database tag ids (spool replays).

        Rows with a timestamp outside [MIN_TS_US, MAX_TS_US) are not written; they are
        counted in ``WriteResult.rejected`` (callers count them visibly).
        """
        if self.closed:
            raise DatabaseUnavailable("writer connection is closed")
        total = len(batch)
        batch, rejected = split_time_range(batch)
        if len(batch) == 0:
            return WriteResult(total, 0, False, len(rejected))
        started = time.perf_counter()
        batch, partials = prepare(batch)
        rows = pgcopy.encode(
            READING_COLUMNS,
            {"time": batch.ts, "tag_id": batch.tag, "value": batch.value, "quality": batch.quality},
        )
        self.phase_seconds["prepare"] += time.perf_counter() - started
        try:
            with translate_errors("write batch"):
                result = await self._write(batch, rows, partials)
            return WriteResult(total, result.inserted, result.slow_path, len(rejected))
        except asyncio.CancelledError:
            self._broken = True  # cancelled mid-protocol: the session state is unknown
            raise
        except DatabaseUnavailable:
            self._broken = True
            raise
        except BaseException:
            await self._rollback_quietly()
            raise

    async def _write(self, batch: ReadingBatch, rows: bytes, partials: MinutePartials) -> WriteResult:
        n = len(batch)
        for attempt in (1, 2):
            if self.backend is Backend.POSTGRES:
                await self._partitions.ensure(self._conn, batch.ts)
            try:
                await self._write_fast(rows, partials)
                return WriteResult(n, n, slow_path=False)
            except psycopg.errors.UniqueViolation:
                await self._conn.rollback()
                return WriteResult(n, await self._write_slow(rows), slow_path=True)
            except psycopg.errors.CheckViolation:
                # "no partition found for row": retention dropped a day we had cached.
                await self._conn.rollback()
                if attempt == 2 or self.backend is not Backend.POSTGRES:
                    raise
                self._partitions.forget()
        raise AssertionError("unreachable")

    async def _write_fast(self, rows: bytes, partials: MinutePartials) -> None:
        t0 = time.perf_counter()
        stage = pgcopy.encode(PARTIAL_COLUMNS, {name: getattr(partials, name) for name, _ in PARTIAL_COLUMNS})
        async with self._conn.cursor() as cur:
            async with cur.copy(
                b"COPY reading (time, tag_id, value, quality) FROM STDIN (FORMAT BINARY)"
            ) as cp:
                await cp.write(rows)
            t1 = time.perf_counter()
            async with cur.copy(b"COPY hw_stage_rollup FROM STDIN (FORMAT BINARY)") as cp:
                await cp.write(stage)
            await cur.execute(_MERGE)
        t2 = time.perf_counter()
        await self._conn.commit()
        phases = self.phase_seconds
        phases["copy"] += t1 - t0
        phases["rollup"] += t2 - t1
        phases["commit"] += time.perf_counter() - t2

    async def _write_slow(self, rows: bytes) -> int:
        async with self._conn.cursor() as cur:
            async with cur.copy(b"COPY hw_stage_reading FROM STDIN (FORMAT BINARY)") as cp:
                await cp.write(rows)
            await cur.execute(_SLOW_INSERT)
            await cur.execute(b"SELECT coalesce(sum(count + bad_count), 0) FROM hw_stage_rollup")
            row = await cur.fetchone()
            await cur.execute(_MERGE)
        await self._conn.commit()
        return int(row[0]) if row else 0

    async def _rollback_quietly(self) -> None:
        try:
            await self._conn.rollback()
        except psycopg.Error:
            self._broken = True
