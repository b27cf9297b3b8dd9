"""Readings for the API's tests: written through the real BatchWriter (reading, reading_1m,
tag_latest), and the check that a foreign id's 404 is an unknown id's 404."""

from __future__ import annotations

from datetime import datetime

import httpx
import numpy as np
import psycopg

from core.batch import ReadingBatch
from storage.writer import BatchWriter

MIN_US = 60_000_000
S_US = 1_000_000


async def tag_ids(dsn: str) -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute("SELECT key, id FROM tag")
        return {k: int(i) for k, i in await cur.fetchall()}


async def write(dsn: str, rows: list[tuple[str, int, float, int]]) -> None:
    """Readings (key, time µs, value, quality) through the real writer (reading, reading_1m,
    tag_latest); closing it writes the open minutes."""
    ids = await tag_ids(dsn)
    keys = sorted(ids)
    index = {k: i for i, k in enumerate(keys)}
    writer = await BatchWriter.connect(dsn, np.array([ids[k] for k in keys], dtype=np.int32))
    try:
        await writer.write(
            ReadingBatch.from_arrays(
                np.array([index[r[0]] for r in rows], dtype=np.int32),
                np.array([r[1] for r in rows], dtype=np.int64),
                np.array([r[2] for r in rows], dtype=np.float64),
                np.array([r[3] for r in rows], dtype=np.uint8),
            )
        )
    finally:
        await writer.close()


def minute_floor(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def us(t: datetime) -> int:
    return int(t.timestamp()) * S_US + t.microsecond


def not_found_like_unknown(a: httpx.Response, b: httpx.Response, foreign: str, unknown: str) -> None:
    """Two 404s that differ only by the id asked for."""
    assert a.status_code == b.status_code == 404, (a.text, b.text)
    assert a.text.replace(foreign, "X") == b.text.replace(unknown, "X")
    assert {k: v for k, v in a.headers.items() if k != "content-length"} == {
        k: v for k, v in b.headers.items() if k != "content-length"
    }
