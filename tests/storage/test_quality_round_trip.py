"""Every quality byte survives writer -> ``reading`` -> ``tag_latest`` -> ``hazardwatch export``.

A BAD row keeps its substatus even without a value (a lost connection must read
BAD|COMM_FAILURE in history, not plain BAD); only a GOOD or UNCERTAIN row that carries NaN
or ±inf is downgraded, to plain BAD, so it never reaches a rollup's min/max/sum.
"""

from __future__ import annotations

import asyncio
import csv
import math
from pathlib import Path

import numpy as np
import psycopg
from typer.testing import CliRunner

from core.clock import SystemClock, to_datetime
from core.config import load_plant
from core.quality import Quality
from hazardwatch.cli import app
from storage.registry_sync import sync_registry
from storage.writer import BatchWriter
from tests.storage.helpers import T0, S, batch

PLANT = Path(__file__).parent / "data" / "plant.yaml"
KEY = "SY.V1.LT1"
CODES = [int(q) for q in Quality] + [0x80, 0x83, 0x1B]  # undefined major, limit bits kept as stored


def expected(value: float, quality: int) -> int:
    usable = quality & 0x40 != 0
    return int(Quality.BAD) if usable and not math.isfinite(value) else quality


CASES = [(v, q) for q in CODES for v in (21.5, math.nan, math.inf)]


Row = tuple[int, float, int]  # ts µs, value, quality


async def write_and_read_latest(dsn: str) -> tuple[list[Row], list[Row]]:
    """Write the cases one row at a time (one second apart); ``tag_latest`` after each, and ``reading``."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        report = await sync_registry(conn, load_plant(PLANT), now_us=SystemClock().now_us())
    tag_id = report.tag_ids[KEY]
    db_ids = np.array([tag_id], dtype=np.int32)
    latest = []
    writer = await BatchWriter.connect(dsn, db_ids)
    try:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            for i, (value, quality) in enumerate(CASES):
                await writer.write(batch([(0, T0 + i * S, value, quality)]))
                cur = await conn.execute(
                    "SELECT (extract(epoch FROM time) * 1e6)::int8, value, quality FROM tag_latest"
                    " WHERE tag_id = %s",
                    [tag_id],
                )
                row = await cur.fetchone()
                assert row is not None
                latest.append((int(row[0]), float(row[1]), int(row[2])))
            cur = await conn.execute(
                "SELECT (extract(epoch FROM time) * 1e6)::int8, value, quality FROM reading"
                " WHERE tag_id = %s ORDER BY time",
                [tag_id],
            )
            reading = [(int(t), float(v), int(q)) for t, v, q in await cur.fetchall()]
    finally:
        await writer.close()
    return latest, reading


def same_value(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def test_every_quality_code_round_trips(backend: str, tmp_path: Path) -> None:
    latest, reading = asyncio.run(write_and_read_latest(backend))
    want = [(T0 + i * S, v, expected(v, q)) for i, (v, q) in enumerate(CASES)]

    assert len(reading) == len(want)
    for got, w in zip(reading, want, strict=True):
        assert got[0] == w[0] and same_value(got[1], w[1]) and got[2] == w[2], (got, w)
    for got, w in zip(latest, want, strict=True):
        assert got[0] == w[0] and same_value(got[1], w[1]) and got[2] == w[2], (got, w)

    out = tmp_path / "history.csv"
    start = to_datetime(T0).isoformat()
    end = to_datetime(T0 + len(CASES) * S).isoformat()
    result = CliRunner().invoke(
        app,
        ["export", "--start", start, "--end", end, "--tags", KEY, "--out", str(out),
         "--config", str(PLANT), "--dsn", backend],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with out.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(want)
    for row, (_, value, quality) in zip(rows, want, strict=True):
        assert row["tag"] == KEY
        assert int(row["quality"]) == quality, (row, quality)
        assert same_value(float(row["value"]), value)
    by_quality = {int(r["quality"]) for r in rows if math.isnan(float(r["value"]))}
    assert int(Quality.BAD_COMM_FAILURE) in by_quality and int(Quality.BAD_SENSOR_FAILURE) in by_quality
