"""`hazardwatch run` killed with SIGKILL, then restarted: the gap is marked in history and logged.

Real processes against the simulated plant and a scratch TimescaleDB. The restart finds
the heartbeat not clean, logs it and writes one BAD|COMM_FAILURE marker per tag where the
killed run's collection ended (when its next heartbeat was due): after every reading the
killed run stored, before every reading of the new run. While the restarted run holds the
data directory a second `run` on it is refused, naming the directory and the holder's pid.
A clean stop (SIGTERM) and restart writes no marker.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg

from core.quality import Quality
from storage.heartbeat import Beat
from tests.support.databases import migrate
from tests.support.simulator_fixture import SimulatorFactory

EXE = Path(sys.executable).parent / "hazardwatch"
PLANT = Path(__file__).resolve().parents[1] / "storage" / "data" / "plant.yaml"  # 3 Modbus tags
TAGS = 3


class Run:
    """One `hazardwatch run` child process; its stdout and stderr collected as it goes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.output: list[str] = []
        self._readers = [
            asyncio.create_task(self._read(s)) for s in (proc.stdout, proc.stderr) if s is not None
        ]

    @classmethod
    async def start(cls, config: Path, dsn: str, data_dir: Path) -> Run:
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}  # --dsn only
        env["COLUMNS"] = "250"
        proc = await asyncio.create_subprocess_exec(
            str(EXE), "run", str(config), "--dsn", dsn, "--data-dir", str(data_dir),
            "--metrics-port", "0", "--log-level", "INFO",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        return cls(proc)

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.output.append(line.decode(errors="replace"))

    @property
    def text(self) -> str:
        return "".join(self.output)

    async def wait(self, timeout: float = 30.0) -> int:
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
            await asyncio.gather(*self._readers)
        return code

    async def stop(self, sig: int) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        return await self.wait()


async def rows(
    dsn: str, where: str = "TRUE", args: tuple[object, ...] = ()
) -> list[tuple[int, int, float, int]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(
            "SELECT tag_id, (extract(epoch FROM time) * 1e6)::int8, value, quality FROM reading"
            f" WHERE {where} ORDER BY time",
            args,
        )
        return [(int(t), int(ts), float(v), int(q)) for t, ts, v, q in await cur.fetchall()]


async def wait_for(cond: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not await cond():
            await asyncio.sleep(0.1)


async def test_a_killed_run_leaves_a_marked_gap_and_a_clean_stop_none(
    simulator: SimulatorFactory, tsdb: str, tmp_path: Path
) -> None:
    sim = await simulator(PLANT, seed=3)
    _, port = sim.modbus_address("plc")
    config = tmp_path / "plant.yaml"
    config.write_text(
        PLANT.read_text(encoding="utf-8").replace(
            "port: 5020", f"port: {port}, poll_interval_s: 0.25, timeout_s: 0.5, retries: 0"
        ),
        encoding="utf-8",
    )
    data = tmp_path / "data"
    heartbeat = data / "heartbeat.json"
    await migrate(tsdb)  # so the test can poll `reading` before the first run has migrated

    async def good_rows_after(ts_us: int, n: int) -> bool:
        return len(await rows(tsdb, "time > to_timestamp(%s / 1e6) AND quality = 192", (ts_us,))) >= n

    # 1. Collect, then die without any chance to clean up.
    first = await Run.start(config, tsdb, data)
    await wait_for(lambda: good_rows_after(0, 3 * TAGS))
    assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
    beat = Beat(**json.loads(heartbeat.read_text(encoding="utf-8")))
    assert not beat.clean and beat.pid == first.proc.pid
    before = await rows(tsdb)
    assert before and all(q == Quality.GOOD for *_, q in before)

    # 2. Restart: the gap is marked for every tag and logged.
    second = await Run.start(config, tsdb, data)
    marker_ts = beat.alive_us + round(beat.interval_s * 1e6)  # when the killed run's next beat was due
    markers: list[tuple[int, int, float, int]] = []

    async def marked() -> bool:
        markers[:] = await rows(tsdb, "quality = %s", (int(Quality.BAD_COMM_FAILURE),))
        return len(markers) >= TAGS

    await wait_for(marked)
    await wait_for(lambda: good_rows_after(marker_ts, TAGS))
    assert len({t for t, *_ in markers}) == TAGS and len(markers) == TAGS
    assert all(ts == marker_ts and math.isnan(v) for _, ts, v, _ in markers), (markers, beat)
    assert max(ts for _, ts, _, _ in before) < marker_ts  # every reading the killed run stored precedes it
    assert "did not stop cleanly" in second.text and f"pid {first.proc.pid}" in second.text, second.text

    # 3. A second process on the same data directory is refused, naming it and the holder.
    intruder = await Run.start(config, tsdb, data)
    assert await intruder.wait() == 1, intruder.text
    assert str(data.resolve()) in intruder.text and f"pid {second.proc.pid}" in intruder.text, intruder.text

    # 4. A clean stop says so; the next start writes no marker and logs no crash.
    assert await second.stop(signal.SIGTERM) == 0, second.text
    assert f"comm-failure markers, {TAGS} crash-gap markers" in second.text, second.text
    assert json.loads(heartbeat.read_text(encoding="utf-8"))["clean"] is True
    stopped_at = max(ts for _, ts, _, _ in await rows(tsdb))
    third = await Run.start(config, tsdb, data)
    await wait_for(lambda: good_rows_after(stopped_at, TAGS))
    assert await third.stop(signal.SIGTERM) == 0, third.text
    assert "did not stop cleanly" not in third.text
    assert "0 crash-gap markers" in third.text, third.text
    assert len(await rows(tsdb, "quality = %s", (int(Quality.BAD_COMM_FAILURE),))) == TAGS
