"""The API benchmark's world: a generated plant of ``ENTERPRISES`` enterprises, a scratch database
with its registry, users, 30 days of one tag's minute rollups, recent raw readings of every tag,
and ``hazardwatch api`` serving it from a child process on loopback.

Data is what a running plant leaves behind: raw readings (quality GOOD) for the last
``RAW_MINUTES`` minutes of every tag, their closed minutes in reading_1m, the current minute
listed open in reading_1m_open (as a writer holding it would), tag_latest; plus the probe tag's
30 days of reading_1m (43,200 rows), which is what the history benchmark reads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from bench.config import REFERENCE, _enterprise
from storage.db import Conn
from storage.partitions import ensure_partitions, partition_days
from storage.pgcopy import encode

__all__ = [
    "ENTERPRISES",
    "HISTORY_DAYS",
    "PASSWORD",
    "RAW_MINUTES",
    "TAGS_PER_ENTERPRISE",
    "Loaded",
    "Server",
    "copy_binary",
    "load_readings",
    "write_plant",
]

ENTERPRISES = 100
TAGS_PER_ENTERPRISE = 100  # 10,000 tags: a city platform's order of magnitude
HISTORY_DAYS = 30
RAW_MINUTES = 5  # of raw readings for every tag at 1 Hz (3,000,000 rows at 10,000 tags)
PASSWORD = "bench password 0123"
SECRET = "bench-secret-bench-secret-bench-secret-01"
MINUTE_US = 60_000_000
_GOOD = 192

_READING = (("time", "timestamptz"), ("tag_id", "int4"), ("value", "float8"), ("quality", "int2"))
_ROLLUP = (
    ("tag_id", "int4"), ("bucket", "timestamptz"), ("min", "float8"), ("max", "float8"), ("sum", "float8"),
    ("count", "int4"), ("bad_count", "int4"), ("last_time", "timestamptz"), ("last_value", "float8"),
    ("last_quality", "int2"),
)  # fmt: skip


def write_plant(folder: Path) -> Path:
    """``folder``/plant.yaml: ``ENTERPRISES`` enterprises of bench.config's generated kind, each
    with ``TAGS_PER_ENTERPRISE`` tags (one hazard source); API tokens live long enough for a run."""
    (folder / "enterprises").mkdir(parents=True, exist_ok=True)
    includes = []
    for e in range(ENTERPRISES):
        name = f"E{e:03d}.yaml"
        text = _enterprise(e, e * TAGS_PER_ENTERPRISE, TAGS_PER_ENTERPRISE)
        (folder / "enterprises" / name).write_text(text, encoding="utf-8")
        includes.append(f"  - !include enterprises/{name}")
    plant = folder / "plant.yaml"
    plant.write_text(
        "\n".join(
            [
                f"name: 接口基准 {ENTERPRISES} 家企业",
                f"reference: {REFERENCE}",
                "settings:",
                f"  data_dir: {folder / 'var'}",
                "  api: {access_token_min: 240}",
                "enterprises:",
                *includes,
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    return plant


@dataclass(frozen=True)
class Loaded:
    raw_rows: int
    rollup_rows: int
    probe_rows: int
    seconds: float
    now_us: int  # when the data ends (the history query's end)


async def copy_binary(
    conn: Conn, table: str, columns: tuple[tuple[str, str], ...], values: dict[str, np.ndarray]
) -> None:
    """``values`` (column name -> array, ``columns`` naming each's type) into ``table`` by one
    binary COPY, written in 8 MiB pieces; the API and Grafana benchmarks both load this way."""
    names = ", ".join(f'"{c}"' for c, _ in columns)
    data = encode(columns, values)
    async with (
        conn.cursor() as cur,
        cur.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)".encode()) as cp,
    ):
        step = 8 << 20
        for i in range(0, len(data), step):
            await cp.write(data[i : i + step])


async def load_readings(conn: Conn, tag_ids: np.ndarray, probe_id: int, now_us: int) -> Loaded:
    """Readings as a running plant leaves them (module docstring). ``conn`` autocommit."""
    started = time.perf_counter()
    current = now_us // MINUTE_US * MINUTE_US  # the open minute
    first_raw = current - RAW_MINUTES * MINUTE_US
    probe_first = current - HISTORY_DAYS * 1440 * MINUTE_US
    await ensure_partitions(conn, partition_days(np.array([probe_first, now_us], np.int64)))
    # every day in between too (reading_1m is monthly, reading daily; both must exist)
    await ensure_partitions(conn, range(probe_first // (1440 * MINUTE_US), now_us // (1440 * MINUTE_US) + 1))
    rng = np.random.default_rng(13)
    ids = np.asarray(tag_ids, np.int32)
    # raw: every tag at 1 Hz from first_raw to now, in chunks of one minute
    raw = 0
    rollups = []
    for m0 in range(first_raw, now_us, MINUTE_US):
        secs = np.arange(m0, min(m0 + MINUTE_US, now_us), 1_000_000, dtype=np.int64)
        t = np.repeat(secs, len(ids))
        tag = np.tile(ids, len(secs))
        v = 5.0 + rng.standard_normal(len(t))
        await copy_binary(conn, "reading", _READING, {"time": t, "tag_id": tag, "value": v,
                                                      "quality": np.full(len(t), _GOOD, np.int16)})  # fmt: skip
        raw += len(t)
        if m0 < current:  # a closed minute: its rollup is in reading_1m (the probe's come below)
            grid = v.reshape(len(secs), len(ids))
            keep = ids != probe_id
            rollups.append(
                {
                    "tag_id": ids[keep], "bucket": np.full(keep.sum(), m0, np.int64),
                    "min": grid.min(0)[keep], "max": grid.max(0)[keep], "sum": grid.sum(0)[keep],
                    "count": np.full(keep.sum(), len(secs), np.int32), "bad_count": np.zeros(keep.sum(), np.int32),
                    "last_time": np.full(keep.sum(), secs[-1], np.int64), "last_value": grid[-1][keep],
                    "last_quality": np.full(keep.sum(), _GOOD, np.int16),
                }
            )  # fmt: skip
    rolled = 0
    for r in rollups:
        await copy_binary(conn, "reading_1m", _ROLLUP, r)
        rolled += len(r["tag_id"])
    # the probe: one row per minute for HISTORY_DAYS, a slow daily wave with noise
    buckets = np.arange(probe_first, current, MINUTE_US, dtype=np.int64)
    n = len(buckets)
    phase = (buckets % (1440 * MINUTE_US)) / (1440 * MINUTE_US) * 2 * np.pi
    avg = 5.0 + 2.0 * np.sin(phase) + 0.1 * rng.standard_normal(n)
    probe: dict[str, np.ndarray] = {
        "tag_id": np.full(n, probe_id, np.int32), "bucket": buckets, "min": avg - 0.3, "max": avg + 0.3,
        "sum": avg * 60, "count": np.full(n, 60, np.int32), "bad_count": np.zeros(n, np.int32),
        "last_time": buckets + 59_000_000, "last_value": avg, "last_quality": np.full(n, _GOOD, np.int16),
    }  # fmt: skip
    await copy_binary(conn, "reading_1m", _ROLLUP, probe)
    await conn.execute(
        "INSERT INTO reading_1m_open (bucket, tag_lo, tag_hi) VALUES (to_timestamp(%s / 1e6), %s, %s)",
        [current, int(ids.min()), int(ids.max())],
    )
    await conn.execute(
        """INSERT INTO tag_latest (tag_id, time, value, quality)
           SELECT DISTINCT ON (tag_id) tag_id, time, value, quality FROM reading
           WHERE time >= to_timestamp(%s / 1e6) ORDER BY tag_id, time DESC""",
        [current],
    )
    await conn.execute("VACUUM ANALYZE reading, reading_1m, reading_1m_open, tag_latest")
    return Loaded(raw, rolled, n, time.perf_counter() - started, now_us)


class Server:
    """``hazardwatch api PLANT --dsn DSN`` in a child process on loopback, log to a file."""

    def __init__(self, plant_file: Path, dsn: str, port: int, log_file: Path) -> None:
        self.base = f"http://127.0.0.1:{port}"
        exe = Path(sys.executable).with_name("hazardwatch")
        env = {**os.environ, "HAZARDWATCH_JWT_SECRET": SECRET}
        self.log_file = log_file
        self._log = log_file.open("wb")
        self.proc = subprocess.Popen(
            [str(exe), "api", str(plant_file), "--dsn", dsn, "--port", str(port), "--log-level", "WARNING"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"hazardwatch api exited: {self.log_file.read_text(errors='replace')[-2000:]}"
                )
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"hazardwatch api not ready after {timeout_s:g} s")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
