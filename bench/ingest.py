"""Ingest benchmark: BatchWriter versus raw psycopg binary COPY of the same rows.

1M readings over 10k tags, on each backend, in the same run: raw COPY into a bare heap
table (no key), raw COPY into a table keyed and partitioned exactly like ``reading`` (what
the database itself costs for the unique key the design requires), and BatchWriter (sort,
COPY, the tag-minutes that close, tag_latest when due, one transaction per batch, and the
final flush of the still-open minutes inside the timed region). Every method commits once
per batch; the raw COPY payload is built with the same numpy encoder, so the comparison
isolates the database-side work. At least five runs, order rotated; every figure is
reported as median (min–max), and ratios are computed per run (each run measures all three
methods back to back) before taking their spread.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench.report import spread
from core.batch import ReadingBatch
from storage import pgcopy
from storage.db import Backend
from storage.migrate import upgrade
from storage.partitions import DAY_US, ensure_partitions
from storage.writer import LATEST_INTERVAL_S, LATEST_MAX_LAG_S, READING_COLUMNS, BatchWriter

__all__ = ["main"]

SERVERS = {
    Backend.POSTGRES: os.environ.get("HW_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
    Backend.TIMESCALEDB: os.environ.get("HW_TSDB_DSN", "postgresql://postgres@127.0.0.1:5433/postgres"),
}
N_TAGS = 10_000
N_SECONDS = 100  # 1 Hz: N_TAGS * N_SECONDS = 1M readings
# One scan of every tag (1 s, the target's size) and 10 s coalesced by group commit. The
# 200,000-row size (SpoolingWriter's cap per transaction) is no longer run: it met the
# target already at 100,000 rows and costs the same time again as the two sizes above.
BATCH_ROWS = (10_000, 100_000)
REPEATS = max(5, int(os.environ.get("HW_BENCH_REPEATS", "5")))
T0 = 1_790_035_200_000_000  # 2026-09-22 00:00:00 UTC: whole run inside one day
TARGET = 0.8
COLUMNS = (
    "time timestamptz NOT NULL, tag_id integer NOT NULL, value float8 NOT NULL, quality smallint NOT NULL"
)


@dataclass
class Result:
    backend: Backend
    server: str
    batch_rows: int
    rates: dict[str, list[float]] = field(default_factory=dict)  # method -> rows/s per run
    phases: dict[str, list[float]] = field(default_factory=dict)  # writer phase -> seconds per run

    def ratio(self, method: str, base: str) -> list[float]:
        """``method`` / ``base`` per run (both measured in the same run)."""
        return [m / b for m, b in zip(self.rates[method], self.rates[base], strict=True)]

    def spread(self, method: str) -> str:
        return spread(self.rates[method])


def dataset() -> tuple[ReadingBatch, np.ndarray]:
    """Every tag once per second, tags in arrival order; 0.1 % BAD. Plus dense -> db ids."""
    rng = np.random.default_rng(20260922)
    n = N_TAGS * N_SECONDS
    tag = np.tile(np.arange(N_TAGS, dtype=np.int32), N_SECONDS)
    ts = np.repeat(T0 + np.arange(N_SECONDS, dtype=np.int64) * 1_000_000, N_TAGS)
    quality = np.where(rng.random(n) < 0.001, 0, 0xC0).astype(np.uint8)
    batch = ReadingBatch(tag, ts, rng.normal(50.0, 10.0, n), quality)
    return batch, np.arange(1, N_TAGS + 1, dtype=np.int32)


async def _setup(dsn: str, backend: Backend) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await upgrade(conn)
        await conn.execute(f"CREATE TABLE bench_bare ({COLUMNS})".encode())
        keyed = f"CREATE TABLE bench_keyed ({COLUMNS}, PRIMARY KEY (tag_id, time))"
        if backend is Backend.TIMESCALEDB:
            await conn.execute(keyed.encode())
            await conn.execute(
                "SELECT create_hypertable('bench_keyed', 'time', chunk_time_interval => INTERVAL '1 day', "
                "create_default_indexes => false)"
            )
        else:
            day = T0 // DAY_US
            await conn.execute(f"{keyed} PARTITION BY RANGE (time)".encode())
            await conn.execute(
                "CREATE TABLE bench_keyed_p PARTITION OF bench_keyed FOR VALUES FROM "
                f"(to_timestamp({day * 86400})) TO (to_timestamp({(day + 1) * 86400}))".encode()
            )
            await ensure_partitions(conn, [day])  # the writer's partition, outside the timing


async def _reset(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(
            "TRUNCATE bench_bare, bench_keyed, reading, reading_1m, reading_1m_open, tag_latest"
        )
        await conn.execute("CHECKPOINT")  # every run starts with clean buffers to flush


async def _raw_copy(dsn: str, table: str, data: ReadingBatch, db_ids: np.ndarray, rows: int) -> float:
    """A client that already holds database ids and COPYs each batch as it comes."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        copy_sql = f"COPY {table} (time, tag_id, value, quality) FROM STDIN (FORMAT BINARY)".encode()
        started = time.perf_counter()
        for i in range(0, len(data), rows):
            part = slice(i, i + rows)
            payload = pgcopy.encode(
                READING_COLUMNS,
                {"time": data.ts[part], "tag_id": db_ids[data.tag[part]], "value": data.value[part],
                 "quality": data.quality[part]},
            )  # fmt: skip
            async with conn.cursor() as cur, cur.copy(copy_sql) as cp:
                await cp.write(payload)
            await conn.commit()
        return len(data) / (time.perf_counter() - started)


async def _writer(dsn: str, data: ReadingBatch, db_ids: np.ndarray, rows: int, result: Result) -> float:
    writer = await BatchWriter.connect(dsn, db_ids)
    try:
        assert writer.owner, "another writer holds the rollups of the bench database"
        parts = [data.select(np.arange(i, min(i + rows, len(data)))) for i in range(0, len(data), rows)]
        started = time.perf_counter()
        for part in parts:
            await writer.write(part)
        await writer.flush()  # the still-open minutes and held-back latest values are its work too
        elapsed = time.perf_counter() - started
        for phase, seconds in writer.phase_seconds.items():
            result.phases.setdefault(phase, []).append(seconds)
    finally:
        await writer.close()
    return len(data) / elapsed


async def _server(dsn: str) -> str:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(
            "SELECT current_setting('server_version'), "
            "(SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'), "
            "current_setting('shared_buffers'), current_setting('synchronous_commit')"
        )
        version, tsdb, shared_buffers, sync_commit = await cur.fetchone() or ("?", None, "?", "?")
    name = f"PostgreSQL {version}" + (f" + TimescaleDB {tsdb}" if tsdb else "")
    return f"{name} (shared_buffers {shared_buffers}, synchronous_commit {sync_commit})"


def _load() -> str:
    try:
        return " / ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


async def run_backend(backend: Backend, data: ReadingBatch, db_ids: np.ndarray) -> list[Result]:
    admin = SERVERS[backend]
    name = f"hw_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    dsn = make_conninfo(admin, dbname=name)
    try:
        await _setup(dsn, backend)
        server = await _server(dsn)
        results = []
        for rows in BATCH_ROWS:
            result = Result(backend, server, rows)
            methods: dict[str, Callable[[], Awaitable[float]]] = {
                "bare": functools.partial(_raw_copy, dsn, "bench_bare", data, db_ids, rows),
                "keyed": functools.partial(_raw_copy, dsn, "bench_keyed", data, db_ids, rows),
                "writer": functools.partial(_writer, dsn, data, db_ids, rows, result),
            }
            order = list(methods)
            for rep in range(REPEATS):
                for method in order[rep % 3 :] + order[: rep % 3]:  # rotate: no method always goes first
                    await _reset(dsn)
                    result.rates.setdefault(method, []).append(await methods[method]())
            results.append(result)
            print(f"  {backend.value} {rows} rows/batch: " + ", ".join(
                f"{m} {result.spread(m)} rows/s" for m in methods)
                + f"; writer/keyed {spread(result.ratio('writer', 'keyed'), '{:.2f}')}", flush=True)  # fmt: skip
        return results
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())


def render(results: list[Result]) -> str:
    lines = [
        "## Ingest: BatchWriter vs raw binary COPY",
        "",
        f"{N_TAGS * N_SECONDS:,} readings ({N_TAGS:,} tags × {N_SECONDS} s at 1 Hz), one transaction per "
        f"batch, {REPEATS} runs per figure (method order rotated), fresh tables and a CHECKPOINT before "
        "each run. Every figure: median (min–max, n runs); ratios are taken per run, then spread.",
        "",
        "- **raw COPY, bare**: psycopg binary COPY into a heap table with no key or index.",
        "- **raw COPY, keyed**: the same COPY into a table laid out like `reading`: unique "
        "(tag_id, time), daily partitions (PostgreSQL) or 1-day chunks (TimescaleDB).",
        "- **BatchWriter**: `storage.writer`: map ids, sort, COPY into `reading`; write each tag-minute "
        "to `reading_1m` once, when it closes; `tag_latest` set-based, held back at most "
        f"{LATEST_INTERVAL_S:g} s (longer only if its writes would take over ~2.5 % of the time, at most "
        f"{LATEST_MAX_LAG_S:g} s); the final flush of the open minutes is inside the timing.",
        "",
        f"Target (DESIGN.md): BatchWriter ≥ {TARGET}× raw keyed COPY at 10,000-row (one 1 Hz scan) "
        "transactions, on each backend.",
        "",
        "| backend | batch rows | raw COPY, bare (rows/s) | raw COPY, keyed (rows/s) | BatchWriter (rows/s) "
        "| BatchWriter / keyed | BatchWriter / bare |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.backend.value} | {r.batch_rows:,} | {r.spread('bare')} | {r.spread('keyed')} "
            f"| {r.spread('writer')} | {spread(r.ratio('writer', 'keyed'), '{:.2f}')} "
            f"| {spread(r.ratio('writer', 'bare'), '{:.2f}')} |"
        )
    lines += ["", "BatchWriter time by phase (seconds for all 1M rows, per run):", ""]
    lines += ["| backend | batch rows | prepare + open minutes (numpy) | COPY reading | reading_1m + "
              "reading_1m_open | tag_latest | commit |"]  # fmt: skip
    lines += ["|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        p = {k: spread(v, "{:.2f}") for k, v in r.phases.items()}
        lines.append(
            f"| {r.backend.value} | {r.batch_rows:,} | {p['prepare']} | {p['copy']} "
            f"| {p['rollup']} | {p['latest']} | {p['commit']} |"
        )
    servers = {r.backend.value: r.server for r in results}
    lines += ["", "Servers: " + "; ".join(f"{b}: {s}" for b, s in servers.items()) + "."]
    lines += [
        f"Load average (1/5/15 min) when the run ended: {_load()} (the machine was not otherwise idle)."
    ]
    lines += ["", *_reading(results)]
    return "\n".join(lines)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _reading(results: list[Result]) -> list[str]:
    """How to read the table, with this run's numbers in it."""
    key_cost = [x for r in results for x in r.ratio("keyed", "bare")]
    small = [r for r in results if r.batch_rows == min(BATCH_ROWS)]
    verdicts = []
    for r in small:
        ratios = r.ratio("writer", "keyed")
        met = _median(ratios) >= TARGET
        verdicts.append(
            f"{r.backend.value}: {spread(ratios, '{:.3f}', '×')} → **{'met' if met else 'not met'}** "
            f"(median {'≥' if met else '<'} {TARGET}×; {sum(x >= TARGET for x in ratios)} of {len(ratios)} runs ≥ {TARGET}×)"
        )
    slowest_small = min(min(r.rates["writer"]) for r in small)
    return [
        "How to read it:",
        "",
        f"- The unique (tag_id, time) key that makes re-sent batches harmless costs the database itself "
        f"most of bare-heap COPY throughput here (raw keyed / raw bare = {spread(key_cost, '{:.2f}')}), "
        "so a writer that keeps the key is bounded near the keyed rate; the target is therefore stated "
        "against raw keyed COPY.",
        "- *BatchWriter / keyed* isolates what BatchWriter adds. Its COPY phase (table above) costs about what "
        "the raw keyed COPY does (rows are sorted by (tag_id, time) first, so index insertions walk the "
        "B-tree in order; this data already arrives in that order within a scan). "
        "What it adds: numpy work per batch, one `reading_1m` write per tag-minute (when the minute closes, "
        f"once a minute at 1 Hz, plus the final flush) and at most one set-based `tag_latest` write per "
        f"{LATEST_INTERVAL_S:g} s (fewer when those writes are slow), "
        "no longer one upsert of each per batch.",
        "- The spread between runs comes from the shared machine (other work on both cores, checkpoints): "
        "the COPY phase varies by up to 2× between runs of the same code, for the raw COPY and the writer "
        "alike; hence ratios per run, and a verdict on their median.",
        f"- The slowest writer run at one 1 Hz scan per transaction stored {slowest_small:,.0f} rows/s, "
        f"{slowest_small / N_TAGS:.0f}× what {N_TAGS:,} tags at 1 Hz produce.",
        f"- Target (≥ {TARGET}× raw keyed COPY at {min(BATCH_ROWS):,}-row transactions): "
        + "; ".join(verdicts)
        + ".",
    ]


def main() -> str:
    wanted = os.environ.get("HW_BENCH_BACKENDS", "postgres,timescaledb").split(",")
    data, db_ids = dataset()
    results: list[Result] = []
    for backend in (Backend(b.strip()) for b in wanted if b.strip()):
        host = conninfo_to_dict(SERVERS[backend]).get("port", "?")
        print(f"ingest: {backend.value} (port {host}) ...", flush=True)
        results += asyncio.run(run_backend(backend, data, db_ids))
    return render(results)
