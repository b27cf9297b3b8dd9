"""Minute rollups: numpy partials vs a scalar oracle, and reading_1m vs SQL over raw rows."""

from __future__ import annotations

import asyncio
import math
import random

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.batch import ReadingBatch
from core.quality import Quality
from storage.rollup import US_PER_MINUTE, prepare
from storage.writer import BatchWriter
from tests.storage.helpers import DB_IDS, T0, S

MINUTE0 = T0 - T0 % US_PER_MINUTE
QUALITIES = [int(q) for q in (Quality.GOOD, Quality.UNCERTAIN, Quality.BAD, Quality.BAD_COMM_FAILURE)] + [
    0x80
]

rows_st = st.lists(
    st.tuples(
        st.integers(0, 5),  # dense tag index
        st.integers(-90, 240).map(lambda s: MINUTE0 + s * S),  # a few minutes, some before MINUTE0
        st.one_of(st.floats(-1e6, 1e6), st.sampled_from([math.nan, math.inf, -math.inf])),
        st.sampled_from(QUALITIES),
    ),
    min_size=1,
    max_size=80,
)


def oracle(rows: list[tuple[int, int, float, int]]) -> dict[tuple[int, int], tuple[object, ...]]:
    """Scalar reference: (tag, minute) -> (min, max, sum, count, bad_count, last_ts, last_v, last_q)."""
    groups: dict[tuple[int, int], list[tuple[int, float, int]]] = {}
    for tag, ts, v, q in rows:
        q = q if math.isfinite(v) or not q & 0x40 else 0  # a BAD row keeps its substatus
        groups.setdefault((tag, ts // US_PER_MINUTE * US_PER_MINUTE), []).append((ts, v, q))
    out: dict[tuple[int, int], tuple[object, ...]] = {}
    for key, g in groups.items():
        usable = [v for _, v, q in g if q & 0x40]
        last = max(g, key=lambda r: r[0])
        out[key] = (
            min(usable) if usable else None,
            max(usable) if usable else None,
            sum(usable),
            len(usable),
            len(g) - len(usable),
            *last,
        )
    return out


@given(rows_st)
def test_numpy_partials_match_scalar_oracle(rows: list[tuple[int, int, float, int]]) -> None:
    # Unique (tag, ts) as the fast path sees it; duplicates never reach these partials.
    rows = list({(t, ts): (t, ts, v, q) for t, ts, v, q in rows}.values())
    _, p = prepare(ReadingBatch.from_rows(rows))
    got = {}
    for i in range(len(p)):
        got[int(p.tag_id[i]), int(p.bucket[i])] = (
            None if math.isnan(p.min[i]) else float(p.min[i]),
            None if math.isnan(p.max[i]) else float(p.max[i]),
            float(p.sum[i]),
            int(p.count[i]),
            int(p.bad_count[i]),
            int(p.last_time[i]),
            float(p.last_value[i]),
            int(p.last_quality[i]),
        )
    want = oracle(rows)
    assert got.keys() == want.keys()
    for key, g in got.items():
        w = want[key]
        assert g[:2] == w[:2] and g[3:5] == w[3:5] and g[5] == w[5] and g[7] == w[7]
        assert math.isclose(g[2], w[2], rel_tol=1e-9, abs_tol=1e-6)  # type: ignore[arg-type]
        assert g[6] == w[6] or (math.isnan(g[6]) and math.isnan(w[6]))  # type: ignore[arg-type]
    newest = {int(t) for t, last in zip(p.tag_id, p.tag_last, strict=True) if last}
    assert newest == {t for t, _ in want}


# reading_1m recomputed from raw rows with the definition in storage/rollup.py.
ORACLE_SQL = """
SELECT tag_id, (extract(epoch FROM date_bin('1 minute', time, TIMESTAMPTZ '1970-01-01+00')) * 1e6)::int8,
       min(value) FILTER (WHERE quality & 64 <> 0), max(value) FILTER (WHERE quality & 64 <> 0),
       coalesce(sum(value) FILTER (WHERE quality & 64 <> 0), 0),
       count(*) FILTER (WHERE quality & 64 <> 0), count(*) FILTER (WHERE quality & 64 = 0),
       (extract(epoch FROM max(time)) * 1e6)::int8,
       (array_agg(value ORDER BY time DESC))[1], (array_agg(quality ORDER BY time DESC))[1]
FROM reading GROUP BY 1, 2 ORDER BY 1, 2
"""
ROLLUP_SQL = """
SELECT tag_id, (extract(epoch FROM bucket) * 1e6)::int8, min, max, sum, count, bad_count,
       (extract(epoch FROM last_time) * 1e6)::int8, last_value, last_quality
FROM reading_1m ORDER BY 1, 2
"""


async def write_interleaved(
    dsn: str, rows: list[tuple[int, int, float, int]], seed: int, crash_after: int | None = None
) -> None:
    """Write ``rows`` in random parts, some replayed, in random order; with ``crash_after``,
    kill the writer's session after that many parts (its open minutes lost from memory)
    and go on with a new writer, which must recover them."""
    rng = random.Random(seed)
    cuts = (
        sorted(rng.sample(range(1, len(rows)), min(len(rows) - 1, rng.randint(0, 6))))
        if len(rows) > 1
        else []
    )
    parts = [rows[a:b] for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True)]
    parts += rng.sample(parts, k=min(2, len(parts)))  # replays: must change nothing
    rng.shuffle(parts)  # late and out-of-order arrival
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("TRUNCATE reading, reading_1m, tag_latest")
    writer = await BatchWriter.connect(dsn, DB_IDS)
    try:
        for i, part in enumerate(parts):
            if i == crash_after:
                async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                    await conn.execute("SELECT pg_terminate_backend(%s, 5000)", [writer.server_pid])
                await writer.close()
                writer = await BatchWriter.connect(dsn, DB_IDS)
                assert writer.owner
            await writer.write(ReadingBatch.from_rows(part))
    finally:
        await writer.close()


async def fetch(dsn: str, query: str) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(query.encode())
        return list(await cur.fetchall())


def same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6) or (math.isnan(a) and math.isnan(b))
    return a == b


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_st, seed=st.integers(0, 2**32 - 1))
def test_reading_1m_equals_sql_over_raw_rows(
    backend: str, rows: list[tuple[int, int, float, int]], seed: int
) -> None:
    asyncio.run(write_interleaved(backend, rows, seed))
    want = asyncio.run(fetch(backend, ORACLE_SQL))
    got = asyncio.run(fetch(backend, ROLLUP_SQL))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert all(same(x, y) for x, y in zip(g, w, strict=True)), (g, w)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_st, seed=st.integers(0, 2**32 - 1), crash_after=st.integers(1, 8))
def test_reading_1m_equals_sql_over_raw_rows_after_a_crash(
    backend: str, rows: list[tuple[int, int, float, int]], seed: int, crash_after: int
) -> None:
    asyncio.run(write_interleaved(backend, rows, seed, crash_after))
    want = asyncio.run(fetch(backend, ORACLE_SQL))
    got = asyncio.run(fetch(backend, ROLLUP_SQL))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert all(same(x, y) for x, y in zip(g, w, strict=True)), (g, w)
