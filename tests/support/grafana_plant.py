"""A historian filled the way a plant fills it, for running every Grafana panel query.

``fill(backend)`` returns a migrated scratch database holding what the real chain wrote:

1. ``hazardwatch demo`` (simulated plant -> OPC UA / Modbus collectors -> rules -> alarms ->
   historian) with the PLC-restart scenario at 10x: the DCS restarts, the gas detectors'
   gateway drops off (BAD|COMM_FAILURE markers, BAD_QUALITY alarms, SIF_DISABLED when an
   interlock's inputs all fail), killed with SIGKILL after ~8 s of collecting (a crash);
2. the next start on the same data directory stamps the crash gap's markers and records the
   gap, and runs the scenario again until the gateway is offline at the end (BAD points now);
3. operators act through the real alarm engine: acknowledgements (alarm_command, as the API
   submits them); condition edges into the alarm service, as the rule engine produces them, for
   one standing alarm chattering, one latching gas alarm raised and cleared (latched,
   unacknowledged) and one point's STALE alarm; and an approved interlock bypass permit (interlock_bypass, by two real users).

Both backends are filled concurrently (``start_filling``) since each takes about a minute,
mostly waiting for the demo.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from alarms.commands import Command, CommandKind, Role, submit
from api.users import add_user
from core.conditions import RuleKind
from core.config import load_plant
from core.plant import Plant
from storage.db import Backend, connect
from tests.support.api_engine import running_engine
from tests.support.databases import create_scratch_db, drop_scratch_db, migrate

__all__ = ["DEMO", "Filled", "fill", "start_filling"]

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config/demo"
SCENARIO = DEMO / "scenarios/plc-restart.yaml"


@dataclass(frozen=True, slots=True)
class Filled:
    backend: Backend
    dsn: str
    plant: Plant
    start: datetime  # first reading
    end: datetime  # last reading


def _exe() -> str:
    return str(Path(sys.executable).parent / "hazardwatch")


def _count(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute("SELECT count(*) FROM reading").fetchone()
        return int(row[0]) if row else 0


def _run_until_crash(dsn: str, data_dir: Path, log: Path) -> None:
    env = {**os.environ, "DATABASE_URL": dsn}
    args = [_exe(), "demo", str(DEMO), "--scenario", str(SCENARIO), "--speed", "10", "--no-view"]
    args += ["--data-dir", str(data_dir), "--metrics-port", "0"]
    with log.open("w") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300  # a loaded 2-core machine
        while "running (Ctrl-C to stop)" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"demo did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        time.sleep(8)  # the gateway drops off at 6 s
        if _count(dsn) == 0:
            raise RuntimeError(f"demo stored nothing:\n{log.read_text(errors='replace')[-3000:]}")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _run_after_crash(dsn: str, data_dir: Path, log: Path) -> None:
    env = {**os.environ, "DATABASE_URL": dsn}
    args = [_exe(), "demo", str(DEMO), "--scenario", str(SCENARIO), "--speed", "10", "--no-view"]
    args += ["--data-dir", str(data_dir), "--metrics-port", "0", "--duration", "9"]
    with log.open("w") as out:
        done = subprocess.run(args, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"demo after the crash failed:\n{log.read_text(errors='replace')[-3000:]}")


async def _operate(dsn: str, plant: Plant, log_dir: Path) -> None:
    conn = await connect(dsn, autocommit=True)
    try:
        cur = await conn.execute(
            "SELECT key, enterprise FROM alarm_state WHERE NOT acked AND status IN "
            "('unacknowledged', 'returned_unacknowledged', 'latched') ORDER BY key LIMIT 20"
        )
        unacked = await cur.fetchall()
        if len(unacked) < 2:
            raise RuntimeError(f"the scenario raised too few alarms: {unacked}")
        eng = await add_user(conn, "eng_grafana", "陈静", "engineer", None)
        approver = await add_user(conn, "approver_grafana", "杨勇", "approver", None)
        async with running_engine(plant, dsn, log_dir) as engine:
            # half the standing alarms acknowledged by their enterprise's operator, as the API submits it
            ids = [
                await submit(conn, Command(alarm_key=key, kind=CommandKind.ACK, actor=f"张伟 (op_{ent.lower()})",
                                           role=Role.ENTERPRISE_OPERATOR, enterprise=ent))
                for key, ent in unacked[::2]
            ]  # fmt: skip
            for _ in range(600):
                cur = await conn.execute("SELECT count(*) FROM alarm_command WHERE status = 'pending'")
                row = await cur.fetchone()
                if row and row[0] == 0:
                    break
                await asyncio.sleep(0.1)
            cur = await conn.execute(
                "SELECT count(*) FROM alarm_command WHERE id = ANY(%s) AND status = 'applied'", [ids]
            )
            row = await cur.fetchone()
            if not row or row[0] != len(ids):
                raise RuntimeError("the engine did not apply the acknowledgements")
            # a chattering detector: three annunciations within seconds
            # a gas alarm that latched: its condition gone, still unacknowledged (overdue soon)
            cur = await conn.execute("SELECT key FROM alarm_state WHERE status <> 'normal'")
            standing = {row[0] for row in await cur.fetchall()}
            latching = next(
                a.key for a in engine.catalog
                if a.latching and a.rule >= 0 and a.key not in standing and a.key.startswith("LHJH.")
            )  # fmt: skip
            await engine.raise_(latching)
            await engine.clear(latching)
            # a point the engine finds stale (its value no longer arriving though good when last seen)
            stale = next(
                a.key for a in engine.catalog
                if a.kind is RuleKind.STALE and a.rule >= 0 and a.key not in standing and a.key.startswith("LHJH.")
            )  # fmt: skip
            await engine.raise_(stale)
            chatter = next(
                a.key for a in engine.catalog
                if not a.latching and a.rule >= 0 and a.key not in standing and a.key.startswith("LHJH.")
            )  # fmt: skip
            for _ in range(3):
                await engine.clear(chatter)
                await engine.raise_(chatter)
        ent, hs = next((e, h) for e in plant.enterprises for h in e.hazard_sources if h.interlocks)
        now = datetime.now(UTC)
        await conn.execute(
            """INSERT INTO interlock_bypass (id, interlock, enterprise, county, hazard_source, input_tag, reason,
                   compensating_measures, starts_at, expires_at, state, requested_by, requested_by_id,
                   requested_at, decided_by, decided_by_id, decided_at)
               VALUES (%s, %s, %s, %s, %s, NULL, '仪表校验', '现场专人监护, 便携式检测仪', %s, %s, 'approved',
                       '陈静 (eng_grafana)', %s, %s, '杨勇 (approver_grafana)', %s, %s)""",
            (uuid.uuid4(), f"{hs.code}.{hs.interlocks[0].code}", ent.code, ent.county,
             hs.code, now - timedelta(minutes=5), now + timedelta(hours=4), eng.id, now - timedelta(minutes=6),
             approver.id, now - timedelta(minutes=5)),
        )  # fmt: skip
    finally:
        await conn.close()


def fill(backend: Backend, workdir: Path) -> Filled:
    """A scratch database filled as the module docstring says (the caller drops it)."""
    dsn = create_scratch_db(backend)
    try:
        asyncio.run(migrate(dsn))
        plant = load_plant(DEMO)
        data_dir = workdir / "data"
        _run_until_crash(dsn, data_dir, workdir / "demo-1.log")
        _run_after_crash(dsn, data_dir, workdir / "demo-2.log")
        asyncio.run(_operate(dsn, plant, workdir / "alarm-logs"))
        with psycopg.connect(dsn, autocommit=True) as c:
            row = c.execute("SELECT min(time), max(time) FROM reading").fetchone()
        assert row is not None and row[0] is not None
        return Filled(backend, dsn, plant, row[0], row[1])
    except BaseException:
        drop_scratch_db(backend, dsn)
        raise


def start_filling(workdir: Path) -> dict[Backend, Future[Filled]]:
    """Fill both backends at once (threads: the work is in the demo processes and the servers)."""
    pool = ThreadPoolExecutor(2, thread_name_prefix="grafana-fill")
    futures = {}
    for b in (Backend.POSTGRES, Backend.TIMESCALEDB):
        d = workdir / b.value
        d.mkdir(parents=True, exist_ok=True)
        futures[b] = pool.submit(fill, b, d)
    pool.shutdown(wait=False)
    return futures
