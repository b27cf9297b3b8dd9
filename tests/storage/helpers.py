"""Shared helpers for storage tests: tag-id mapping, batch builders, readers of stored rows."""

from __future__ import annotations

import numpy as np

from core.batch import ReadingBatch
from core.quality import Quality
from storage.db import Conn

# Tags in these tests are database ids 1..N; dense index i maps to id i + 1.
N_TAGS = 64
DB_IDS = np.arange(1, N_TAGS + 1, dtype=np.int32)

T0 = 1_790_000_000_000_000  # 2026-09-21 14:13:20 UTC, in µs
S = 1_000_000
GOOD = int(Quality.GOOD)

Row = tuple[int, int, float, int]


def batch(rows: list[Row]) -> ReadingBatch:
    return ReadingBatch.from_rows(rows)


async def stored(conn: Conn) -> list[Row]:
    """All raw readings as (tag_id, ts_us, value, quality), sorted."""
    cur = await conn.execute(
        "SELECT tag_id, (extract(epoch FROM time) * 1e6)::int8, value, quality FROM reading ORDER BY 1, 2"
    )
    return [(int(t), int(ts), float(v), int(q)) for t, ts, v, q in await cur.fetchall()]


async def latest(conn: Conn) -> dict[int, tuple[int, float, int]]:
    cur = await conn.execute(
        "SELECT tag_id, (extract(epoch FROM time) * 1e6)::int8, value, quality FROM tag_latest"
    )
    return {int(t): (int(ts), float(v), int(q)) for t, ts, v, q in await cur.fetchall()}
