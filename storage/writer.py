"""BatchWriter: one ReadingBatch -> reading (and reading_1m, tag_latest) per transaction.

Fast path: the batch, sorted by (tag, time), is one binary COPY straight into ``reading``.
Only when the COPY hits a duplicate (tag_id, time) is the transaction redone through a
staging table with ``ON CONFLICT DO NOTHING RETURNING`` (the slow path), whose minute
partials are computed in SQL from the rows actually inserted and merged at once.

Rollups and latest values (the *owner* writer; see open_minutes.py): each tag's open
minute is kept in memory and written to ``reading_1m`` once, when it closes, instead of
being upserted after every batch; readings for an already closed minute are merged in
their own transaction. The newest reading per tag goes to ``tag_latest`` in the batch's
transaction when few tags changed (``latest_immediate_tags``) or when ``latest_lag_s``
has passed (1 s, stretched to 40x the last such write when the database is slow, at most
5 s), and always for a tag whose open minute closes without a newer reading (its minute
leaves reading_1m_open); otherwise it is held back and written by a later transaction or
a timer, so tag_latest lags ``reading`` by at most ``latest_lag_s``. Minutes that hold
unwritten rollups are listed in ``reading_1m_open`` in the transactions that store their
readings; a writer taking over
recomputes them from ``reading`` (rollups overwritten, tag_latest moved forward only), so
a crash loses nothing. History queries read listed minutes from ``reading``.

Invariants: a replayed batch changes nothing; rollups count each stored reading exactly
once; tag_latest never moves back in time; a failure leaves no part of a batch behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import psycopg

from core.batch import ReadingBatch
from core.clock import to_datetime
from core.errors import BatchError, DatabaseUnavailable, StorageError
from storage import pgcopy
from storage.db import Backend, Conn, connect, translate_errors
from storage.migrate import require_current_schema
from storage.open_minutes import OpenMinutes, Step, advance, close_all, journal_ranges
from storage.partitions import PartitionCache
from storage.rollup import MinutePartials, prepare

__all__ = [
    "CLOSE_GRACE_S",
    "IDLE_CLOSE_S",
    "LATEST_COST_FACTOR",
    "LATEST_IMMEDIATE_TAGS",
    "LATEST_INTERVAL_S",
    "LATEST_MAX_LAG_S",
    "MAX_TS_US",
    "MIN_TS_US",
    "BatchWriter",
    "WriteResult",
    "latest_lag",
    "split_time_range",
    "to_db_ids",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# tag_latest lags reading by at most this while batches keep coming (and a timer covers
# the last batch before a pause). One 10,000-tag upsert costs about a third of COPYing
# 10,000 readings, so under backlog this bounds its cost per second, not per batch.
LATEST_INTERVAL_S = 1.0
# When the database is slow, the interval stretches to this many times the duration of the
# last tag_latest write (so those writes take at most ~2.5 % of the writer's time), but
# never beyond LATEST_MAX_LAG_S: the lag stays bounded.
LATEST_COST_FACTOR = 40.0
LATEST_MAX_LAG_S = 5.0
# A batch that changes the newest reading of at most this many tags writes them at once:
# that costs little next to the transaction itself, so holding them back buys nothing.
LATEST_IMMEDIATE_TAGS = 1_000
# A tag's open minute also closes once batches carry readings this long past its end (a
# tag that fell silent), and all close after IDLE_CLOSE_S without any write.
CLOSE_GRACE_S = 60.0
IDLE_CLOSE_S = 60.0
# close() gives up writing the open minutes after this (the next writer recovers them);
# psycopg then spends at most 10 s more trying to cancel the statement on the server.
CLOSE_FLUSH_TIMEOUT_S = 5.0
# How long a connecting writer waits for the rollup lock before working in direct mode.
OWNER_WAIT_S = 2.0
# How often a writer in direct mode tries to become the rollup owner again.
OWNER_RETRY_S = 10.0
# Session advisory lock held by the writer that owns the rollups (arbitrary constant).
_OWNER_KEY = 0x48_57_52_4F  # "HWRO"

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

ROLLUP_COLUMNS: tuple[pgcopy.PgColumn, ...] = PARTIAL_COLUMNS[:-1]
LATEST_COLUMNS: tuple[pgcopy.PgColumn, ...] = (
    ("tag_id", "int4"),
    ("time", "timestamptz"),
    ("value", "float8"),
    ("quality", "int2"),
)
_COPY_READING = b"COPY reading (time, tag_id, value, quality) FROM STDIN (FORMAT BINARY)"
_COPY_ROLLUP = b"COPY hw_stage_rollup FROM STDIN (FORMAT BINARY)"
_COPY_ROLLUP_OWNED = (
    b"COPY hw_stage_rollup (tag_id, bucket, min, max, sum, count, bad_count, last_time, last_value, "
    b"last_quality) FROM STDIN (FORMAT BINARY)"
)
_COPY_LATEST = b"COPY hw_stage_latest (tag_id, time, value, quality) FROM STDIN (FORMAT BINARY)"

_TEMP_TABLES = b"""
CREATE TEMP TABLE IF NOT EXISTS hw_stage_reading
    (time timestamptz, tag_id integer, value float8, quality smallint) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS hw_stage_rollup
    (tag_id integer, bucket timestamptz, min float8, max float8, sum float8, count integer,
     bad_count integer, last_time timestamptz, last_value float8, last_quality smallint,
     tag_last boolean) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS hw_stage_latest
    (tag_id integer, time timestamptz, value float8, quality smallint) ON COMMIT DELETE ROWS;
"""

_JOURNAL_LIST = b"""
INSERT INTO reading_1m_open AS o (bucket, tag_lo, tag_hi)
SELECT * FROM unnest(%s::timestamptz[], %s::integer[], %s::integer[])
ON CONFLICT (bucket) DO UPDATE SET tag_lo = LEAST(o.tag_lo, EXCLUDED.tag_lo),
                                   tag_hi = GREATEST(o.tag_hi, EXCLUDED.tag_hi)
"""
_JOURNAL_DROP = b"DELETE FROM reading_1m_open WHERE bucket = ANY(%s::timestamptz[])"

# One tag-minute's rollup columns from its readings (GOOD = quality bit 0x40), shared by
# the takeover recompute and the conflict path so both aggregate exactly alike.
_AGGREGATES = b"""min(value) FILTER (WHERE quality & 64 <> 0) AS min,
       max(value) FILTER (WHERE quality & 64 <> 0) AS max,
       coalesce(sum(value) FILTER (WHERE quality & 64 <> 0), 0) AS sum,
       count(*) FILTER (WHERE quality & 64 <> 0) AS count,
       count(*) FILTER (WHERE quality & 64 = 0) AS bad_count,
       max(time) AS last_time,
       (array_agg(value ORDER BY time DESC))[1] AS last_value,
       (array_agg(quality ORDER BY time DESC))[1] AS last_quality"""

# Taking over the rollups: every minute a previous owner listed is recomputed from
# reading (one index probe per listed tag id) and overwritten, and tag_latest moves
# forward to the newest of those rows. The table lock waits for, and then holds off,
# direct-mode writers' additive merges, so none is lost between snapshot and overwrite.
_RECOVER = (
    b"""
SET LOCAL jit = off;  -- the estimate for 10,000 probes triggers JIT: +0.5 s, no gain
LOCK TABLE reading_1m IN SHARE ROW EXCLUSIVE MODE;
WITH rec AS MATERIALIZED (
    SELECT g.tag_id, o.bucket, a.*
    FROM reading_1m_open o
    CROSS JOIN LATERAL generate_series(o.tag_lo, o.tag_hi) AS g (tag_id)
    CROSS JOIN LATERAL (
        SELECT """
    + _AGGREGATES
    + b"""
        FROM reading r
        WHERE r.tag_id = g.tag_id AND r.time >= o.bucket AND r.time < o.bucket + INTERVAL '1 minute'
    ) a
    WHERE a.last_time IS NOT NULL
), rollups AS (
    INSERT INTO reading_1m AS r
        (tag_id, bucket, min, max, sum, count, bad_count, last_time, last_value, last_quality)
    SELECT tag_id, bucket, min, max, sum, count, bad_count, last_time, last_value, last_quality
    FROM rec ORDER BY tag_id, bucket
    ON CONFLICT (tag_id, bucket) DO UPDATE SET
        min = EXCLUDED.min, max = EXCLUDED.max, sum = EXCLUDED.sum, count = EXCLUDED.count,
        bad_count = EXCLUDED.bad_count, last_time = EXCLUDED.last_time,
        last_value = EXCLUDED.last_value, last_quality = EXCLUDED.last_quality
)
INSERT INTO tag_latest AS l (tag_id, time, value, quality)
SELECT DISTINCT ON (tag_id) tag_id, last_time, last_value, last_quality
FROM rec ORDER BY tag_id, last_time DESC
ON CONFLICT (tag_id) DO UPDATE SET time = EXCLUDED.time, value = EXCLUDED.value, quality = EXCLUDED.quality
WHERE l.time < EXCLUDED.time;
DELETE FROM reading_1m_open;
"""
)

# The stage table is filled in (tag_id, bucket) order (numpy sorts the fast path, the slow
# path inserts ORDER BY) and a fresh temp table is scanned in insertion order, so
# concurrent writers lock rollup rows in the same order without paying for a sort here
# (a sort costs 10-30 % of these statements). Were that order ever lost, the worst case
# is a detected deadlock: the batch fails as DatabaseUnavailable and is retried via the
# spool. NaN in min/max stands for "no usable reading".
_MERGE_ROLLUP = b"""
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
"""
_LATEST_SET = b"""
ON CONFLICT (tag_id) DO UPDATE SET time = EXCLUDED.time, value = EXCLUDED.value, quality = EXCLUDED.quality
WHERE l.time < EXCLUDED.time;
"""
# Per batch, every minute partial at once (direct mode and the slow path).
_MERGE = (
    _MERGE_ROLLUP
    + b"INSERT INTO tag_latest AS l (tag_id, time, value, quality)\n"
    + b"SELECT tag_id, last_time, last_value, last_quality FROM hw_stage_rollup WHERE tag_last"
    + _LATEST_SET
)
# Owner mode: the newest readings held back in memory, one row per tag, sorted by tag.
# A plain UPDATE ... FROM of the rows that exist costs about half of ON CONFLICT DO UPDATE
# for 10,000 tags (measured); only tags new to tag_latest take the upsert (which also
# covers a concurrent writer inserting the same tag first). Both move rows forward only.
_MERGE_LATEST = (
    b"""
WITH moved AS (
    UPDATE tag_latest AS l SET time = s.time, value = s.value, quality = s.quality
    FROM hw_stage_latest s WHERE l.tag_id = s.tag_id AND l.time < s.time
    RETURNING 1
)
INSERT INTO tag_latest AS l (tag_id, time, value, quality)
SELECT tag_id, time, value, quality FROM hw_stage_latest s
WHERE NOT EXISTS (SELECT 1 FROM tag_latest x WHERE x.tag_id = s.tag_id)
"""
    + _LATEST_SET
)

# The fallback computes the same partials as rollup.prepare, from the RETURNING rows only.
_SLOW_INSERT = (
    b"""
WITH ins AS (
    INSERT INTO reading (time, tag_id, value, quality)
    SELECT time, tag_id, value, quality FROM hw_stage_reading
    ON CONFLICT (tag_id, time) DO NOTHING
    RETURNING time, tag_id, value, quality
), agg AS (
    SELECT tag_id,
           date_bin('1 minute', time, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS bucket,
           """
    + _AGGREGATES
    + b"""
    FROM ins GROUP BY 1, 2
)
INSERT INTO hw_stage_rollup
SELECT tag_id, bucket, min, max, sum, count, bad_count, last_time, last_value, last_quality,
       bucket = max(bucket) OVER (PARTITION BY tag_id)
FROM agg ORDER BY tag_id, bucket;
"""
)


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


def latest_lag(interval_s: float, last_write_s: float) -> float:
    """How long tag_latest may trail reading, given how long its last write took."""
    stretched = max(interval_s, LATEST_COST_FACTOR * last_write_s)
    return min(stretched, max(LATEST_MAX_LAG_S, interval_s))


class BatchWriter:
    """Writes batches over one connection it owns; calls are serialized internally.

    ``db_ids`` maps the dense tag index of incoming batches to database ids; see
    :func:`to_db_ids`. After DatabaseUnavailable the writer is dead: close it and connect
    a new one (which recovers whatever this one held in memory).

    One writer per database owns the rollups (a session advisory lock): it holds each
    tag's open minute and held-back newest reading in memory (see the module docstring).
    A writer that finds the lock taken works in *direct* mode, merging every batch into
    reading_1m and tag_latest in its own transaction (exact, slower), and tries to take
    ownership again every ``OWNER_RETRY_S``.
    """

    def __init__(
        self,
        conn: Conn,
        db_ids: np.ndarray,
        backend: Backend,
        *,
        latest_interval_s: float = LATEST_INTERVAL_S,
        latest_immediate_tags: int = LATEST_IMMEDIATE_TAGS,
        close_grace_s: float = CLOSE_GRACE_S,
        idle_close_s: float = IDLE_CLOSE_S,
        owner_retry_s: float = OWNER_RETRY_S,
    ) -> None:
        if conn.autocommit:
            raise ValueError("BatchWriter needs a connection in transaction mode")
        if latest_interval_s <= 0 or idle_close_s <= 0 or close_grace_s < 0 or latest_immediate_tags < 0:
            raise ValueError(
                "BatchWriter: latest_interval_s and idle_close_s must be > 0, "
                "close_grace_s and latest_immediate_tags >= 0"
            )
        self._conn = conn
        self.db_ids = np.asarray(db_ids, dtype=np.int32)
        self.backend = backend
        self.latest_interval_s = latest_interval_s
        self.latest_immediate_tags = latest_immediate_tags
        self._grace_us = round(close_grace_s * 1_000_000)
        self.idle_close_s = idle_close_s
        self.owner_retry_s = owner_retry_s
        self._partitions = PartitionCache()
        self._broken = False
        self._lock = asyncio.Lock()
        self.owner = False  # holds the rollup lock: open minutes live in memory
        self._next_owner_try = 0.0
        self._heads = OpenMinutes.empty()
        self._journal: dict[int, tuple[int, int]] = {}  # what reading_1m_open lists for us
        self._latest_at = 0.0  # monotonic time tag_latest was last brought up to date
        self._latest_cost = 0.0  # seconds the last held-back tag_latest write took
        self._last_write = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._tick_task: asyncio.Task[None] | None = None
        # Cumulative wall time per phase (for metrics and the benchmark).
        self.phase_seconds = dict.fromkeys(("prepare", "copy", "rollup", "latest", "commit"), 0.0)

    @classmethod
    async def connect(
        cls, dsn: str, db_ids: np.ndarray, *, connect_timeout_s: float = 5.0, **options: Any
    ) -> BatchWriter:
        """Connect, check the schema is current, prepare the session's staging tables, and
        take over the rollups if no other writer holds them (recovering what a crashed
        writer left in reading_1m_open). ``options``: see ``__init__``."""
        conn = await connect(dsn, connect_timeout_s=connect_timeout_s, application_name="hazardwatch-writer")
        try:
            backend = await require_current_schema(conn)
            with translate_errors("prepare writer session"):
                await conn.execute(_TEMP_TABLES)
                await conn.commit()
            writer = cls(conn, db_ids, backend, **options)
            with translate_errors("take over the rollups"):
                await writer._try_own(OWNER_WAIT_S)
        except BaseException:
            await conn.close()
            raise
        return writer

    @property
    def closed(self) -> bool:
        return self._broken or self._conn.closed

    @property
    def latest_lag_s(self) -> float:
        """How long tag_latest may now trail reading: ``latest_interval_s``, stretched to
        LATEST_COST_FACTOR x the last tag_latest write when the database is slow, at most
        LATEST_MAX_LAG_S."""
        return latest_lag(self.latest_interval_s, self._latest_cost)

    @property
    def server_pid(self) -> int:
        """The server process of this writer's session (for operators' pg_stat_activity)."""
        return int(self._conn.info.backend_pid)

    @property
    def open_minutes(self) -> int:
        """Tag-minutes held in memory, not yet in reading_1m."""
        return len(self._heads)

    async def close(self) -> None:
        """Write the open minutes and held-back newest readings, then disconnect.

        When that fails or takes over CLOSE_FLUSH_TIMEOUT_S (the database is gone) nothing
        is lost: the next writer recovers the minutes listed in reading_1m_open from
        ``reading``. A direct-mode writer first tries to take the rollup lock, so that it
        recovers what a dead owner held.
        """
        self._cancel_timer()
        if self._tick_task is not None:
            with contextlib.suppress(BaseException):
                await self._tick_task
        try:
            if not self.closed:
                async with asyncio.timeout(CLOSE_FLUSH_TIMEOUT_S):  # a hung server must not hang a stop
                    if not self.owner:  # the owner may be gone by now: recover what it held
                        async with self._lock:
                            await self._guarded(self._try_own())
                    await self.flush()
        except (StorageError, BatchError, TimeoutError) as exc:
            log.warning(
                "historian: could not write open minutes at close (recovered on next start): %s",
                exc or "timed out",
            )
        finally:
            await self._conn.close()

    async def flush(self) -> None:
        """Write every open minute to reading_1m and every held-back reading to tag_latest.

        A clean stop does this (close); after it, reading_1m and tag_latest reflect every
        stored reading.
        """
        async with self._lock:
            if self.closed:
                raise DatabaseUnavailable("writer connection is closed")
            if self.owner and (len(self._heads) or self._journal):
                await self._guarded(self._flush_all())

    async def write(self, batch: ReadingBatch) -> WriteResult:
        """Write a batch whose ``tag`` holds dense registry indices."""
        return await self.write_resolved(to_db_ids(batch, self.db_ids))

    async def write_resolved(self, batch: ReadingBatch) -> WriteResult:
        """Write a batch whose ``tag`` already holds database tag ids (spool replays).

        Rows with a timestamp outside [MIN_TS_US, MAX_TS_US) are not written; they are
        counted in ``WriteResult.rejected`` (callers count them visibly).
        """
        async with self._lock:
            if self.closed:
                raise DatabaseUnavailable("writer connection is closed")
            total = len(batch)
            batch, rejected = split_time_range(batch)
            if len(batch) == 0:
                return WriteResult(total, 0, False, len(rejected))
            if not self.owner and time.monotonic() >= self._next_owner_try:
                await self._guarded(self._try_own())
            started = time.perf_counter()
            batch, partials = prepare(batch)
            rows = pgcopy.encode(
                READING_COLUMNS,
                {"time": batch.ts, "tag_id": batch.tag, "value": batch.value, "quality": batch.quality},
            )
            self.phase_seconds["prepare"] += time.perf_counter() - started
            result = await self._guarded(self._write(batch, rows, partials))
            self._last_write = time.monotonic()
            self._arm_timer()
            return WriteResult(total, result.inserted, result.slow_path, len(rejected))

    async def _guarded(self, work: Awaitable[_T]) -> _T:
        """Run database work: errors translated; a failure leaves no part of it behind."""
        try:
            with translate_errors("write batch"):
                return await work
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
        step = None
        if self.owner:
            t0 = time.perf_counter()
            step = advance(self._heads, partials, self._grace_us)
            self.phase_seconds["prepare"] += time.perf_counter() - t0
        for attempt in (1, 2):
            if self.backend is Backend.POSTGRES:
                await self._partitions.ensure(self._conn, batch.ts)
            try:
                if step is None:
                    await self._write_direct(rows, partials)
                else:
                    await self._write_owned(rows, step)
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

    async def _copy(self, cur: psycopg.AsyncCursor[Any], statement: bytes, payload: bytes) -> None:
        async with cur.copy(statement) as cp:
            await cp.write(payload)

    async def _write_direct(self, rows: bytes, partials: MinutePartials) -> None:
        """Every partial merged now: the whole rollup and latest work in this transaction."""
        t0 = time.perf_counter()
        stage = pgcopy.encode(PARTIAL_COLUMNS, {name: getattr(partials, name) for name, _ in PARTIAL_COLUMNS})
        async with self._conn.cursor() as cur:
            await self._copy(cur, _COPY_READING, rows)
            t1 = time.perf_counter()
            await self._copy(cur, _COPY_ROLLUP, stage)
            await cur.execute(_MERGE)
        t2 = time.perf_counter()
        await self._conn.commit()
        phases = self.phase_seconds
        phases["copy"] += t1 - t0
        phases["rollup"] += t2 - t1
        phases["commit"] += time.perf_counter() - t2

    async def _write_owned(self, rows: bytes, step: Step) -> None:
        """COPY the rows; write only the tag-minutes that closed, and tag_latest when due."""
        now = time.monotonic()
        n_latest = len(step.latest["tag_id"])
        latest_due = n_latest > 0 and (
            n_latest <= self.latest_immediate_tags or now - self._latest_at >= self.latest_lag_s
        )
        journal = journal_ranges(step.heads)
        t0 = time.perf_counter()
        async with self._conn.cursor() as cur:
            await self._copy(cur, _COPY_READING, rows)
            t1 = time.perf_counter()
            if step.merge_rows:
                await self._merge_rollup(cur, step.merge)
            db_journal = await self._update_journal(cur, journal)
            t2 = time.perf_counter()
            if latest_due:
                await self._merge_latest(cur, step.latest)
            else:  # closing heads only: their minute leaves reading_1m_open with this commit
                await self._merge_latest(cur, step.must_write_latest)
        t3 = time.perf_counter()
        await self._conn.commit()
        self._heads = step.heads.clean() if latest_due else step.heads
        self._journal = db_journal
        if latest_due:
            self._latest_at, self._latest_cost = now, t3 - t2
        phases = self.phase_seconds
        phases["copy"] += t1 - t0
        phases["rollup"] += t2 - t1
        phases["latest"] += t3 - t2
        phases["commit"] += time.perf_counter() - t3

    async def _merge_rollup(self, cur: psycopg.AsyncCursor[Any], merge: dict[str, np.ndarray]) -> None:
        await self._copy(cur, _COPY_ROLLUP_OWNED, pgcopy.encode(ROLLUP_COLUMNS, merge))
        await cur.execute(_MERGE_ROLLUP)

    async def _merge_latest(self, cur: psycopg.AsyncCursor[Any], latest: dict[str, np.ndarray]) -> None:
        if len(latest["tag_id"]) == 0:
            return
        payload = pgcopy.encode(
            LATEST_COLUMNS,
            {"tag_id": latest["tag_id"], "time": latest["last_time"], "value": latest["last_value"],
             "quality": latest["last_quality"]},
        )  # fmt: skip
        await self._copy(cur, _COPY_LATEST, payload)
        await cur.execute(_MERGE_LATEST)

    async def _update_journal(
        self, cur: psycopg.AsyncCursor[Any], wanted: dict[int, tuple[int, int]]
    ) -> dict[int, tuple[int, int]]:
        """List newly opened minutes (or wider tag ranges) in reading_1m_open and drop the
        minutes no head holds any more; return what the table then lists for us."""
        listed = dict(self._journal)
        gone = [b for b in listed if b not in wanted]
        grow = {
            b: (min(lo, listed[b][0]), max(hi, listed[b][1])) if b in listed else (lo, hi)
            for b, (lo, hi) in wanted.items()
            if b not in listed or lo < listed[b][0] or hi > listed[b][1]
        }
        if gone:
            await cur.execute(_JOURNAL_DROP, [[to_datetime(b) for b in gone]])
            for b in gone:
                del listed[b]
        if grow:
            await cur.execute(
                _JOURNAL_LIST,
                [
                    [to_datetime(b) for b in grow],
                    [r[0] for r in grow.values()],
                    [r[1] for r in grow.values()],
                ],
            )
            listed.update(grow)
        return listed

    async def _flush_all(self) -> None:
        step = close_all(self._heads)
        t0 = time.perf_counter()
        async with self._conn.cursor() as cur:
            if step.merge_rows:
                await self._merge_rollup(cur, step.merge)
            await cur.execute(b"DELETE FROM reading_1m_open")
            t1 = time.perf_counter()
            await self._merge_latest(cur, step.latest)
        t2 = time.perf_counter()
        await self._conn.commit()
        self._heads, self._journal, self._latest_at = step.heads, {}, time.monotonic()
        self.phase_seconds["rollup"] += t1 - t0
        self.phase_seconds["latest"] += t2 - t1
        self.phase_seconds["commit"] += time.perf_counter() - t2

    async def _flush_latest(self) -> None:
        heads = self._heads
        t0 = time.perf_counter()
        async with self._conn.cursor() as cur:
            await self._merge_latest(
                cur,
                {
                    f: getattr(heads, f)[heads.dirty]
                    for f in ("tag_id", "last_time", "last_value", "last_quality")
                },
            )
        t1 = time.perf_counter()
        await self._conn.commit()
        self._heads, self._latest_at, self._latest_cost = heads.clean(), time.monotonic(), t1 - t0
        self.phase_seconds["latest"] += time.perf_counter() - t0

    async def _try_own(self, wait_s: float = 0.0) -> None:
        """Take the rollup lock (waiting up to ``wait_s`` for it); on success recover what
        reading_1m_open lists. The wait at connect covers a predecessor whose session the
        server is still ending (a cut link, a killed process)."""
        self._next_owner_try = time.monotonic() + self.owner_retry_s
        if wait_s > 0:
            await self._conn.execute(f"SET LOCAL lock_timeout = '{round(wait_s * 1000)}ms'".encode())
            try:
                await self._conn.execute(b"SELECT pg_advisory_lock(%s)", [_OWNER_KEY])
                got = True
            except psycopg.errors.LockNotAvailable:
                await self._conn.rollback()
                got = False
        else:
            cur = await self._conn.execute(b"SELECT pg_try_advisory_lock(%s)", [_OWNER_KEY])
            row = await cur.fetchone()
            got = bool(row and row[0])
        if not got:
            await self._conn.commit()
            log.info("historian: another writer owns the rollups; this one merges every batch directly")
            return
        try:
            await self._conn.execute(_RECOVER)
            await self._conn.commit()
        except BaseException:
            await self._rollback_quietly()
            with contextlib.suppress(psycopg.Error):
                await self._conn.execute(b"SELECT pg_advisory_unlock(%s)", [_OWNER_KEY])
                await self._conn.commit()
            raise
        self.owner = True
        self._heads, self._journal, self._latest_at = OpenMinutes.empty(), {}, 0.0

    def _arm_timer(self) -> None:
        """After a write: bring tag_latest up to date within ``latest_lag_s`` and close
        open minutes after ``idle_close_s`` without writes, even if no batch follows."""
        if not self.owner or len(self._heads) == 0:
            return
        delay = self.latest_lag_s if self._heads.dirty.any() else self.idle_close_s
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        if self._tick_task is None or self._tick_task.done():
            self._tick_task = asyncio.get_running_loop().create_task(
                self._tick(), name="historian-writer-tick"
            )

    async def _tick(self) -> None:
        async with self._lock:
            if self.closed or not self.owner:
                return
            try:
                if time.monotonic() - self._last_write >= self.idle_close_s:
                    await self._guarded(self._flush_all())
                    return
                if self._heads.dirty.any():
                    await self._guarded(self._flush_latest())
            except Exception as exc:
                log.warning("historian: background flush failed (the next write reports it): %s", exc)
                return
            if len(self._heads):
                delay = max(0.0, self._last_write + self.idle_close_s - time.monotonic())
                self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    async def _write_slow(self, rows: bytes) -> int:
        async with self._conn.cursor() as cur:
            await self._copy(cur, b"COPY hw_stage_reading FROM STDIN (FORMAT BINARY)", rows)
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
