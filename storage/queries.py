"""Historian reads as numpy arrays: history (raw, or bucketed from raw or reading_1m) and latest.

Bucketed history covers whole buckets: the range widens to the bucket edges around
[start, end), so raw and rollup sources give identical answers for the same buckets.
reading_1m serves any bucket that is a whole number of minutes on a minute-aligned origin;
minutes a writer still holds open (listed in reading_1m_open) come from raw readings, so a
rollup-sourced answer never misses readings the writer has not written to reading_1m yet.
Invariant: results come back sorted by (tag_id, time); absent aggregates are NaN.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from psycopg import sql

from core.clock import to_datetime
from core.errors import DatabaseUnavailable, StorageError
from core.plant import Plant
from storage.db import Backend, Conn, connect, translate_errors
from storage.migrate import require_current_schema
from storage.pgcopy import PG_EPOCH_OFFSET_US
from storage.rollup import US_PER_MINUTE

__all__ = ["History", "Latest", "bucket_sql", "history", "latest", "raw_history"]

Source = Literal["auto", "raw", "rollup"]


@dataclass(frozen=True, slots=True)
class History:
    """One row per raw reading, or per (tag, bucket). For raw rows avg = min = max = the
    value when usable (NaN when BAD) and ``count``/``bad_count`` are 1/0 or 0/1."""

    tag_id: np.ndarray  # int32
    time: np.ndarray  # int64 µs: reading time, or bucket start
    avg: np.ndarray
    min: np.ndarray
    max: np.ndarray
    count: np.ndarray  # int64, usable readings
    bad_count: np.ndarray  # int64
    last: np.ndarray  # newest value in the bucket, any quality
    quality: np.ndarray  # uint8, quality of ``last``
    source: str  # "reading" or "reading_1m"

    def __len__(self) -> int:
        return len(self.tag_id)


@dataclass(frozen=True, slots=True)
class Latest:
    tag_id: np.ndarray  # int32; tags that never reported are absent
    time: np.ndarray  # int64 µs
    value: np.ndarray
    quality: np.ndarray  # uint8


def bucket_sql(backend: Backend, width_us: int, column: sql.Composable, origin_us: int = 0) -> sql.Composed:
    """The start of ``column``'s bucket: time_bucket on TimescaleDB, date_bin elsewhere.

    Both get the same explicit origin (default the Unix epoch; pass +08:00 midnight for
    Beijing days), so both backends bucket identically.
    """
    width = sql.SQL("{}::interval").format(sql.Literal(f"{width_us} microseconds"))
    origin = sql.Literal(to_datetime(origin_us))
    if backend is Backend.TIMESCALEDB:
        return sql.SQL("time_bucket({}, {}, origin => {})").format(width, column, origin)
    return sql.SQL("date_bin({}, {}, {})").format(width, column, origin)


# Output columns: (name, PostgreSQL type) -> fetched as one bytea per column, see _fetch.
_HISTORY_COLUMNS = (
    ("tag_id", "int4"), ("time", "timestamptz"), ("avg", "float8"), ("min", "float8"), ("max", "float8"),
    ("count", "int8"), ("bad_count", "int8"), ("last", "float8"), ("quality", "int2"),
)  # fmt: skip
_USABLE = sql.SQL("quality & 64 <> 0")

_RAW = sql.SQL("""
    SELECT tag_id, time,
           CASE WHEN {usable} THEN value ELSE 'NaN' END, CASE WHEN {usable} THEN value ELSE 'NaN' END,
           CASE WHEN {usable} THEN value ELSE 'NaN' END,
           ({usable})::int::int8, (NOT {usable})::int::int8, value, quality
    FROM reading WHERE tag_id = ANY(%(ids)s) AND time >= %(start)s AND time < %(end)s""")
_RAW_BUCKETS = sql.SQL("""
    SELECT tag_id, {bucket},
           coalesce(avg(value) FILTER (WHERE {usable}), 'NaN'), coalesce(min(value) FILTER (WHERE {usable}), 'NaN'),
           coalesce(max(value) FILTER (WHERE {usable}), 'NaN'),
           count(*) FILTER (WHERE {usable}), count(*) FILTER (WHERE NOT {usable}),
           (array_agg(value ORDER BY time DESC))[1], (array_agg(quality ORDER BY time DESC))[1]
    FROM reading WHERE tag_id = ANY(%(ids)s) AND time >= %(start)s AND time < %(end)s
    GROUP BY 1, 2""")
# Rollup rows per (tag, minute). A minute listed in reading_1m_open has rollups a writer
# still holds in memory (storage/open_minutes.py), so its reading_1m rows may be partial or
# absent: those minutes are aggregated from reading instead, in the same snapshot.
_MINUTE_ROWS = sql.SQL("""
    SELECT tag_id, bucket, min, max, sum, count, bad_count, last_time, last_value, last_quality
    FROM reading_1m m WHERE tag_id = ANY(%(ids)s) AND bucket >= %(start)s AND bucket < %(end)s
      AND NOT EXISTS (SELECT 1 FROM reading_1m_open o WHERE o.bucket = m.bucket)
    UNION ALL
    SELECT r.tag_id, o.bucket, min(value) FILTER (WHERE {usable}), max(value) FILTER (WHERE {usable}),
           coalesce(sum(value) FILTER (WHERE {usable}), 0), count(*) FILTER (WHERE {usable}),
           count(*) FILTER (WHERE NOT {usable}), max(time),
           (array_agg(value ORDER BY time DESC))[1], (array_agg(quality ORDER BY time DESC))[1]
    FROM reading_1m_open o JOIN reading r ON r.time >= o.bucket AND r.time < o.bucket + INTERVAL '1 minute'
    WHERE r.tag_id = ANY(%(ids)s) AND o.bucket >= %(start)s AND o.bucket < %(end)s
    GROUP BY r.tag_id, o.bucket""").format(usable=_USABLE)
_MINUTES = sql.SQL("""
    SELECT tag_id, bucket, coalesce(sum / NULLIF(count, 0), 'NaN'), coalesce(min, 'NaN'), coalesce(max, 'NaN'),
           count::int8, bad_count::int8, last_value, last_quality
    FROM ({minutes}) AS m""").format(minutes=_MINUTE_ROWS)
_MINUTE_BUCKETS = sql.SQL("""
    SELECT tag_id, {bucket},
           coalesce(sum(sum) / NULLIF(sum(count), 0), 'NaN'), coalesce(min(min), 'NaN'), coalesce(max(max), 'NaN'),
           sum(count)::int8, sum(bad_count)::int8,
           (array_agg(last_value ORDER BY last_time DESC))[1], (array_agg(last_quality ORDER BY last_time DESC))[1]
    FROM ({minutes}) AS m
    GROUP BY 1, 2""")


async def history(
    conn: Conn,
    tag_ids: Sequence[int] | np.ndarray,
    start_us: int,
    end_us: int,
    bucket_s: float | None = None,
    *,
    origin_us: int = 0,
    source: Source = "auto",
    backend: Backend | None = None,
) -> History:
    """Readings of ``tag_ids`` (database ids) in [start_us, end_us).

    ``bucket_s=None`` returns raw rows. Otherwise rows are aggregated per bucket, from
    reading_1m when the bucket allows it (``source="auto"``), else from raw readings.
    """
    backend = backend or await require_current_schema(conn)
    ids = [int(i) for i in np.asarray(tag_ids).ravel()]
    query: sql.Composable
    if bucket_s is None:
        query, table = _RAW.format(usable=_USABLE), "reading"
    else:
        width = round(bucket_s * 1_000_000)
        if width <= 0:
            raise ValueError(f"bucket_s must be positive, got {bucket_s}")
        start_us = origin_us + (start_us - origin_us) // width * width
        end_us = origin_us + -((origin_us - end_us) // width) * width
        minutes_fit = width % US_PER_MINUTE == 0 and origin_us % US_PER_MINUTE == 0
        if source == "rollup" and not minutes_fit:
            raise ValueError("reading_1m serves only whole-minute buckets on a minute-aligned origin")
        if source == "raw" or not minutes_fit:
            bucket = bucket_sql(backend, width, sql.Identifier("time"), origin_us)
            query, table = _RAW_BUCKETS.format(bucket=bucket, usable=_USABLE), "reading"
        elif width == US_PER_MINUTE:
            query, table = _MINUTES, "reading_1m"
        else:
            bucket = bucket_sql(backend, width, sql.Identifier("bucket"), origin_us)
            query, table = _MINUTE_BUCKETS.format(bucket=bucket, minutes=_MINUTE_ROWS), "reading_1m"
    params = {"ids": ids, "start": to_datetime(start_us), "end": to_datetime(end_us)}
    cols = await _fetch(conn, query, params, _HISTORY_COLUMNS, "history")
    return History(**cols, source=table)


async def latest(conn: Conn, tag_ids: Sequence[int] | np.ndarray) -> Latest:
    """The newest stored reading of each of ``tag_ids`` (database ids)."""
    query = sql.SQL("SELECT tag_id, time, value, quality FROM tag_latest WHERE tag_id = ANY(%(ids)s)")
    columns = (("tag_id", "int4"), ("time", "timestamptz"), ("value", "float8"), ("quality", "int2"))
    cols = await _fetch(
        conn, query, {"ids": [int(i) for i in np.asarray(tag_ids).ravel()]}, columns, "latest"
    )
    return Latest(**cols)


def raw_history(
    plant: Plant,
    keys: Sequence[str] | None,
    start_us: int | None,
    end_us: int | None,
    *,
    dsn: str | None = None,
) -> list[tuple[int, str, float, int]]:
    """Blocking adapter for the CLI (export, replay): raw readings in [start_us, end_us) as
    (ts_us, key, value, quality), oldest first (ties by tag id), any quality (a BAD reading's
    value as stored, usually NaN). ``keys=None`` means every tag of ``plant`` the historian
    knows; open ends mean unbounded. A key in ``keys`` the historian's tag table does not hold
    raises StorageError naming it, rather than reading as "no history". The database is
    ``dsn``, else the plant's storage settings or $DATABASE_URL.
    """
    from storage.embedded import configured_dsn  # the CLI path only

    dsn = dsn or configured_dsn(plant.settings.storage)
    if not dsn:
        raise DatabaseUnavailable("no database configured: set DATABASE_URL or settings.storage.dsn")
    wanted = list(dict.fromkeys(keys)) if keys is not None else [t.key for t in plant.tags()]
    lo = _MIN_US if start_us is None else start_us
    hi = _MAX_US if end_us is None else end_us

    async def run() -> list[tuple[int, str, float, int]]:
        async with await connect(dsn, application_name="hazardwatch-cli") as conn:
            with translate_errors("look up tag ids"):
                cur = await conn.execute("SELECT id, key FROM tag WHERE key = ANY(%s)", [wanted])
                key_of = {int(i): k for i, k in await cur.fetchall()}
            if keys is not None and len(key_of) < len(wanted):
                found = set(key_of.values())
                missing = ", ".join(k for k in wanted if k not in found)
                raise StorageError(
                    f"tag key(s) not in the historian: {missing} (run `hazardwatch db sync` for this plant)"
                )
            h = await history(conn, sorted(key_of), lo, hi)
        order = np.lexsort((h.tag_id, h.time))
        return [
            (int(h.time[i]), key_of[int(h.tag_id[i])], float(h.last[i]), int(h.quality[i])) for i in order
        ]

    return asyncio.run(run())


_MIN_US = -2_208_988_800_000_000  # 1900-01-01: an open start, still a valid timestamptz here
_MAX_US = 7_258_118_400_000_000  # 2200-01-01
_SEND = {"int2": ("int2send", ">i2"), "int4": ("int4send", ">i4"), "int8": ("int8send", ">i8"),
         "float8": ("float8send", ">f8"), "timestamptz": ("timestamptz_send", ">i8")}  # fmt: skip
_NATIVE = {
    "tag_id": np.int32,
    "time": np.int64,
    "quality": np.uint8,
    "count": np.int64,
    "bad_count": np.int64,
}


async def _fetch(
    conn: Conn,
    inner: sql.Composable,
    params: dict[str, object],
    columns: Sequence[tuple[str, str]],
    what: str,
) -> dict[str, np.ndarray]:
    """Run ``inner`` and return its columns as arrays sorted by (tag_id, time).

    Each column travels as one bytea of binary send() values: one row over the wire
    instead of one per reading, and no Python object per value. All aggregates of one
    query see input rows in the same order, so the columns stay aligned.
    """
    names = [f"c{i}" for i in range(len(columns))]
    aggs = sql.SQL(", ").join(
        sql.SQL("string_agg({}({}), '')").format(sql.SQL(_SEND[t][0]), sql.Identifier(n))
        for n, (_, t) in zip(names, columns, strict=True)
    )
    query = sql.SQL("SELECT {} FROM ({}) AS s ({})").format(
        aggs, inner, sql.SQL(", ").join(map(sql.Identifier, names))
    )
    with translate_errors(what):
        async with conn.cursor(binary=True) as cur:
            await cur.execute(query, params)
            row = await cur.fetchone()
    out: dict[str, np.ndarray] = {}
    for (name, pgtype), blob in zip(columns, row or (), strict=True):
        arr = np.frombuffer(blob or b"", _SEND[pgtype][1])
        if pgtype == "timestamptz":
            arr = arr + PG_EPOCH_OFFSET_US
        out[name] = arr.astype(_NATIVE.get(name, np.float64))
    order = np.lexsort((out["time"], out["tag_id"]))
    return {k: v[order] for k, v in out.items()}
