"""Benchmark: every query of the bureau overview board (hw-bureau) as Grafana runs it (issue 14).

The queries are the board's own: ``dashboards.boards.build_boards`` for the generated plant, the
bureau board's panel targets and its ``$county`` variable query, expanded by dashboards/expand.py
as Grafana 11 expands them (``$county`` = All: every county of the plant; the datasource's 1 s
minimum interval; 1,000 data points) over a 30-day range ending now, except the panels with their
own relative time (``timeFrom: 24h``: the online-rate panels), which get the last 24 h as Grafana
gives them. Each runs on one connection logged in as the read-only role ``hazardwatch_grafana``
(migration 0010; default_transaction_read_only, 30 s statement timeout), autocommit, never
prepared (Grafana sends each refresh's text anew).

Worlds (bench/grafana_data.py), on each backend (PostgreSQL 127.0.0.1:5432, TimescaleDB :5433),
one scratch database each, dropped after:

- city: 5 enterprises in 3 counties, 14 hazard sources × 15 tags (210 tags), 30 days of minute
  rollups of every tag (≈9 M rows), raw 1 Hz readings for the last hour, ≈2,000 annunciations in
  30 days (a flood of 300, a chattering alarm), standing alarms, bypass permits;
- province: 100 enterprises in 10 counties × 10 hazard sources × 100 tags (100,000 tags), minute
  rollups of every tag for the last ``PROVINCE_MINUTES`` (not the 24 h the online panels ask for:
  that would be 144 M rows per backend), raw readings only for the current, open minute (the
  board reads none), 100,000 annunciations in 30 days.

Baselines, measured in the same rounds: the online-rate panels against ``api.online.online_rates``
(the API's own computation of the same number, over the same points and window); the alarm-state
panels against ``api.registry_views.alarm_counts`` (the API's active-alarm counts per hazard
source; the hazard source list adds ``hazard_sources``); the alarm trend against alarms/kpi.py's
annunciation query binned per interval and priority; the interlock panel against what the API's
interlock view reads (the latest values of the interlocks' tags, and the open permits); the
hazard-source count and the county variable against the API's registry listings.

Target (DESIGN.md): each bureau-overview query, 30 days, a city: p95 ≤ 200 ms. The province's
numbers are reported (no target).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql as psql
from psycopg.conninfo import make_conninfo

from bench.config import load_average
from bench.grafana_data import Loaded, Scale, load, write_plant
from bench.report import spread
from core.plant import Plant
from dashboards.boards import build_boards
from dashboards.build import panel_queries, variable_queries
from dashboards.expand import TimeRange, Variable, expand, interval_for
from storage.db import Backend
from storage.migrate import upgrade

__all__ = ["CITY", "PROVINCE", "executions", "main", "percentile", "plan_summary", "relations"]

SERVERS = {
    Backend.POSTGRES: os.environ.get("HW_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
    Backend.TIMESCALEDB: os.environ.get("HW_TSDB_DSN", "postgresql://postgres@127.0.0.1:5433/postgres"),
}
READER = "hazardwatch_grafana"
RANGE = timedelta(days=30)
MIN_INTERVAL = timedelta(seconds=1)  # the datasource's jsonData.timeInterval (provisioning, push)
TARGET_MS = 200.0
PROVINCE_MINUTES = int(os.environ.get("HW_BENCH_PROVINCE_MINUTES", "120"))
# (rounds, executions per round); a slow query runs fewer per round: as many as fit in ROUND_S
# by its warm-up's time, at least one
RUNS = {"city": (5, 20), "province": (3, 3)}
ROUND_S = 3.0
# What the online-rate panels' per-point scans of reading_1m would read with an index holding the
# columns they use (index-only scans; see the section's reading): measured on the city, after the rest.
WHAT_IF_INDEX = "CREATE INDEX reading_1m_online ON reading_1m (tag_id, bucket) INCLUDE (count, last_quality)"

CITY = Scale(
    "city", counties=3, enterprises=5, hazard_sources=(4, 3, 3, 2, 2), tags_per_source=15, minutes=30 * 1440,
    raw_minutes=60, alarm_days=30, annunciations=2000, flood=300, standing=40, permits=3, bypass_switches=3,
)  # fmt: skip
PROVINCE = Scale(
    "province", counties=10, enterprises=100, hazard_sources=(10,), tags_per_source=100,
    minutes=PROVINCE_MINUTES, raw_minutes=0, alarm_days=30, annunciations=100_000, flood=2000, standing=3000,
    permits=50, bypass_switches=200,
)  # fmt: skip


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (linear interpolation, numpy's default) of the values; NaN for none."""
    return float(np.percentile(values, q)) if len(values) else float("nan")


@dataclass
class Timing:
    """One query's executions on one backend: per round, milliseconds (board query and baseline)."""

    title: str
    baseline: str
    rows: int = 0
    board: list[list[float]] = field(default_factory=list)
    base: list[list[float]] = field(default_factory=list)
    raw_free: bool = True  # the plan reads no raw `reading` partition or chunk
    cpu_ms: list[float] = field(default_factory=list)  # per round: the reader's backend CPU per execution
    timed_out: bool = False  # the reader's statement_timeout cancelled it: no times
    indexed: list[list[float]] = field(default_factory=list)  # with WHAT_IF_INDEX (online-rate panels)

    def p(self, which: str, q: float) -> list[float]:
        return [percentile(r, q) for r in getattr(self, which)]

    @property
    def executions(self) -> int:
        return sum(len(r) for r in self.board)


@dataclass
class World:
    scale: Scale
    backend: Backend
    server: str
    loaded: Loaded
    timings: list[Timing]
    slowest: str = ""
    plan: list[str] = field(default_factory=list)
    seconds: float = 0.0
    index_s: float = 0.0


# --- plans -------------------------------------------------------------------------------


def relations(plan: dict[str, Any]) -> list[str]:
    """Every relation a plan (EXPLAIN FORMAT JSON's "Plan") scans, partitions and chunks included."""
    out = [plan["Relation Name"]] if "Relation Name" in plan else []
    for child in plan.get("Plans", []):
        out += relations(child)
    return out


def plan_summary(plan: dict[str, Any], top: int = 4) -> list[str]:
    """The nodes of an EXPLAIN ANALYZE plan with the most time of their own (total × loops minus
    their children's), largest first, as ``share node on relation (rows × loops)``."""
    nodes: list[tuple[float, str]] = []
    total = float(plan.get("Actual Total Time", 0.0)) * float(plan.get("Actual Loops", 1) or 1) or 1.0

    def walk(node: dict[str, Any]) -> None:
        loops = float(node.get("Actual Loops", 1) or 0)
        own = float(node.get("Actual Total Time", 0.0)) * loops
        for child in node.get("Plans", []):
            own -= float(child.get("Actual Total Time", 0.0)) * float(child.get("Actual Loops", 1) or 0)
            walk(child)
        what = node["Node Type"]
        if "Index Name" in node:
            what += f" using {node['Index Name']}"
        if "Relation Name" in node:
            what += f" on {node['Relation Name']}"
        rows = f"{int(node.get('Actual Rows', 0)):,} rows × {int(loops):,} loops"
        nodes.append((max(own, 0.0), f"{what} ({rows})"))

    walk(plan)
    nodes.sort(key=lambda x: -x[0])
    return [f"{own / total:.0%} {what}" for own, what in nodes[:top]]


def _plan(row: tuple[Any, ...] | None) -> dict[str, Any]:
    """The top of an EXPLAIN (FORMAT JSON) answer (psycopg gives json as parsed data)."""
    if row is None:
        raise RuntimeError("EXPLAIN returned nothing")
    data = row[0] if isinstance(row[0], list) else json.loads(row[0])
    top: dict[str, Any] = data[0]
    return top


def _root(name: str, parents: dict[str, str]) -> str:
    while name in parents:
        name = parents[name]
    return name


# --- timing ------------------------------------------------------------------------------


@dataclass
class _Query:
    title: str
    text: str
    baseline_name: str
    baseline: Callable[[], Awaitable[int]] | None  # None: a panel this bench has no baseline for


def executions(n: int, warm_up_s: float) -> int:
    """Executions per round of a query whose warm-up took ``warm_up_s``: ``n``, or as many as fit in
    ``ROUND_S`` (at least one)."""
    return max(1, min(n, int(ROUND_S / warm_up_s))) if warm_up_s > 0 else n


def _cpu_ms(pid: int) -> float:
    """User + system CPU of a local process so far, ms (a database backend: the server is local)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") * 1000


async def _time(
    reader: psycopg.AsyncConnection[Any],
    q: _Query,
    timing: Timing,
    rounds: int,
    n: int,
    *,
    store: bool = True,
) -> list[list[float]]:
    """Warm up, then ``rounds`` rounds of ``n`` board executions followed by ``n`` of the baseline;
    the board's times per round. ``store``: the measurement proper, kept in ``timing`` with the
    baseline's times and the server CPU (otherwise the board's times only, no baseline)."""
    cur = await reader.execute("SELECT pg_backend_pid()")
    pid = int((await cur.fetchone() or [0])[0])
    t0 = time.perf_counter()
    try:
        cur = await reader.execute(q.text, prepare=False)
        timing.rows = len(await cur.fetchall())
    except psycopg.errors.QueryCanceled:
        timing.timed_out = True  # what Grafana would show: the panel's query error
        if store and q.baseline is not None:  # the API's time for the same number, once
            t0 = time.perf_counter()
            await q.baseline()
            timing.base.append([(time.perf_counter() - t0) * 1000])
        return []
    n = executions(n, time.perf_counter() - t0)
    baseline = q.baseline if store else None
    if baseline is not None:
        await baseline()
    out = []
    for _ in range(rounds):
        board, base = [], []
        c0 = _cpu_ms(pid)
        for _ in range(n):
            t0 = time.perf_counter()
            cur = await reader.execute(q.text, prepare=False)
            await cur.fetchall()
            board.append((time.perf_counter() - t0) * 1000)
        out.append(board)
        if not store:
            continue
        timing.cpu_ms.append((_cpu_ms(pid) - c0) / n)
        for _ in range(n if baseline is not None else 0):
            t0 = time.perf_counter()
            await baseline()  # type: ignore[misc]
            base.append((time.perf_counter() - t0) * 1000)
        timing.board.append(board)
        timing.base.append(base)
    return out


def _queries(
    plant: Plant, board: dict[str, Any], loaded: Loaded, backend: Backend, api: psycopg.AsyncConnection[Any]
) -> list[_Query]:
    """The bureau board's queries, expanded, each with its baseline on the API's connection."""
    from api.bypass import OPEN_STATES, list_bypasses
    from api.online import PlantIndex, online_rates
    from api.principal import Scope
    from api.registry_views import alarm_counts, enterprises, hazard_sources
    from dashboards.sql import interlocks_of

    now = loaded.now
    month, day = TimeRange(now - RANGE, now), TimeRange(now - timedelta(hours=24), now)
    counties = sorted({e.county for e in plant.enterprises})
    variables = [Variable("county", counties, multi=True, include_all=True)]
    ts = backend is Backend.TIMESCALEDB
    index = PlantIndex(plant)
    points = [(loaded.tag_ids[t.key], index.expectation(t.key)) for t in plant.tags() if t.in_service]
    ils = interlocks_of(plant)
    il_tags = sorted(
        {k for r in ils for k in (r.fe_tag, *(i[0] for i in r.inputs), *(i[3] for i in r.inputs if i[3]))}
    )
    everyone = Scope()

    async def online() -> int:
        return len(await online_rates(api, points, day.start, day.end, datetime.now(UTC)))

    async def counts() -> int:
        return len(await alarm_counts(api, everyone, by="hazard_source"))

    async def sources_and_counts() -> int:
        return len(await hazard_sources(api, everyone)) + await counts()

    async def sources() -> int:
        return len(await hazard_sources(api, everyone))

    async def counties_list() -> int:
        return len({e.county for e in await enterprises(api, everyone)})

    interval = interval_for(month, min_interval=MIN_INTERVAL)

    async def trend() -> int:
        cur = await api.execute(
            """SELECT date_bin(%s, j.at, timestamptz 'epoch') AS w, s.priority, count(*)
               FROM alarm_journal j JOIN alarm_state s ON s.key = j.alarm_key
               WHERE j.action = ANY(%s) AND j.at >= %s AND j.at < %s GROUP BY 1, 2""",
            [interval, ["RAISED", "RERAISED"], month.start, month.end],
        )
        return len(await cur.fetchall())

    async def interlocks() -> int:
        cur = await api.execute(
            """SELECT t.key, t.name, l.value, l.quality, l.time
               FROM tag t LEFT JOIN tag_latest l ON l.tag_id = t.id WHERE t.key = ANY(%s)""",
            [il_tags],
        )
        n = len(await cur.fetchall())
        return n + len(await list_bypasses(api, everyone, datetime.now(UTC), states=OPEN_STATES))

    baselines: dict[str, tuple[str, Callable[[], Awaitable[int]] | None]] = {
        "重大危险源": ("registry_views.hazard_sources", sources),
        "报警 (按优先级)": ("registry_views.alarm_counts", counts),
        "数据在线率 (24 小时)": ("online.online_rates", online),
        "超时未确认": ("registry_views.alarm_counts", counts),
        "重大危险源一览 (实时风险)": ("hazard_sources + alarm_counts", sources_and_counts),
        "报警趋势 (按优先级)": ("alarms/kpi.py annunciations, binned", trend),
        "各企业数据在线率 (24 小时)": ("online.online_rates", online),
        "超时未确认报警": ("registry_views.alarm_counts", counts),
        "联锁旁路 / 停用 / 输入故障": ("interlock view's reads", interlocks),
        "$county": ("registry_views.enterprises", counties_list),
    }
    out = []
    for pq in panel_queries(board):
        rng = day if pq.time_from == "24h" else month
        if pq.time_from not in (None, "24h"):
            raise RuntimeError(
                f"a bureau panel with a time override the bench does not model: {pq.time_from}"
            )
        text = expand(pq.raw_sql, rng, interval=interval_for(rng, min_interval=MIN_INTERVAL), variables=variables,
                      timescaledb=ts)  # fmt: skip
        name, fn = baselines.get(pq.title, ("none (a panel new to this bench)", None))
        out.append(_Query(pq.title, text, name, fn))
    for vq in variable_queries(board):
        text = expand(vq.raw_sql, month, interval=interval, variables=[], timescaledb=ts)
        name, fn = baselines.get(f"${vq.name}", ("none (a variable new to this bench)", None))
        out.append(_Query(f"${vq.name}", text, name, fn))
    return out


async def _world(scale: Scale, backend: Backend, plant: Plant, board: dict[str, Any]) -> World:
    started = time.monotonic()
    admin = SERVERS[backend]
    name = f"hw_bench_grafana_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}".encode())
        server = str(c.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    dsn = make_conninfo(admin, dbname=name)
    try:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await upgrade(conn)
            if backend is Backend.TIMESCALEDB:
                cur = await conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
                server += f", TimescaleDB {(await cur.fetchone() or ['?'])[0]}"
            print(f"  {scale.name} on {backend}: loading", flush=True)
            loaded = await load(conn, backend, plant, scale)
            print(f"  loaded in {loaded.seconds:.0f} s: {loaded.rollup_rows:,} rollup rows, {loaded.raw_rows:,} raw, "
                  f"{loaded.journal_rows:,} journal rows", flush=True)  # fmt: skip
            cur = await conn.execute(
                "SELECT inhrelid::regclass::text, inhparent::regclass::text FROM pg_inherits"
            )
            parents: dict[str, str] = dict(await cur.fetchall())
        rounds, n = RUNS[scale.name]
        async with (
            await psycopg.AsyncConnection.connect(dsn, autocommit=True) as api,
            await psycopg.AsyncConnection.connect(dsn, user=READER, autocommit=True) as reader,
        ):
            queries = _queries(plant, board, loaded, backend, api)
            timings = []
            for q in queries:
                timing = Timing(q.title, q.baseline_name)
                cur = await reader.execute(f"EXPLAIN (FORMAT JSON) {q.text}", prepare=False)
                planned = _plan(await cur.fetchone())
                timing.raw_free = all(_root(r, parents) != "reading" for r in relations(planned["Plan"]))
                await _time(reader, q, timing, rounds, n)
                timings.append(timing)
                if timing.timed_out:
                    print(f"    {q.title}: timed out (the reader's statement_timeout)", flush=True)
                    continue
                print(f"    {q.title}: p50 {np.median(timing.p('board', 50)):.1f} ms, p95 "
                      f"{np.median(timing.p('board', 95)):.1f} ms ({timing.executions} runs, {timing.rows} rows); "
                      f"baseline p95 {np.median(timing.p('base', 95)):.1f} ms", flush=True)  # fmt: skip
            world = World(scale, backend, server, loaded, timings)
            if scale.name == "city":  # the target's scale: what the proposed index would change
                t0 = time.perf_counter()
                await api.execute(WHAT_IF_INDEX)
                await api.execute("VACUUM ANALYZE reading_1m")
                world.index_s = time.perf_counter() - t0
                for q, timing in zip(queries, timings, strict=True):
                    if "reading_1m m" in q.text:
                        timing.indexed = await _time(reader, q, timing, rounds, n, store=False)
                        print(
                            f"    {q.title}, with the index: p95 {np.median(timing.p('indexed', 95)):.1f} ms",
                            flush=True,
                        )
                await api.execute("DROP INDEX reading_1m_online")
            slow = max(timings, key=lambda t: math.inf if t.timed_out else float(np.median(t.p("board", 95))))
            world.slowest = slow.title
            q = next(x for x in queries if x.title == slow.title)
            # a query the reader's timeout cancels is explained on the owner's connection, without one
            explainer = api if slow.timed_out else reader
            cur = await explainer.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {q.text}", prepare=False)
            plan = _plan(await cur.fetchone())
            world.plan = plan_summary(plan["Plan"])
            jit = plan.get("JIT")
            if jit:
                t = jit.get("Timing", {})
                world.plan.append(f"JIT: {t.get('Total', 0):.0f} ms of {plan.get('Execution Time', 0):.0f} ms "
                                  f"execution (functions {jit.get('Functions', 0)})")  # fmt: skip
            else:
                world.plan.append(f"no JIT; execution {plan.get('Execution Time', 0):.0f} ms, "
                                  f"planning {plan.get('Planning Time', 0):.0f} ms")  # fmt: skip
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(psql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psql.Identifier(name)))
    world.seconds = time.monotonic() - started
    return world


async def _run() -> list[World]:
    tmp = Path(tempfile.mkdtemp(prefix="hw-bench-grafana-"))
    worlds = []
    try:
        for scale in (CITY, PROVINCE):
            t0 = time.perf_counter()
            plant = write_plant(tmp / scale.name, scale)
            print(
                f"{scale.name}: {scale.tags:,} tags, plant loaded in {time.perf_counter() - t0:.1f} s",
                flush=True,
            )
            board = next(b for b in build_boards(plant, plant.settings) if b["uid"] == "hw-bureau")
            for backend in (Backend.POSTGRES, Backend.TIMESCALEDB):
                worlds.append(await _world(scale, backend, plant, board))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return worlds


# --- the section ---------------------------------------------------------------------------


def _ms(values: list[float]) -> str:
    return spread([v for v in values if not np.isnan(v)], "{:.1f}", " ms")


def render(worlds: list[World]) -> str:
    city = [w for w in worlds if w.scale.name == "city"]
    lines = [
        "## Grafana: the bureau overview board's queries (bench/grafana.py)",
        "",
        "Every query of the bureau overview board (`hw-bureau`, dashboards/boards.py) and its `$county` variable, "
        "expanded by dashboards/expand.py as Grafana 11 expands them (`$county` = All, 1,000 data points, the "
        "datasource's 1 s minimum interval) over the last 30 days — the online-rate panels over their own 24 h "
        "(`timeFrom`) — and run on one connection as the read-only role `hazardwatch_grafana` (autocommit, never "
        "prepared: Grafana sends each refresh's text anew). Baselines in the same rounds on an API connection: "
        "online rate — `api.online.online_rates` over the same points and window; alarm panels — "
        "`api.registry_views.alarm_counts` per hazard source (the hazard source list adds `hazard_sources`); alarm "
        "trend — alarms/kpi.py's annunciation query binned per interval and priority; interlocks — what the API's "
        "interlock view reads (latest values of the interlocks' tags, open permits); counts and the variable — the "
        "API's registry listings. Per figure: median (min–max) over the rounds of each round's p50/p95.",
        "",
    ]
    for w in worlds:
        s, ld = w.scale, w.loaded
        rounds, n = RUNS[s.name]
        if s.name == "city":
            data = (
                f"{s.enterprises} enterprises in {s.counties} counties, {sum(s.hazard_sources_of(e) for e in range(s.enterprises))} "
                f"hazard sources × {s.tags_per_source} tags ({ld.tags:,} tags); {s.minutes // 1440} days of minute rollups "
                f"({ld.rollup_rows:,} reading_1m rows: gaps, an enterprise offline 3 h, BAD minutes); raw 1 Hz readings "
                f"for the last {s.raw_minutes} min ({ld.raw_rows:,} rows)"
            )
        else:
            data = (
                f"{s.enterprises} enterprises in {s.counties} counties × {s.hazard_sources[0]} hazard sources × "
                f"{s.tags_per_source} tags ({ld.tags:,} tags); minute rollups of every tag for the last "
                f"**{s.minutes} min only** ({ld.rollup_rows:,} reading_1m rows; the 24 h the online panels ask for "
                f"would be {ld.tags * 1440 / 1e6:,.0f} M rows per backend); raw 1 Hz readings only for the current, "
                f"open minute ({ld.raw_rows:,} rows)"
            )
        lines += [
            f"### {s.name}, {w.backend} ({w.server})",
            "",
            f"Data: {data}; {ld.annunciations:,} annunciations in {s.alarm_days} days ({ld.journal_rows:,} journal rows, "
            f"a flood of {s.flood:,}, a chattering alarm), {ld.alarm_states:,} alarm states ({ld.standing:,} standing), "
            f"{ld.permits} approved bypass permits. Loaded by COPY in {ld.seconds:.0f} s; {rounds} rounds × {n} "
            f"executions per query (fewer for a slow one: as many as its warm-up's time fits in {ROUND_S:.0f} s, at least one); this world took "
            f"{w.seconds:.0f} s.",
            "",
            "| panel | rows | board p50 | **board p95** | server CPU / execution | baseline | baseline p95 | "
            "board / baseline, p95 |" + (" target ≤ 200 ms |" if s.name == "city" else ""),
            "|---|---:|---:|---:|---:|---|---:|---:|" + ("---|" if s.name == "city" else ""),
        ]
        for t in w.timings:
            ratio = [a / b for a, b in zip(t.p("board", 95), t.p("base", 95), strict=False) if b > 0]
            board50, board95 = (
                ("**timed out**", "**timed out** (30 s `statement_timeout`)")
                if t.timed_out
                else (_ms(t.p("board", 50)), f"**{_ms(t.p('board', 95))}**")
            )
            row = (
                f"| {t.title}{'' if t.raw_free else ' (**reads raw readings**)'} | {t.rows:,} | {board50} | "
                f"{board95} | {_ms(t.cpu_ms)} | {t.baseline} | {_ms(t.p('base', 95))} | {spread(ratio, '{:.1f}', '×')} |"
            )
            if s.name == "city":
                row += " met |" if float(np.median(t.p("board", 95))) <= TARGET_MS else " **missed** |"
            lines.append(row)
        indexed = [t for t in w.timings if t.indexed]
        if indexed:
            figures = "; ".join(
                f"«{t.title}» p50 {_ms(t.p('indexed', 50))}, p95 **{_ms(t.p('indexed', 95))}**"
                for t in indexed
            )
            lines += [
                "",
                f"With `{WHAT_IF_INDEX}` (built in {w.index_s:.0f} s here, then dropped), the same rounds: {figures}.",
            ]
        lines += [
            "",
            f"Slowest: «{w.slowest}». EXPLAIN (ANALYZE, BUFFERS) as the reader, the nodes with the most time of "
            f"their own: {'; '.join(w.plan)}.",
            "",
        ]
    met = all(float(np.median(t.p("board", 95))) <= TARGET_MS for w in city for t in w.timings)
    raw = [f"{w.scale.name}/{w.backend}: {t.title}" for w in worlds for t in w.timings if not t.raw_free]
    lines += [
        f"Target (DESIGN.md), each bureau-overview query over 30 days for a city, median of the rounds' p95 ≤ "
        f"{TARGET_MS:.0f} ms on both backends: **{'met' if met else 'missed'}**. No bureau query plans a raw "
        f"`reading` partition or chunk: **{'yes' if not raw else 'NO: ' + ', '.join(raw)}** (EXPLAIN of each). "
        f"Load average (1/5/15 min) at the end: {load_average()} (the database servers and this client share "
        "them).",
    ]
    return "\n".join(lines)


def main() -> str:
    return render(asyncio.run(_run()))


if __name__ == "__main__":
    print(main())
