"""OPC UA worker processes: balancing, the wire format, the bounded outbox, the parent-side
runner view, the config key, and the whole pool against the simulator (a worker killed and
restarted, a clean stop with no child left)."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from typer.testing import CliRunner

from collector.base import RunnerStats, SourceHealth
from collector.factory import build_sources
from collector.metrics import SourceMetrics
from collector.opcua.source import OpcUaSource
from collector.opcua.worker_process import Outbox, decode, encode_batch
from collector.opcua.worker_runner import WorkerRunner
from collector.opcua.workers import OpcUaWorkerPool, assign, split_opcua
from core.backoff import Backoff
from core.batch import ReadingBatch
from core.clock import SystemClock
from core.config import ConfigError, load_plant
from core.plant import OpcUaDevice
from core.quality import Quality
from core.registry import TagRegistry
from core.settings import CollectSettings
from hazardwatch.cli import app
from hazardwatch.runtime import Runtime, RuntimeOptions
from storage.db import Backend
from tests.support.databases import create_scratch_db, drop_scratch_db
from tests.support.plants import write_small_plant
from tests.support.simulator_fixture import SimulatorFactory
from tests.support.waiting import eventually

SIM_PLANT = "tests/simulators/data/plant.yaml"


# --- balancing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sizes", "workers", "groups"),
    [
        ([10, 10], 2, [[0], [1]]),
        ([100, 60, 50, 10], 2, [[0, 3], [1, 2]]),  # largest first onto the lightest: 110 | 110
        ([5, 500, 5, 5], 2, [[1], [0, 2, 3]]),
        ([7, 3], 4, [[0], [1]]),  # never an idle process
        ([1, 2, 3, 4, 5, 6], 3, [[0, 5], [1, 4], [2, 3]]),
        ([], 2, []),
    ],
)
def test_devices_are_balanced_by_tag_count(sizes: list[int], workers: int, groups: list[list[int]]) -> None:
    assert assign(sizes, workers) == groups


# --- the wire -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 3, 1000])
def test_a_batch_crosses_the_pipe_unchanged(n: int) -> None:
    rng = np.random.default_rng(n)
    batch = ReadingBatch(
        rng.integers(0, 2**31 - 1, n).astype(np.int32),
        rng.integers(0, 2**62, n).astype(np.int64),
        np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
        rng.integers(0, 256, n).astype(np.uint8),
    )
    kind, source, got = decode(encode_batch(7, batch))
    assert (kind, source) == ("batch", 7)
    assert got == batch
    assert all(a.flags.aligned for a in (got.tag, got.ts, got.value, got.quality))


class GatedConnection:
    """A pipe end whose send blocks until the gate opens: a parent that has fallen behind."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.sent: list[bytes] = []
        self.sending = threading.Event()

    def send_bytes(self, data: bytes) -> None:
        self.sending.set()
        self.gate.wait()
        self.sent.append(data)


def rows(tag: int, n: int) -> ReadingBatch:
    return ReadingBatch.from_rows([(tag, i, float(i), Quality.GOOD) for i in range(n)])


async def test_the_outbox_drops_the_oldest_batches_past_its_bound_and_counts_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn = GatedConnection()
    outbox = Outbox(conn, max_rows=10)  # type: ignore[arg-type]
    outbox.put_batch(0, rows(100, 4))  # taken by the sender, which now blocks in send
    await eventually(conn.sending.is_set)
    for k in range(1, 6):  # 5 batches of 4 rows wait: 20 > 10, so the 3 oldest go
        outbox.put_batch(k % 2, rows(100 + k, 4))
    assert outbox.dropped_batches == {1: 2, 0: 1} and outbox.dropped_rows == {1: 8, 0: 4}
    conn.gate.set()
    outbox.close(5.0)
    assert [int(decode(b)[2].tag[0]) for b in conn.sent] == [100, 104, 105]  # in flight, newest two
    drops = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert drops == ["the main process is behind: dropped 1 batches (oldest first) so far"]  # once


# --- the parent's view of a worker's runner -------------------------------------------------------


def test_a_worker_runner_adds_counters_over_restarts_and_is_failed_until_data_again() -> None:
    source = OpcUaSource(OpcUaDevice(protocol="OPCUA", id="DCS9", endpoint="opc.tcp://127.0.0.1:4840"), [])
    runner = WorkerRunner(source, 1, SystemClock())
    assert runner.stats.state == "starting" and not runner.up
    first = RunnerStats(state="ok", reads=10, readings=100, errors=1, reconnects=1, last_ok_us=5)
    runner.reported(first.__dict__, SourceHealth({"DCS9": True}, 2), 30, 3)
    assert runner.up and runner.stats.readings == 100
    runner.died(1_000_000, "OPC UA worker 1 (pid 42) killed by SIGKILL")
    s = runner.stats
    assert (s.state, s.errors, s.restarts, s.readings) == ("failed", 2, 1, 100)
    assert "SIGKILL" in s.last_error and not runner.up
    runner.reported(RunnerStats(state="starting").__dict__, SourceHealth({"DCS9": True}), 0, 0)
    assert runner.stats.state == "failed"  # the new worker has not delivered yet
    runner.reported(
        RunnerStats(state="ok", reads=2, readings=20).__dict__, SourceHealth({"DCS9": True}), 5, 1
    )
    s = runner.stats
    assert (s.state, s.reads, s.readings, s.errors) == ("ok", 12, 120, 2) and runner.up
    assert s.last_outage_s > 0
    registry = CollectorRegistry()
    registry.register(SourceMetrics([runner]))
    text = generate_latest(registry).decode()
    assert 'hazardwatch_source_up{source="DCS9"} 1.0' in text
    assert 'hazardwatch_source_restarts_total{source="DCS9"} 1.0' in text
    assert runner.dropped == (35, 4)


# --- the config key -------------------------------------------------------------------------------


def plant_with(folder: Path, settings: str) -> Path:
    path = write_small_plant(folder, "- {protocol: OPCUA, id: D1, endpoint: 'opc.tcp://127.0.0.1:4840'}", "")
    plant = path / "plant.yaml"
    plant.write_text(settings + plant.read_text(encoding="utf-8"), encoding="utf-8")
    return plant


@pytest.mark.parametrize(("value", "workers"), [("0", 0), ("2", 2), ("64", 64), ('"4"', 4)])
def test_the_worker_count_is_a_setting(tmp_path: Path, value: str, workers: int) -> None:
    plant = load_plant(plant_with(tmp_path, f"settings:\n  collect:\n    opcua_workers: {value}\n"))
    assert plant.settings.collect.opcua_workers == workers


def test_no_setting_keeps_opc_ua_in_process(tmp_path: Path) -> None:
    assert load_plant(plant_with(tmp_path, "")).settings.collect.opcua_workers == 0


@pytest.mark.parametrize("value", ["-1", "65", "1.5", "many", ".inf", "null"])
def test_an_unusable_worker_count_is_refused_with_its_line(tmp_path: Path, value: str) -> None:
    path = plant_with(tmp_path, f"settings:\n  collect:\n    opcua_workers: {value}\n")
    with pytest.raises(ConfigError) as info:
        load_plant(path)
    (issue,) = info.value.issues
    assert issue.line == 3 and "opcua_workers" in issue.path
    assert f"{path}:3" in str(info.value)


@pytest.mark.parametrize(("value", "exit_code"), [("2", 0), ("0", 0), ("65", 2), ("-1", 2), ("two", 2)])
def test_hazardwatch_check_names_the_line_of_a_bad_worker_count(
    tmp_path: Path, value: str, exit_code: int
) -> None:
    path = plant_with(tmp_path, f"settings:\n  collect:\n    opcua_workers: {value}\n")
    result = CliRunner().invoke(app, ["check", str(tmp_path)], env={"COLUMNS": "300"})
    assert result.exit_code == exit_code, result.output
    errors = [line for line in result.output.splitlines() if line.startswith(f"{path}:")]
    if exit_code:
        (line,) = errors
        assert line.startswith(f"{path}:3 settings.collect.opcua_workers: ")
    else:
        assert errors == []


# --- the pool against the simulator ---------------------------------------------------------------


def ours() -> list[mp.process.BaseProcess]:
    return [p for p in mp.active_children() if p.name.startswith("hazardwatch-opcua-worker")]


async def test_two_workers_feed_the_parent_survive_a_kill_and_stop_clean(
    simulator: SimulatorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sim = await simulator(SIM_PLANT, seed=1, modbus=False, autostep=True, rate_hz=4)
    plant = sim.plant_for_clients()
    registry = TagRegistry.from_plant(plant)
    opcua, rest = split_opcua(build_sources(plant, registry, SystemClock()))
    assert {s.name for s in opcua} == {"DCS1", "DCS2"} and {s.name for s in rest} == {"PLC1", "GDS1"}
    tags_of = {s.name: set(s.tags.tolist()) for s in opcua}
    batches: list[ReadingBatch] = []
    pool = OpcUaWorkerPool(
        opcua,
        2,
        batches.append,
        runner_options={"backoff_initial_s": 0.2, "backoff_max_s": 1.0},
        restart=Backoff(0.2, 1.0, jitter=0.25),
    )
    assert [len(w.sources) for w in pool.workers] == [1, 1]

    def seen(since: int = 0, quality: int = Quality.GOOD) -> set[int]:
        got: set[int] = set()
        for b in batches[since:]:
            got |= set(b.tag[b.quality == quality].tolist())
        return got

    await pool.start()
    try:
        # Every tag of both devices arrives in this process, at its own index, GOOD.
        await eventually(lambda: seen() >= tags_of["DCS1"] | tags_of["DCS2"], timeout=60)
        every = ReadingBatch.concat(batches)
        assert set(every.tag.tolist()) <= tags_of["DCS1"] | tags_of["DCS2"]
        assert np.isfinite(every.value[every.quality == Quality.GOOD]).all()
        by_name = {r.source.name: r for r in pool.runners}
        await eventually(lambda: all(r.up for r in by_name.values()))
        assert all(r.stats.readings > 0 for r in by_name.values())

        # Kill the worker running DCS1: its tags are marked, it restarts, its data resume.
        victim = next(w for w in pool.workers if w.sources[0].name == "DCS1")
        assert victim.process is not None and victim.process.pid is not None
        old_pid = victim.process.pid
        mark = len(batches)
        os.kill(old_pid, signal.SIGKILL)
        await eventually(lambda: seen(mark, Quality.BAD_COMM_FAILURE) == tags_of["DCS1"], timeout=30)
        assert not by_name["DCS1"].up and by_name["DCS1"].stats.restarts >= 1
        assert "SIGKILL" in by_name["DCS1"].stats.last_error
        assert not seen(mark, Quality.BAD_COMM_FAILURE) & tags_of["DCS2"]  # the other worker is untouched
        marker_at = next(
            k for k in range(mark, len(batches)) if (batches[k].quality == Quality.BAD_COMM_FAILURE).any()
        )
        await eventually(lambda: seen(marker_at + 1) >= tags_of["DCS1"], timeout=60)
        assert victim.process.pid != old_pid
        await eventually(lambda: by_name["DCS1"].up, timeout=30)
        assert by_name["DCS1"].stats.readings > 0 and by_name["DCS2"].stats.restarts == 0
        logged = [r.getMessage() for r in caplog.records]
        assert any("killed by SIGKILL" in m and "BAD|COMM_FAILURE" in m and "restarting" in m for m in logged)
        assert any("recovered in OPC UA worker" in m for m in logged)
        assert any("[OPC UA worker" in m for m in logged)  # the workers' own log lines reach ours
        assert len(ours()) == 2
    finally:
        async with asyncio.timeout(30):
            await pool.stop()
    assert ours() == []
    assert all(w.process is not None and w.process.exitcode == 0 for w in pool.workers)  # stopped, not killed


async def test_a_hung_worker_is_killed_and_replaced_and_a_stuck_one_does_not_hang_stop(
    simulator: SimulatorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sim = await simulator(SIM_PLANT, seed=1, modbus=False, autostep=True, rate_hz=4)
    plant = sim.plant_for_clients()
    opcua, _ = split_opcua(build_sources(plant, TagRegistry.from_plant(plant), SystemClock()))
    dcs2 = [s for s in opcua if s.name == "DCS2"]
    tags = set(dcs2[0].tags.tolist())
    batches: list[ReadingBatch] = []
    pool = OpcUaWorkerPool(
        dcs2, 3, batches.append, restart=Backoff(0.2, 1.0, jitter=0.25), silent_s=2.0, stop_wait_s=1.0
    )
    assert len(pool.workers) == 1  # one device: one process, not three
    worker = pool.workers[0]

    def good_since(mark: int) -> set[int]:
        return {int(t) for b in batches[mark:] for t in b.tag[b.quality == Quality.GOOD]}

    await pool.start()
    try:
        await eventually(lambda: good_since(0) >= tags, timeout=60)
        assert worker.process is not None
        hung = worker.process.pid
        assert hung is not None
        os.kill(hung, signal.SIGSTOP)  # alive, but answers nothing: only the silence shows it
        mark = len(batches)
        await eventually(lambda: worker.process is not None and worker.process.pid != hung, timeout=30)
        assert any("sent nothing for 2 s: killing it" in r.getMessage() for r in caplog.records)
        assert {int(t) for b in batches[mark:] for t in b.tag[b.quality == Quality.BAD_COMM_FAILURE]} == tags
        mark = len(batches)
        await eventually(lambda: good_since(mark) >= tags, timeout=60)
        os.kill(worker.process.pid, signal.SIGSTOP)  # and now one that cannot obey the stop
    finally:
        async with asyncio.timeout(30):
            await pool.stop()
    assert ours() == []
    assert worker.process.exitcode == -signal.SIGKILL


# --- wired into the runtime -----------------------------------------------------------------------


async def test_the_runtime_collects_opc_ua_through_workers(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    sim = await simulator(SIM_PLANT, seed=1, modbus=False, autostep=True, rate_hz=4)
    plant = sim.plant_for_clients()
    settings = plant.settings.model_copy(
        update={"data_dir": str(tmp_path), "collect": CollectSettings(opcua_workers=2)}
    )
    plant = plant.model_copy(update={"settings": settings})
    dsn = create_scratch_db(Backend.POSTGRES)
    runtime = Runtime(plant, dsn, options=RuntimeOptions(metrics_port=None))
    try:
        await runtime.start()
        assert runtime.opcua_pool is not None and len(runtime.opcua_pool.workers) == 2
        remote = [r for r in runtime.runners if isinstance(r, WorkerRunner)]
        assert {r.source.name for r in remote} == {"DCS1", "DCS2"}
        assert {r.source.name for r in runtime.runners} == {d.id for d in plant.devices()}  # each once
        opc = np.concatenate([r.source.tags for r in remote])
        await eventually(lambda: bool((runtime.live.quality[opc] == Quality.GOOD).all()), timeout=60)
        await eventually(lambda: all(r.up for r in remote), timeout=30)
        text = generate_latest(runtime.metrics_registry).decode()
        assert 'hazardwatch_opcua_worker_up{worker="0"} 1.0' in text
        assert 'hazardwatch_opcua_worker_up{worker="1"} 1.0' in text
        assert 'hazardwatch_source_up{source="DCS1"} 1.0' in text
        assert 'hazardwatch_opcua_worker_dropped_rows_total{source="DCS1",worker="0"} 0.0' in text or (
            'hazardwatch_opcua_worker_dropped_rows_total{source="DCS1",worker="1"} 0.0' in text
        )
    finally:
        async with asyncio.timeout(60):
            await runtime.stop()
        drop_scratch_db(Backend.POSTGRES, dsn)
    assert ours() == []
    summary = runtime.summary()
    assert summary.readings >= len(opc) and summary.to_historian >= summary.readings


# --- the main process going away without stop() ----------------------------------------------------

ORPHAN = """
import asyncio, sys
from collector.opcua.source import OpcUaSource
from collector.opcua.workers import OpcUaWorkerPool
from core.plant import OpcUaDevice

KEPT = []

async def main():
    gone = OpcUaDevice(protocol="OPCUA", id="GONE", endpoint="opc.tcp://127.0.0.1:9")  # nobody listens
    pool = OpcUaWorkerPool([OpcUaSource(gone, [])], 1, lambda batch: None)
    await pool.start()
    KEPT.append(pool)  # still referenced at exit, as a Runtime's pool would be
    while not pool.pids():
        await asyncio.sleep(0.05)
    print(pool.pids()[0], flush=True)
    if sys.argv[1] == "killed":
        await asyncio.sleep(600)

asyncio.run(main())
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its parent's reaping is left


@pytest.mark.parametrize("end", ["returns", "killed"])
async def test_workers_end_when_the_main_process_ends_without_stop(end: str) -> None:
    main = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ORPHAN, end, stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).parents[2]
    )
    assert main.stdout is not None
    async with asyncio.timeout(60):
        worker = int(await main.stdout.readline())
    assert alive(worker)
    if end == "killed":
        main.kill()  # no stop(), no exit hooks: the workers see their control pipe close
    # "returns": multiprocessing's exit hook joins the worker, which ignores its SIGTERM; it ends
    # because the main process's pipe ends close with its event loop (a hang here otherwise).
    async with asyncio.timeout(30):
        await main.wait()
    await eventually(lambda: not alive(worker), timeout=30)
