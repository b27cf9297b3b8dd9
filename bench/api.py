"""Benchmark: the HTTP API (issue 13) — history query, active alarm list, SSE fan-out.

``hazardwatch api`` (uvicorn, the real command) serves a scratch PostgreSQL database on
127.0.0.1:5432 from a child process; this process is the client (httpx over loopback, with a
token from the real login). The world (bench/api_data.py): a generated plant of 100 enterprises
× 100 tags, 30 days of one tag's minute rollups, 5 minutes of raw readings of every tag, 1,000
active alarms (10 per enterprise) raised by the real ``AlarmService``, which keeps running as the
one writer for the stream's transitions.

- History: ``GET /api/v1/history`` of the probe tag, the last 30 days at 60 s buckets (43,201
  buckets: 43,200 from reading_1m, the open minute from raw readings), as the city bureau user.
  Baseline in the same run: ``storage.queries.history`` (the same SQL) on a bare psycopg
  connection.
- Alarms: ``GET /api/v1/alarms?active=true`` as the city bureau user (sees all 100
  enterprises). Baseline: the same rows by bare SQL on a psycopg connection.
- Stream: ``CLIENTS`` concurrent ``GET /api/v1/stream`` (a child process, bench/api_clients.py):
  half the city bureau user, half operators of ten enterprises; transitions committed by the
  ``AlarmService`` (edges in those ten enterprises); latency = the commit returned to the
  writer → each client's receipt of the event; every client must get every event in its scope
  exactly once and none outside it. Baseline: one bare psycopg LISTEN in the same child process,
  on the channel the commit notifies.

Targets (issue 13): history p95 ≤ 100 ms; active alarm list p95 ≤ 50 ms; fan-out to 200
clients (no target figure: reported with its baseline).
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import pstats
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
from psycopg.conninfo import make_conninfo

from bench.api_data import (
    ENTERPRISES,
    HISTORY_DAYS,
    PASSWORD,
    RAW_MINUTES,
    SECRET,
    TAGS_PER_ENTERPRISE,
    Loaded,
    Server,
    load_readings,
    write_plant,
)
from bench.config import load_average

__all__ = ["main"]

ADMIN = os.environ.get("HW_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
RUNS = 5  # history and alarm list: runs of REQUESTS requests each
REQUESTS = 40
WARMUP = 5
ALARM_LIMIT = 1000  # the list's largest page: all of them, as a bureau overview shows them
ALARMS_PER_ENTERPRISE = 10
CLIENTS = 200
# Stream client processes (client i in process i mod k). 2 on this 2-core machine was no better
# than 1 (each event's fan-out spread p50 82 ms at load 6-9 against 50 ms at load 6-7): the cores,
# not one client loop, are what the deliveries wait for here.
CLIENT_PROCESSES = 1
STREAM_ENTERPRISES = 10  # operators of E000..E009 listen, transitions happen there
STREAM_RUNS = 3
TRANSITIONS = 100  # per stream run
TRANSITION_EVERY_S = 0.1
DRAIN_S = 3.0
PROFILE_REQUESTS = 30
TARGET_HISTORY_P95_MS = 100.0
TARGET_ALARMS_P95_MS = 50.0
BUREAU = "bureau_city"
LISTEN_CHANNEL_FALLBACK = "notification"  # alarms' outbox trigger: one NOTIFY per commit with a raise/resolve


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat()


# --- request timing --------------------------------------------------------------------------


@dataclass
class Timed:
    """Per run: the API's request latencies and the baseline's, in ms."""

    api: list[list[float]] = field(default_factory=list)
    base: list[list[float]] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)  # mean time inside the app per run (/metrics)
    body_bytes: int = 0
    rows: int = 0
    base_rows: int = 0

    def p(self, which: str, q: float) -> list[float]:
        return [_pct(r, q) for r in getattr(self, which)]

    def ratio(self, q: float) -> list[float]:
        return [a / b for a, b in zip(self.p("api", q), self.p("base", q), strict=True)]


async def _server_seconds(client: httpx.AsyncClient, route: str) -> tuple[float, float]:
    """(sum, count) of the app's own latency histogram for ``route``."""
    text = (await client.get("/metrics/")).text
    out = []
    for suffix in ("sum", "count"):
        m = re.search(rf'hazardwatch_api_request_seconds_{suffix}{{route="{re.escape(route)}"}} (\S+)', text)
        out.append(float(m.group(1)) if m else 0.0)
    return out[0], out[1]


def _metric(text: str, name: str) -> float:
    """The sum of a Prometheus metric's samples (any labels; a counter's ``_total``) in ``text``."""
    pattern = rf"^{re.escape(name)}(?:_total)?(?:{{[^}}]*}})? (\S+)$"
    return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


async def _time_requests(
    client: httpx.AsyncClient,
    route: str,
    request: Callable[[], Awaitable[httpx.Response]],
    baseline: Callable[[], Awaitable[int]],
    timed: Timed,
    label: str,
) -> None:
    for _ in range(WARMUP):
        r = await request()
        if r.status_code != 200:
            raise RuntimeError(f"{label}: HTTP {r.status_code}: {r.text[:500]}")
        await baseline()
    timed.body_bytes = len(r.content)
    for run in range(RUNS):
        s0, c0 = await _server_seconds(client, route)
        api = []
        for _ in range(REQUESTS):
            t0 = time.perf_counter()
            r = await request()
            api.append((time.perf_counter() - t0) * 1000)
            if r.status_code != 200:
                raise RuntimeError(f"{label}: HTTP {r.status_code}: {r.text[:500]}")
        s1, c1 = await _server_seconds(client, route)
        base = []
        for _ in range(REQUESTS):
            t0 = time.perf_counter()
            timed.base_rows = await baseline()
            base.append((time.perf_counter() - t0) * 1000)
        timed.api.append(api)
        timed.base.append(base)
        timed.server_ms.append((s1 - s0) / max(c1 - c0, 1) * 1000)
        print(f"  {label} run {run}: API p50 {_pct(api, 50):.1f} ms, p95 {_pct(api, 95):.1f} ms "
              f"(in the app {timed.server_ms[-1]:.1f} ms mean); baseline p50 {_pct(base, 50):.1f} ms, "
              f"p95 {_pct(base, 95):.1f} ms", flush=True)  # fmt: skip


# --- where the time goes: the app in this process under cProfile ----------------------------


_IDLE = "waiting (event loop idle: database round trips)"


def _where(filename: str, func: str) -> tuple[str, str]:
    """(library, short function name) of one profile entry."""
    if func.startswith("<method 'poll' of 'select.epoll"):
        return _IDLE, "epoll"
    if "site-packages/" in filename:
        rel = filename.split("site-packages/", 1)[1].removesuffix(".py")
        return rel.split("/", 1)[0], f"{rel.replace('/', '.')}.{func}"
    root = str(Path(__file__).resolve().parents[1]) + "/"
    if filename.startswith(root):
        rel = filename[len(root) :].removesuffix(".py")
        return "HazardWatch " + rel.split("/", 1)[0], f"{rel.replace('/', '.')}.{func}"
    if filename.startswith(("~", "<")):
        return "builtins (C)", func
    rel = filename.rsplit("/python3.", 1)[-1].split("/", 1)[-1].removesuffix(".py")
    return "stdlib " + rel.split("/", 1)[0], f"{rel.replace('/', '.')}.{func}"


@dataclass
class Profile:
    libraries: list[tuple[str, float]]  # own time by library, share of the total
    functions: list[tuple[str, float]]  # the functions with the most own time, share of the total


def _profile_of(stats: pstats.Stats, top: int = 6) -> Profile:
    """Own time (tottime) by library and by function, as shares of the total; the event loop's
    idle wait (epoll: the database answering) apart."""
    libs: Counter[str] = Counter()
    funcs: Counter[str] = Counter()
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, func), (_cc, _nc, tt, _ct, _callers) in raw.items():
        lib, name = _where(filename, func)
        libs[lib] += tt
        funcs[name] += tt
    total = sum(libs.values()) or 1.0
    return Profile([(k, v / total) for k, v in libs.most_common(top)],
                   [(k, v / total) for k, v in funcs.most_common(top)])  # fmt: skip


async def _asgi_get(app: Any, path: str, params: dict[str, str], token: str) -> int:
    """One GET straight into the ASGI app (no HTTP client or server in the profile); its status."""
    from urllib.parse import urlencode

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": urlencode(params).encode(),
        "headers": [(b"host", b"bench"), (b"authorization", f"Bearer {token}".encode())],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # no disconnect while the response is written
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _profile(dsn: str, plant: Any, path: str, params: dict[str, str], token: str) -> Profile:
    """``PROFILE_REQUESTS`` requests to the app in this process (ASGI, no HTTP server), profiled."""
    from api.app import ApiConfig, create_app
    from core.settings import ApiSettings

    app = create_app(ApiConfig(dsn, SECRET.encode(), ApiSettings(access_token_min=240), plant))
    async with app.router.lifespan_context(app):
        for _ in range(WARMUP):
            if (code := await _asgi_get(app, path, params, token)) != 200:
                raise RuntimeError(f"profile {path}: HTTP {code}")
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(PROFILE_REQUESTS):
            await _asgi_get(app, path, params, token)
        prof.disable()
    return _profile_of(pstats.Stats(prof))


# --- the stream --------------------------------------------------------------------------------


@dataclass
class StreamRun:
    latencies: list[float]  # ms, commit returned -> client receipt, every delivery
    listener: list[float]  # ms, commit returned -> bare LISTEN receipt
    expected: int  # deliveries owed (events × clients in scope)
    delivered: int
    missing: int
    duplicates: int
    foreign: int  # events received outside the client's scope
    events: int
    commit_ms: list[float]  # the writer's transaction, start -> commit returned
    server_cpu: float  # share of one core during the run
    client_cpu: float
    first: list[float]  # per event: commit -> its first client (the hub's read of the new row)
    spread: list[float]  # per event: its last client's receipt - its first's (the fan-out)


class _ClientsChild:
    def __init__(self, base: str, dsn: str, channel: str, tokens: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.api_clients", base, dsn, channel],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parents[1],
        )  # fmt: skip
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(tokens) + "\n")
        self.proc.stdin.flush()

    async def line(self) -> str:
        assert self.proc.stdout is not None
        return (await asyncio.to_thread(self.proc.stdout.readline)).strip()

    async def dump(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("dump\n")
        self.proc.stdin.flush()
        got: dict[str, Any] = json.loads(await self.line())
        return got

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(15)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


class _Clients:
    """The stream clients spread over ``CLIENT_PROCESSES`` children (client i in child i mod k, so
    each holds both kinds); the bare listener in the first."""

    def __init__(self, base: str, dsn: str, channel: str, tokens: list[str]) -> None:
        k = CLIENT_PROCESSES
        self.index = [list(range(p, len(tokens), k)) for p in range(k)]
        self.children: list[_ClientsChild] = []
        for p in range(k):
            self.children.append(
                _ClientsChild(base, dsn, channel if p == 0 else "-", [tokens[i] for i in self.index[p]])
            )

    @property
    def pids(self) -> list[int]:
        return [c.proc.pid for c in self.children]

    async def ready(self) -> str:
        lines = await asyncio.gather(*(c.line() for c in self.children))
        bad = [x for x in lines if x != "ready"]
        return bad[0] if bad else "ready"

    async def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {"events": [], "listener": [], "errors": []}
        for c, index in zip(self.children, self.index, strict=True):
            got = await c.dump()
            out["events"] += [(index[j], ident, at) for j, ident, at in got["events"]]
            out["listener"] += got["listener"]
            out["errors"] += got["errors"]
        return out

    def close(self) -> None:
        for c in self.children:
            c.close()


async def _stream_channel(dsn: str) -> str:
    """The channel a commit of alarm_journal rows notifies: the stream's trigger's (migration 0008:
    the channel is the trigger function's argument, or a literal in its body); else the outbox's."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            """SELECT p.prosrc, t.tgargs FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
               WHERE t.tgrelid = 'alarm_journal'::regclass AND NOT t.tgisinternal"""
        )
        for src, args in await cur.fetchall():
            literal = re.search(r"pg_notify\(\s*'([^']+)'", src)
            if literal:
                return literal.group(1)
            if re.search(r"pg_notify\(\s*TG_ARGV\[0\]", src) and args:
                return bytes(args).split(b"\0", 1)[0].decode()
    return LISTEN_CHANNEL_FALLBACK


# --- the run -----------------------------------------------------------------------------------


async def _login(client: httpx.AsyncClient, username: str) -> str:
    r = await client.post("/api/v1/auth/token", data={"username": username, "password": PASSWORD})
    if r.status_code != 200:
        raise RuntimeError(f"login {username}: HTTP {r.status_code}: {r.text[:300]}")
    token: str = r.json()["access_token"]
    return token


@dataclass
class Results:
    loaded: Loaded
    history: Timed
    alarms: Timed
    stream: list[StreamRun]
    history_profile: Profile
    alarms_profile: Profile
    channel: str
    active_alarms: int
    hub: dict[str, float]  # the API's stream metrics after the runs: clients connected, dropped, reconnects
    elapsed_s: float = 0.0
    load_start: float = 0.0
    pg_version: str = ""


async def _run() -> str:
    from alarms import store
    from alarms.commands import ACTIVE
    from alarms.model import Catalog, Priority
    from alarms.service import AlarmService
    from api.users import add_user
    from core.clock import SystemClock
    from core.conditions import ConditionEdges
    from core.config import load_plant
    from core.settings import AlarmSettings
    from rules.compile import compile_rules
    from storage import queries
    from storage.migrate import upgrade
    from storage.registry_sync import sync_registry

    started = time.monotonic()
    load_start = os.getloadavg()[0]
    name = f"hw_bench_api_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}".encode())
    dsn = make_conninfo(ADMIN, dbname=name)
    server: Server | None = None
    tmp = Path(tempfile.mkdtemp(prefix="hw_bench_api_"))
    service: AlarmService | None = None
    write = store.write
    try:
        plant_file = write_plant(tmp / "plant")
        plant = load_plant(plant_file)
        now_us = SystemClock().now_us()
        print(f"api: {ENTERPRISES} enterprises × {TAGS_PER_ENTERPRISE} tags; loading data ...", flush=True)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await upgrade(conn)
            await sync_registry(conn, plant, now_us=now_us)
            await add_user(conn, BUREAU, "赵敏", "bureau_duty", PASSWORD)
            for e in range(STREAM_ENTERPRISES):
                await add_user(conn, f"op_e{e:03d}", f"操作员{e}", "enterprise_operator", PASSWORD,
                               enterprise=f"E{e:03d}")  # fmt: skip
            ids: dict[str, int] = dict(await (await conn.execute("SELECT key, id FROM tag")).fetchall())
            probe_key = "E000.V00000.LT-0000"
            loaded = await load_readings(conn, np.array(sorted(ids.values())), ids[probe_key], now_us)
            pg_version = (await (await conn.execute("SHOW server_version")).fetchone() or ("?",))[0]
        print(f"  loaded {loaded.raw_rows:,} raw readings, {loaded.rollup_rows + loaded.probe_rows:,} rollup "
              f"rows in {loaded.seconds:.0f} s", flush=True)  # fmt: skip

        # the one writer: raises the standing alarms, later the stream's transitions
        catalog = Catalog(plant, compile_rules(plant))
        service = AlarmService(catalog, AlarmSettings(), tmp / "alarmlog", dsn, SystemClock())
        await service.recover()
        service.start()
        svc = service
        commits: dict[int, tuple[float, float]] = {}

        def timed_write(conn: Any, batch: Sequence[Any]) -> None:
            t0 = time.monotonic()
            write(conn, batch)
            t1 = time.monotonic()
            for c in batch:
                commits[c.seq] = (t0, t1)

        store.write = timed_write  # type: ignore[assignment]

        async def edges(rows: list[tuple[str, bool]]) -> int:
            rule = catalog.by_key
            n = len(rows)
            ts = SystemClock().now_us()
            svc.edges(ConditionEdges.of(
                np.array([rule(k).rule for k, _ in rows]),  # type: ignore[union-attr]
                np.array([a for _, a in rows]), np.full(n, ts), np.array([9.5 if a else 1.0 for _, a in rows]),
                np.full(n, 8.6), np.full(n, 3, np.uint8)))  # fmt: skip
            return svc.manager.seq

        async def stored(seq: int) -> None:
            async with asyncio.timeout(60):
                while svc.stored_seq < seq:
                    await asyncio.sleep(0.002)

        standing = [
            f"E{e:03d}.V{0:02d}{k // 10:03d}.LT-{k:04d}:{'HH' if j % 2 else 'H'}"
            for e in range(ENTERPRISES)
            for j, k in enumerate([0, 1, 2, 10, 11, 12, 20, 21, 22, 30][:ALARMS_PER_ENTERPRISE])
        ]
        await stored(await edges([(k, True) for k in standing]))
        # a third of them have returned to normal unacknowledged: still on the list
        await stored(await edges([(k, False) for k in standing[::3]]))
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            active = (await (await conn.execute("SELECT count(*) FROM alarm_state WHERE status <> 'normal'"))
                      .fetchone() or (0,))[0]  # fmt: skip

        server = Server(plant_file, dsn, _free_port(), tmp / "api.log")
        await asyncio.to_thread(server.wait_ready)
        limits = httpx.Limits(max_connections=4)
        async with (
            httpx.AsyncClient(base_url=server.base, limits=limits, timeout=30.0) as client,
            await psycopg.AsyncConnection.connect(dsn, autocommit=True) as db,
        ):
            token = await _login(client, BUREAU)
            auth = {"Authorization": f"Bearer {token}"}

            # 1. history
            end_us = loaded.now_us
            start_us = end_us - HISTORY_DAYS * 86_400_000_000
            hparams = {"tags": probe_key, "start": _iso(start_us), "end": _iso(end_us), "bucket": "60"}
            probe_id = ids[probe_key]

            async def history_base() -> int:
                return len(await queries.history(db, [probe_id], start_us, end_us, 60.0))

            history = Timed()
            print("api: history ...", flush=True)
            await _time_requests(
                client, "/api/v1/history",
                lambda: client.get("/api/v1/history", params=hparams, headers=auth),
                history_base, history, "history",
            )  # fmt: skip
            history.rows = history.base_rows

            # 2. active alarm list
            aparams = {"active": "true", "limit": str(ALARM_LIMIT)}
            active_statuses = sorted(s.value for s in ACTIVE)
            priorities = [p.value for p in Priority]

            async def alarms_base() -> int:
                cur = await db.execute(ALARMS_SQL, [active_statuses, priorities, ALARM_LIMIT])
                return len(await cur.fetchall())

            alarms = Timed()
            print("api: active alarm list ...", flush=True)
            await _time_requests(
                client, "/api/v1/alarms",
                lambda: client.get("/api/v1/alarms", params=aparams, headers=auth),
                alarms_base, alarms, "alarms",
            )  # fmt: skip
            got = (await client.get("/api/v1/alarms", params=aparams, headers=auth)).json()
            alarms.rows = len(got["items"] if isinstance(got, dict) and "items" in got else got)

            # where the time goes, in this process (the app under cProfile, ASGI in-process)
            print("api: profiles ...", flush=True)
            hprof = await _profile(dsn, plant, "/api/v1/history", hparams, token)
            aprof = await _profile(dsn, plant, "/api/v1/alarms", aparams, token)

            # 3. the stream
            channel = await _stream_channel(dsn)
            tokens = [token] * (CLIENTS // 2)
            op_tokens = [await _login(client, f"op_e{e:03d}") for e in range(STREAM_ENTERPRISES)]
            scope_of = [None] * (CLIENTS // 2) + [
                f"E{i % STREAM_ENTERPRISES:03d}" for i in range(CLIENTS - CLIENTS // 2)
            ]
            tokens += [op_tokens[i % STREAM_ENTERPRISES] for i in range(CLIENTS - CLIENTS // 2)]
            print(f"api: {CLIENTS} stream clients (LISTEN baseline on {channel!r}) ...", flush=True)
            child = _Clients(server.base, dsn, channel, tokens)
            try:
                ready = await asyncio.wait_for(child.ready(), 180)
                if ready != "ready":
                    raise RuntimeError(f"stream clients: {ready}")
                movers = [f"E{e:03d}.V00{j:03d}.PT-{3 + 10 * j:04d}:H" for j in range(5)
                          for e in range(STREAM_ENTERPRISES)]  # fmt: skip
                state = dict.fromkeys(movers, False)
                # warm-up: one transition every client in scope must see before measuring
                await stored(await edges([(movers[0], True)]))
                state[movers[0]] = True
                await asyncio.sleep(DRAIN_S)
                await child.dump()
                runs = []
                for run in range(STREAM_RUNS):
                    commits.clear()
                    first = svc.stored_seq + 1
                    cpu0 = (_cpu_s(server.proc.pid), sum(map(_cpu_s, child.pids)), time.monotonic())
                    t_start = time.monotonic()
                    for i in range(TRANSITIONS):
                        key = movers[(i + 1) % len(movers)]
                        state[key] = not state[key]
                        await edges([(key, state[key])])
                        await asyncio.sleep(
                            max(0.0, t_start + (i + 1) * TRANSITION_EVERY_S - time.monotonic())
                        )
                    await stored(svc.manager.seq)
                    last = svc.stored_seq
                    await asyncio.sleep(DRAIN_S)
                    cpu1 = (_cpu_s(server.proc.pid), sum(map(_cpu_s, child.pids)), time.monotonic())
                    got_run = await child.dump()
                    runs.append(await _judge(dsn, got_run, commits, scope_of, first, last, cpu0, cpu1))
                    r = runs[-1]
                    print(f"  stream run {run}: {r.events} events, {r.delivered}/{r.expected} deliveries, "
                          f"missing {r.missing}, duplicates {r.duplicates}, foreign {r.foreign}; p50 "
                          f"{_pct(r.latencies, 50):.1f} ms, p99 {_pct(r.latencies, 99):.1f} ms; bare LISTEN "
                          f"p50 {_pct(r.listener, 50):.1f} ms, p99 {_pct(r.listener, 99):.1f} ms; server CPU "
                          f"{r.server_cpu:.0%}, clients CPU {r.client_cpu:.0%}; first client p50 "
                          f"{_pct(r.first, 50):.1f} ms, fan-out spread p50 {_pct(r.spread, 50):.1f} ms, p99 "
                          f"{_pct(r.spread, 99):.1f} ms", flush=True)  # fmt: skip
                    if got_run["errors"]:
                        print(f"  stream errors: {got_run['errors'][:5]}", flush=True)
                metrics = (await client.get("/metrics/")).text
                hub = {
                    k: _metric(metrics, f"hazardwatch_api_stream_{k}")
                    for k in ("clients", "dropped", "reconnects")
                }
            finally:
                child.close()
        results = Results(loaded, history, alarms, runs, hprof, aprof, channel, int(active), hub,
                          pg_version=str(pg_version))  # fmt: skip
    finally:
        store.write = write
        try:
            if server is not None:
                server.close()
            if service is not None:
                await service.close()
        finally:  # the scratch database goes whatever failed before
            with psycopg.connect(ADMIN, autocommit=True) as c:
                c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())
            shutil.rmtree(tmp, ignore_errors=True)
    results.elapsed_s = time.monotonic() - started
    results.load_start = load_start
    return render(results)


# The bare SQL of the active alarm list as api/alarm_views.py runs it for an unscoped caller: the
# statuses an operator acts on (alarms.commands.ACTIVE), awaiting acknowledgement first, then by
# priority, then the oldest change, with the total; one page of ALARM_LIMIT rows.
ALARMS_SQL = """
    SELECT key, enterprise, county, hazard_source, unit, subject, kind, priority, status, acked, latching,
           since, raised_at, value, "limit", shelved_until, by_whom, reason, acked_by, acked_at,
           count(*) OVER () AS total
    FROM alarm_state
    WHERE status = ANY(%s)
    ORDER BY acked, array_position(%s::text[], priority), since, key LIMIT %s"""


async def _judge(
    dsn: str,
    got: dict[str, Any],
    commits: dict[int, tuple[float, float]],
    scope_of: list[str | None],
    first: int,
    last: int,
    cpu0: tuple[float, float, float],
    cpu1: tuple[float, float, float],
) -> StreamRun:
    """Deliveries against the journal rows of commits ``first..last`` and each client's scope."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT seq, n, split_part(alarm_key, '.', 1) FROM alarm_journal WHERE seq BETWEEN %s AND %s",
            [first, last],
        )
        journal = {f"{s}.{n}": ent for s, n, ent in await cur.fetchall()}
    seen: Counter[tuple[int, str]] = Counter()
    latencies, foreign = [], 0
    per_event: dict[str, list[float]] = {}
    for client, ident, at in got["events"]:
        if ident not in journal:
            continue  # a keepalive's or an earlier run's id (none expected)
        scope = scope_of[client]
        if scope is not None and journal[ident] != scope:
            foreign += 1
            continue
        seen[(client, ident)] += 1
        if seen[(client, ident)] == 1:
            latencies.append((at - commits[int(ident.split(".")[0])][1]) * 1000)
            per_event.setdefault(ident, []).append(latencies[-1])
    owed = {(c, i) for c in range(len(scope_of)) for i, ent in journal.items() if scope_of[c] in (None, ent)}
    missing = len(owed - set(seen))
    duplicates = sum(v - 1 for v in seen.values())
    # the bare listener: each notification belongs to the latest commit that had begun
    starts = sorted((t0, t1) for t0, t1 in commits.values())
    listener = []
    for _payload, at in got["listener"]:
        i = int(np.searchsorted([s for s, _ in starts], at)) - 1
        if i >= 0:
            listener.append((at - starts[i][1]) * 1000)
    wall = cpu1[2] - cpu0[2]
    return StreamRun(
        latencies, listener, len(owed), sum(1 for _ in seen), missing, duplicates, foreign, len(journal),
        [(t1 - t0) * 1000 for t0, t1 in commits.values()], (cpu1[0] - cpu0[0]) / wall, (cpu1[1] - cpu0[1]) / wall,
        [min(v) for v in per_event.values()], [max(v) - min(v) for v in per_event.values()],
    )  # fmt: skip


# --- the section ---------------------------------------------------------------------------------


def render(r: Results) -> str:
    from bench.report import spread

    def ms(values: list[float], fmt: str = "{:.1f}") -> str:
        return spread([v for v in values if not np.isnan(v)], fmt, " ms")

    def ratio(values: list[float]) -> str:
        return spread(values, "{:.1f}", "×")

    h, a, s = r.history, r.alarms, r.stream
    h95, a95 = sorted(h.p("api", 95)), sorted(a.p("api", 95))
    h_met = h95[len(h95) // 2] <= TARGET_HISTORY_P95_MS
    a_met = a95[len(a95) // 2] <= TARGET_ALARMS_P95_MS
    exact = all(x.missing == 0 and x.duplicates == 0 and x.foreign == 0 for x in s)

    def profile(p: Profile) -> str:
        libs = "; ".join(f"{k} {v:.0%}" for k, v in p.libraries)
        funcs = "; ".join(f"`{k}` {v:.0%}" for k, v in p.functions)
        return f"by library: {libs}. Top functions: {funcs}"

    lines = [
        "## HTTP API: history query, active alarm list, SSE fan-out (bench/api.py)",
        "",
        "`hazardwatch api` (uvicorn, the real command) in a child process serves a scratch PostgreSQL "
        f"{r.pg_version} database (127.0.0.1:5432); this process is the client (httpx over loopback, a bearer "
        "token from the real login, keep-alive, one request at a time). The data: a generated plant of "
        f"{ENTERPRISES} enterprises × {TAGS_PER_ENTERPRISE} tags ({ENTERPRISES * TAGS_PER_ENTERPRISE:,} tags), "
        f"the probe tag's {HISTORY_DAYS} days of minute rollups ({r.loaded.probe_rows:,} reading_1m rows), "
        f"{RAW_MINUTES} minutes of raw 1 Hz readings of every tag ({r.loaded.raw_rows:,} rows) with their closed "
        f"minutes in reading_1m ({r.loaded.rollup_rows:,} rows) and the current minute open in reading_1m_open, "
        f"as a running writer leaves them (loaded in {r.loaded.seconds:.0f} s); {r.active_alarms:,} active "
        f"alarms ({ALARMS_PER_ENTERPRISE} per enterprise, a third returned to normal unacknowledged) raised by "
        "the real `AlarmService`, which stays running as the one writer. "
        f"{RUNS} runs of {REQUESTS} requests (after {WARMUP} warm-up) per figure; each run's baseline right after "
        "its API requests; median (min–max) over the runs. *In the app* = the API's own latency histogram "
        "(`/metrics`: request in → response start) over the run's requests, mean.",
        "",
        f"| figure | history: 1 tag × {HISTORY_DAYS} days, 60 s buckets | active alarm list, city bureau |",
        "|---|---:|---:|",
        "| request | `GET /api/v1/history?tags=…&start=…&end=…&bucket=60` | `GET /api/v1/alarms?active=true&limit=1000` (the console's request) |",
        f"| rows answered (baseline query) | {h.rows:,} | {a.base_rows:,} (API: {a.rows:,}) |",
        f"| response body | {h.body_bytes / 1024:,.0f} KiB | {a.body_bytes / 1024:,.0f} KiB |",
        f"| **API p50** | {ms(h.p('api', 50))} | {ms(a.p('api', 50))} |",
        f"| **API p95** | {ms(h.p('api', 95))} | {ms(a.p('api', 95))} |",
        f"| API p99 | {ms(h.p('api', 99))} | {ms(a.p('api', 99))} |",
        f"| in the app, mean | {ms(h.server_ms)} | {ms(a.server_ms)} |",
        f"| baseline p50 | {ms(h.p('base', 50))} | {ms(a.p('base', 50))} |",
        f"| baseline p95 | {ms(h.p('base', 95))} | {ms(a.p('base', 95))} |",
        f"| API / baseline, p50 | {ratio(h.ratio(50))} | {ratio(a.ratio(50))} |",
        f"| API / baseline, p95 | {ratio(h.ratio(95))} | {ratio(a.ratio(95))} |",
        "",
        "Baselines: history — `storage.queries.history` (the SQL the endpoint runs: reading_1m for closed "
        "minutes, raw readings for the open one, columns fetched as binary arrays) on a bare psycopg connection; "
        "alarm list — `api/alarm_views.py`'s query for an unscoped caller (the statuses an operator acts on, "
        "awaiting acknowledgement first, then priority, then the oldest change, the total by a window function, "
        f"one page of {ALARM_LIMIT:,}) on a bare psycopg connection, rows as tuples.",
        "",
        f"Where the time goes: {PROFILE_REQUESTS} requests (after {WARMUP} warm-up) straight into the app's ASGI "
        "callable in this process (no HTTP server or client) under cProfile; own time by library and the "
        "functions with the most own time, as shares of the profiled time; *waiting* = the event loop idle in "
        "epoll, i.e. the database answering:",
        "",
        f"- history: {profile(r.history_profile)}",
        f"- alarm list: {profile(r.alarms_profile)}",
        "",
        f"Targets (issue 13), median of the runs' p95: history ≤ {TARGET_HISTORY_P95_MS:.0f} ms: "
        f"**{'met' if h_met else 'missed'}**; active alarm list ≤ {TARGET_ALARMS_P95_MS:.0f} ms: "
        f"**{'met' if a_met else 'missed'}**. For scale, the bare baselines' p95 in the same runs: history "
        f"{ms(h.p('base', 95))}, alarm list {ms(a.p('base', 95))}; load average (1 min) {r.load_start:.1f} when the "
        f"run started on {os.cpu_count()} CPUs (other work shares this machine).",
        "",
        "### SSE fan-out",
        "",
        f"{CLIENTS} concurrent `GET /api/v1/stream` in {CLIENT_PROCESSES} child process(es) (bench/api_clients.py; "
        f"httpx, one connection each): {CLIENTS // 2} as the city bureau user (scope: all), {CLIENTS - CLIENTS // 2} as "
        f"operators of {STREAM_ENTERPRISES} enterprises ({(CLIENTS - CLIENTS // 2) // STREAM_ENTERPRISES} each). "
        f"Per run the `AlarmService` commits {TRANSITIONS} transitions, one every "
        f"{TRANSITION_EVERY_S * 1000:.0f} ms, in those {STREAM_ENTERPRISES} enterprises (an H alarm raised or "
        "returned to normal): each event is owed to the bureau clients and to its enterprise's operators. "
        "Latency = the writer's commit returned (stamped around `alarms.store.write`) → a client has the whole "
        "event (`time.monotonic()`, one clock for all processes). Baseline in the same run: one bare psycopg "
        f"connection in the clients' process LISTENing on `{r.channel}`, the channel the commit notifies. "
        "PostgreSQL sends the NOTIFY at the commit, before the writer's thread has the commit's answer, so the "
        "baseline is near 0 and, when that thread waits for a core, below it. Per event, *first client* is the "
        "hub's part (NOTIFY → its read of the new journal row → the first client's socket) and *first → last* the "
        f"fan-out to every client in scope. {STREAM_RUNS} runs on the same connections.",
        "",
        "| figure | result |",
        "|---|---:|",
        f"| events per run (journal rows) | {spread([x.events for x in s])} |",
        f"| deliveries owed per run | {spread([x.expected for x in s])} |",
        f"| delivered exactly once | {spread([100 * x.delivered / max(x.expected, 1) for x in s], '{:.1f}', ' %')} |",
        f"| missing / duplicated / outside the client's scope | {sum(x.missing for x in s)} / "
        f"{sum(x.duplicates for x in s)} / {sum(x.foreign for x in s)} (all runs) |",
        f"| **commit → client, p50** | {ms([_pct(x.latencies, 50) for x in s])} |",
        f"| **commit → client, p99** | {ms([_pct(x.latencies, 99) for x in s])} |",
        f"| commit → client, max | {ms([_pct(x.latencies, 100) for x in s])} |",
        f"| per event: commit → its first client, p50 | {ms([_pct(x.first, 50) for x in s])} |",
        f"| per event: commit → its first client, p99 | {ms([_pct(x.first, 99) for x in s])} |",
        f"| per event: first → last client (the fan-out), p50 | {ms([_pct(x.spread, 50) for x in s])} |",
        f"| per event: first → last client (the fan-out), p99 | {ms([_pct(x.spread, 99) for x in s])} |",
        f"| baseline: commit → bare LISTEN, p50 | {ms([_pct(x.listener, 50) for x in s])} |",
        f"| baseline: commit → bare LISTEN, p99 | {ms([_pct(x.listener, 99) for x in s])} |",
        f"| added by the stream (p50 − LISTEN p50) | "
        f"{ms([_pct(x.latencies, 50) - _pct(x.listener, 50) for x in s])} |",
        f"| added by the stream (p99 − LISTEN p99) | "
        f"{ms([_pct(x.latencies, 99) - _pct(x.listener, 99) for x in s])} |",
        f"| stream / LISTEN, p99 | {ratio([_pct(x.latencies, 99) / _pct(x.listener, 99) for x in s])} |",
        f"| writer transaction (start → commit returned), p50 | {ms([_pct(x.commit_ms, 50) for x in s])} |",
        f"| API server CPU during the run (share of one core) | "
        f"{spread([100 * x.server_cpu for x in s], '{:.0f}', ' %')} |",
        f"| stream clients connected / dropped for falling behind / hub reconnects (the API's metrics) | "
        f"{r.hub['clients']:.0f} / {r.hub['dropped']:.0f} / {r.hub['reconnects']:.0f} |",
        f"| clients' processes' CPU (share of one core) | {spread([100 * x.client_cpu for x in s], '{:.0f}', ' %')} |",
        "",
        f"Every client got every event of its scope exactly once and nothing outside it: "
        f"**{'yes' if exact else 'NO'}**. Load average (1/5/15 min) when the run ended: "
        f"{load_average()}, shared by the API server, "
        f"the clients, this process (the writer) and PostgreSQL; the benchmark took {r.elapsed_s:.0f} s.",
    ]
    return "\n".join(lines)


def main() -> str:
    return asyncio.run(_run())


if __name__ == "__main__":
    print(main())
