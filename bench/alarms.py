"""Benchmark: a flood of condition edges through the alarm service into PostgreSQL (issue 11).

The ``AlarmService`` that ``hazardwatch run`` runs (manager, fsynced local alarm log, database
writer), in a process set up as ``run`` sets itself up (the loaded plant frozen out of the
cycle collector, the collector tuned for a service), is handed edges for ``DURATION_S``, a
batch every ``TICK_S``, each edge a limit rule of a generated 10,000-tag plant turning on or
off (every edge is a transition: journal, state, rule state, and an outbox row for each raise).
Two phases per run:

- flood: ``OFFERED`` edges/s; the latency from handing a batch over to its commit being stored
  in the database (p50, p99);
- capacity: ``CAPACITY_OFFERED`` edges/s, more than the service can take (the writer falls
  behind and stores several commits per transaction); the sustained rate = transitions stored /
  time from the first batch handed over to the last stored. (At ``OFFERED`` that figure cannot
  exceed the offered rate, so it says nothing about headroom.)

Baseline in the same run: the same number of journal rows per batch written with one binary
COPY into a bare table with alarm_journal's columns (what the database takes at all).
Target (DESIGN.md, issue 11): >= 10,000 transitions/s, p99 edge -> committed outbox <= 200 ms.
"""

from __future__ import annotations

import asyncio
import gc
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg
from psycopg.conninfo import make_conninfo

from alarms.model import Catalog
from alarms.service import AlarmService
from bench.config import write_plant
from bench.report import spread
from core.clock import SystemClock
from core.conditions import LIMIT_KINDS, ConditionEdges
from core.config import collector_paused, load_plant, tune_collector_for_service
from core.settings import AlarmSettings
from rules.compile import compile_rules
from storage.migrate import upgrade

__all__ = ["main"]

ADMIN = os.environ.get("HW_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
OFFERED = 10_000  # edges/s
CAPACITY_OFFERED = 25_000  # edges/s, beyond what the service takes on this kind of machine
TICK_S = 0.1
DURATION_S = 5.0
RUNS = 3
TARGET_RATE = 10_000
TARGET_P99_MS = 200.0


async def _flood(
    dsn: str, catalog: Catalog, rules: np.ndarray, log_dir: Path, offered: int
) -> tuple[float, list[float]]:
    """One phase: ``offered`` edges/s; (transitions stored/s, latencies in ms)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(
            "TRUNCATE alarm_state, alarm_journal, notification, rule_state, alarm_writer, audit_log"
        )
    svc = AlarmService(catalog, AlarmSettings(), log_dir, dsn, SystemClock())
    await svc.recover()
    svc.start()
    per_tick = int(offered * TICK_S)
    active = np.zeros(len(rules), bool)
    handed: list[tuple[int, float]] = []  # commit seq, when its batch was handed over
    stored_at: dict[int, float] = {}

    async def watch() -> None:
        while True:
            now = time.perf_counter()
            for seq, _ in handed:
                if seq <= svc.stored_seq and seq not in stored_at:
                    stored_at[seq] = now
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    start = time.perf_counter()
    ticks = round(DURATION_S / TICK_S)
    for tick in range(ticks):
        pick = np.arange(tick * per_tick, (tick + 1) * per_tick) % len(rules)
        active[pick] = ~active[pick]  # every edge a transition
        ts = np.full(per_tick, SystemClock().now_us(), np.int64)
        edges = ConditionEdges.of(
            rules[pick], active[pick], ts, np.where(active[pick], 9.0, 1.0), np.full(per_tick, 8.0),
            np.full(per_tick, 3, np.uint8),
        )  # fmt: skip
        handed_at = time.perf_counter()
        svc.edges(edges)
        handed.append((svc.manager.seq, handed_at))
        await asyncio.sleep(max(0.0, start + (tick + 1) * TICK_S - time.perf_counter()))
    async with asyncio.timeout(120):
        while len(stored_at) < len(handed):
            await asyncio.sleep(0.01)
    watcher.cancel()
    await svc.close()
    latencies = [(stored_at[seq] - at) * 1000 for seq, at in handed]
    transitions = ticks * per_tick
    return transitions / (max(stored_at.values()) - start), latencies


async def _copy_baseline(dsn: str, rows_per_batch: int, batches: int) -> float:
    """Journal-shaped rows/s with one COPY per batch into a bare table."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS bench_journal (LIKE alarm_journal)")
        await conn.execute("TRUNCATE bench_journal")
        await conn.commit()
        now = datetime.now(UTC)
        start = time.perf_counter()
        for b in range(batches):
            async with (
                conn.cursor() as cur,
                cur.copy(
                    "COPY bench_journal (seq, n, alarm_key, action, old_status, new_status, at, arrival, value, "
                    '"limit", actor) FROM STDIN'
                ) as copy,
            ):
                for n in range(rows_per_batch):
                    await copy.write_row(
                        (b, n, f"E000.V0001.LT-{n:04d}:HH", "RAISED", "normal", "unacknowledged", now, now,
                         9.0, 8.0, "engine")
                    )  # fmt: skip
            await conn.commit()
        return rows_per_batch * batches / (time.perf_counter() - start)


async def _run() -> str:
    name = f"hw_bench_alarms_{uuid.uuid4().hex[:8]}"
    threshold = gc.get_threshold()
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    dsn = make_conninfo(ADMIN, dbname=name)
    try:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await upgrade(conn)
        with tempfile.TemporaryDirectory() as tmp:
            path = write_plant(Path(tmp) / "plant", 10_000)
            with collector_paused(keep=True):  # as load_compiled_or_exit does for `run`
                plant = load_plant(path)
                ruleset = compile_rules(plant)
                catalog = Catalog(plant, ruleset)
            tune_collector_for_service()  # as `run` does before it starts
            limits = np.flatnonzero(np.isin(ruleset.kind, [int(k) for k in LIMIT_KINDS]))
            rates, flood_rates, p50, p99, base = [], [], [], [], []
            for run in range(RUNS):
                flood_rate, lat = await _flood(dsn, catalog, limits, Path(tmp) / f"log{run}", OFFERED)
                flood_rates.append(flood_rate)
                p50.append(float(np.percentile(lat, 50)))
                p99.append(float(np.percentile(lat, 99)))
                rate, _ = await _flood(dsn, catalog, limits, Path(tmp) / f"cap{run}", CAPACITY_OFFERED)
                rates.append(rate)
                base.append(await _copy_baseline(dsn, int(OFFERED * TICK_S), round(DURATION_S / TICK_S)))
                print(f"  run {run}: flood p50 {p50[-1]:.0f} ms, p99 {p99[-1]:.0f} ms; capacity {rate:,.0f} "
                      f"transitions/s; COPY baseline {base[-1]:,.0f} rows/s", flush=True)  # fmt: skip
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())
        gc.set_threshold(*threshold)
        gc.unfreeze()
    ratio = [r / b for r, b in zip(rates, base, strict=True)]
    met_rate = sorted(rates)[len(rates) // 2] >= TARGET_RATE
    met_p99 = sorted(p99)[len(p99) // 2] <= TARGET_P99_MS
    return "\n".join(
        [
            "## Alarm flood: edges through the alarm service into PostgreSQL (bench/alarms.py)",
            "",
            f"The `AlarmService` of `hazardwatch run` (manager, fsynced local alarm log, database writer), in a "
            "process set up as `run` sets itself up (loaded plant frozen out of the cycle collector, collector "
            f"tuned for a service), is handed condition edges for {DURATION_S:g} s, a batch every "
            f"{TICK_S * 1000:g} ms, each a limit rule of a generated 10,000-tag plant turning on or off (every "
            "edge a transition: journal, state, rule state, an outbox row per raise), into PostgreSQL "
            f"(127.0.0.1:5432). Flood: {OFFERED:,} edges/s; latency = a batch handed over → its commit "
            f"(outbox rows included) stored. Capacity: {CAPACITY_OFFERED:,} edges/s offered, more than it "
            "takes; sustained rate = transitions stored / time from the first batch handed over to the last "
            "stored. Baseline in the same run: the same journal rows per batch with one COPY into a bare "
            "table. Median (min–max, runs).",
            "",
            "| figure | result |",
            "|---|---|",
            f"| sustained transitions/s (capacity) | {spread(rates)} |",
            f"| flood: transitions stored/s at {OFFERED:,} offered | {spread(flood_rates)} |",
            f"| flood: latency p50 | {spread(p50, '{:.0f}', ' ms')} |",
            f"| flood: latency p99 | {spread(p99, '{:.0f}', ' ms')} |",
            f"| COPY baseline, journal rows/s | {spread(base)} |",
            f"| service / COPY baseline | {spread(ratio, '{:.2f}', '×')} |",
            "",
            f"Targets (DESIGN.md): ≥ {TARGET_RATE:,} transitions/s: **{'met' if met_rate else 'missed'}**; "
            f"p99 ≤ {TARGET_P99_MS:g} ms: **{'met' if met_p99 else 'missed'}** (medians of {RUNS} runs; load "
            f"average {os.getloadavg()[0]:.1f} at the end on {os.cpu_count()} CPUs).",
        ]
    )


def main() -> str:
    return asyncio.run(_run())
