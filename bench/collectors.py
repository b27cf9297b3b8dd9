"""Collector benchmarks: OpcUaSource (subscription) and ModbusSource against the simulator.

``main() -> str`` returns the markdown section for docs/performance.md. The simulator runs in
a child process (multiprocessing, spawn), so the client measured here has its own core of
the two and its CPU time (``time.process_time``) is its own; the child stops on command,
when this process goes away, or after ``SERVER_LIFETIME_S`` whatever happens.

Each source is driven the way production drives it (CollectorRunner, publish callback
counting the rows of every ReadingBatch) and compared, in the same run and against the same
server, with a bare client of the same library doing the same protocol work and nothing
else:

- OPC UA: a bare asyncua subscription on the same nodes with the same publishing interval,
  sampling interval and queue size, and a handler that only counts. The server feeds value
  changes for ``OPC_FEED_S`` seconds and reports how many notifications it queued; the
  client is followed to its last delivery. Feeds (``FEEDS``): the simulator stepping as
  shipped, flat out; and pre-built values pushed through the same server datachange path,
  paced at ``OPC_PACE`` and flat out, with asyncua's per-change ``deepcopy`` of the
  DataValue switched off in the server process (the shipped server cannot reach the target
  rate otherwise). ``ROUNDS`` rounds per feed, each measuring both clients.
- Modbus: a bare pymodbus client issuing the plan's read requests (125 registers each) one
  after the other, no decoding, versus ModbusSource polls back to back (poll interval
  ~0), each poll = the same requests + copy into the word buffer + vectorized decode +
  ReadingBatch; ``MB_ROUNDS`` rounds, each measuring both clients.
- OPC UA worker processes (``render_workers``): the same nodes as two devices, collected
  with ``settings.collect.opcua_workers`` 0, 1 and 2 (OpcUaWorkerPool, batches through pipes
  into this process) against the replay feed, flat out; rows/s into this process, this
  process's CPU per change, the workers' CPU per change (/proc), ``WK_ROUNDS`` rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from core.batch import ReadingBatch
from core.plant import ModbusDevice, OpcUaDevice, Plant

__all__ = ["main", "synthetic_plant"]

OPC_NODES = 5000
OPC_INTERVAL_S = 0.25  # publishing and sampling interval (device interval_s)
OPC_QUEUE = 10  # monitored-item queue size (the device default)
# A server saturated by a flat-out feed on a shared 2-core machine can go quiet for seconds;
# the benchmark measures intake, not failover, so the device allows 10 s without a publish
# response (40 intervals) instead of the 2 s floor a plant device would use.
OPC_WATCHDOG_INTERVALS = 40.0
# Likewise the runner's read watchdog: a starved client loop must not turn throughput runs
# into reconnect runs (CollectorRunner read timeout, s).
PATIENT_READ_TIMEOUT_S = 20.0
# 4 s (16 publishing intervals) per run of the main table: it runs 3 feeds x ROUNDS x 2 clients.
OPC_FEED_S = 4.0
OPC_PACE = 25_000  # changes/s of the paced feed: 1.25x the target
# feed -> (server mode, paced rate or None = flat out)
FEEDS: dict[str, tuple[str, float | None]] = {
    "stock": ("stock", None),  # the simulator as shipped, stepping back to back
    "paced": ("replay", OPC_PACE),  # pre-built values through the same server path, paced
    "max": ("replay", None),  # the same, flat out
}
MB_TAGS = 10_000  # INT16 holding registers 0..9999: 80 reads of 125 registers per poll
MB_RUN_S = 4.0
MB_WARMUP_S = 0.5
ROUNDS = int(os.environ.get("HW_BENCH_ROUNDS", "3"))  # each OPC UA feed, both clients per round
MB_ROUNDS = ROUNDS
SERVER_LIFETIME_S = 600.0  # 3 feeds x ROUNDS x 2 clients, ~10 s each, plus the server's start
WK_COUNTS = (0, 1, 2)  # settings.collect.opcua_workers measured
WK_ROUNDS = int(os.environ.get("HW_BENCH_WORKER_ROUNDS", "5"))  # each round measures every count once
WK_FEED_S = 5.0  # per run of the worker section
WK_FEED = "max"  # the replay feed, flat out: what reaches the main process when the server pushes all it can
WK_SERVER_LIFETIME_S = 900.0
NS_URI = "urn:bench"
OPC_TARGET = 20_000  # value changes/s into batches (DESIGN.md)
MB_TARGET = 100_000  # registers/s (DESIGN.md)


def synthetic_plant(n_opc: int = OPC_NODES, n_mb: int = MB_TAGS, opc_devices: int = 1) -> Plant:
    """Analog tags: ``n_opc`` OPC UA nodes (no deadband: every change is reported) and
    ``n_mb`` INT16 holding registers at addresses 0.. (scaled 0..32000 -> range). With
    ``opc_devices`` > 1 the nodes are split into that many equal devices ``OPC0``, ``OPC1``, ...
    on the same endpoint (one server, one session and subscription per device)."""
    opc_ids = ["OPC"] if opc_devices == 1 else [f"OPC{k}" for k in range(opc_devices)]
    kinds = [("TEMPERATURE", "°C", [0, 200]), ("PRESSURE", "MPa", [0, 4]), ("FLOW", "m³/h", [0, 500])]
    tags: list[dict[str, Any]] = []
    equipment = []
    for i in range(n_opc + n_mb):
        eq = f"E{i // 50:04d}"
        if i % 50 == 0:
            equipment.append({"code": eq, "name": eq})
        kind, unit, rng = kinds[i % 3]
        src: dict[str, Any] = (
            {"device": opc_ids[i * opc_devices // n_opc], "node": f"s=T{i}", "namespace_uri": NS_URI}
            if i < n_opc
            else {"device": "MB", "table": "HOLDING", "address": i - n_opc, "type": "INT16",
                  "scale": {"raw": [0, 32000]}}
        )  # fmt: skip
        tags.append({"code": f"T{i}", "name": f"T{i}", "equipment": eq, "kind": kind, "unit": unit,
                     "range": rng, "source": src, "key": f"B.{eq}.T{i}"})  # fmt: skip
    return Plant.model_validate(
        {
            "enterprises": [
                {
                    "code": "B",
                    "name": "bench",
                    "county": "x",
                    "devices": [
                        *(
                            {
                                "protocol": "OPCUA",
                                "id": opc_id,
                                "endpoint": "opc.tcp://127.0.0.1:4840",
                                "interval_s": OPC_INTERVAL_S,
                                "queue_size": OPC_QUEUE,
                                "publish_watchdog_intervals": OPC_WATCHDOG_INTERVALS,
                            }
                            for opc_id in opc_ids
                        ),
                        {
                            "protocol": "MODBUS",
                            "id": "MB",
                            "host": "127.0.0.1",
                            "port": 502,
                            "poll_interval_s": 0.001,
                        },
                    ],
                    "hazard_sources": [
                        {
                            "code": "H",
                            "name": "h",
                            "kind": "STORAGE",
                            "grade": 1,
                            "units": [{"code": "U", "name": "u", "equipment": equipment}],
                            "tags": tags,
                        }
                    ],
                }
            ]
        }
    )


# --- the server process -----------------------------------------------------------------


def _patch_server() -> tuple[dict[str, int], dict[str, bool]]:
    """Count queued notifications; make asyncua's DataValue deepcopy switchable (server only)."""
    from asyncua.server import internal_subscription, monitored_item_service

    counts, flags = {"queued": 0}, {"no_copy": False}
    enqueue = internal_subscription.InternalSubscription.enqueue_datachange_event

    async def counting(self: Any, mid: int, eventdata: Any, maxsize: int) -> None:
        counts["queued"] += 1
        await enqueue(self, mid, eventdata, maxsize)

    copying = monitored_item_service.MonitoredItemValues.set_current_datavalue

    def set_current(self: Any, value: Any) -> None:
        if flags["no_copy"]:  # the simulator builds a fresh DataValue per change and never mutates it
            self.old_dvalue, self.current_dvalue = self.current_dvalue, value
        else:
            copying(self, value)

    internal_subscription.InternalSubscription.enqueue_datachange_event = counting
    monitored_item_service.MonitoredItemValues.set_current_datavalue = set_current
    return counts, flags


async def _serve_async(kind: str, conn: Connection, parent: int) -> None:
    from simulators.runner import Simulator

    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    counts, flags = _patch_server()
    opc = kind.startswith("opcua")  # "opcua": one device; "opcua2": the same nodes as two devices
    n_dev = 2 if kind == "opcua2" else 1
    plant = synthetic_plant(OPC_NODES if opc else 0, MB_TAGS if kind == "modbus" else 0, n_dev)
    started = time.perf_counter()
    sim = Simulator(
        plant,
        seed=1,
        free_ports=True,
        autostep=kind == "modbus",
        opcua=opc,
        modbus=kind == "modbus",
    )
    await sim.start()
    try:
        address = sim.opcua_endpoint("OPC" if n_dev == 1 else "OPC0") if opc else sim.modbus_address("MB")[1]
        conn.send((address, time.perf_counter() - started))
        deadline = time.monotonic() + (WK_SERVER_LIFETIME_S if kind == "opcua2" else SERVER_LIFETIME_S)
        replay: Callable[[], Awaitable[None]] | None = None
        while time.monotonic() < deadline and os.getppid() == parent:
            if not conn.poll():
                await asyncio.sleep(0.02)
                continue
            cmd = conn.recv()
            if cmd[0] != "feed":
                break
            _, mode, seconds, rate = cmd
            flags["no_copy"] = mode != "stock"
            if mode != "stock" and replay is None:
                replay = _replay(sim)  # built once: rounds keep alternating across feeds
            step = sim.step if replay is None or mode == "stock" else replay
            period = OPC_NODES / rate if rate else 0.0  # one round changes every node once
            q0, c0, t0, rounds = counts["queued"], time.process_time(), time.perf_counter(), 0
            while time.perf_counter() - t0 < seconds:
                await step()
                rounds += 1
                # Paced: wait for the next round's slot; flat out: just let the server answer
                # publish requests between rounds (a round blocks its loop for 0.1-0.5 s).
                await asyncio.sleep(max(0.002, t0 + rounds * period - time.perf_counter()))
            wall = time.perf_counter() - t0
            conn.send(
                {
                    "rounds": rounds,
                    "queued": counts["queued"] - q0,
                    "wall": wall,
                    "cpu": time.process_time() - c0,
                }
            )
    finally:
        await sim.stop()


def _replay(sim: Any) -> Callable[[], Awaitable[None]]:
    """Push pre-built DataValues (two per node, alternating) into the simulator's OPC UA server
    through the same datachange path ``OpcUaEndpointServer.publish`` uses, minus the models
    and building the values: what the server can serve fastest."""
    from datetime import UTC, datetime

    from asyncua import ua

    server = sim.opcua[0]
    attrs = server._attrs  # the Value attribute of every node, as publish() uses them
    now = datetime.now(UTC)
    table = [
        [ua.DataValue(Value=ua.Variant(float(p + k), ua.VariantType.Double), StatusCode_=ua.StatusCode(0),
                      SourceTimestamp=now, ServerTimestamp=now) for k in range(2)]
        for p in range(len(attrs))
    ]  # fmt: skip
    rounds = [0]

    async def replay() -> None:
        k = rounds[0] % 2
        rounds[0] += 1
        for attr, dvs in zip(attrs, table, strict=True):
            dv = dvs[k]
            attr.value = dv
            for handle, callback in list(attr.datachange_callbacks.items()):
                await callback(handle, dv)

    return replay


def _serve(kind: str, conn: Connection, parent: int) -> None:
    with contextlib.suppress(EOFError, BrokenPipeError, KeyboardInterrupt):
        asyncio.run(_serve_async(kind, conn, parent))


class _Server:
    """The simulator in a child process; always stopped (command, then terminate, then kill)."""

    def __init__(self, kind: str) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_serve, args=(kind, child, os.getpid()), daemon=True, name=f"bench-{kind}"
        )

    def __enter__(self) -> _Server:
        self.proc.start()
        try:
            if not self.conn.poll(120):
                raise RuntimeError("simulator process did not start within 120 s")
            self.address, self.start_s = self.conn.recv()
        except EOFError:
            self.proc.join(5)
            raise RuntimeError(
                f"simulator process exited while starting (exit code {self.proc.exitcode})"
            ) from None
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(("stop",))
        self.proc.join(15)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


# --- measurement --------------------------------------------------------------------------


@dataclass
class Run:
    client: str  # "bare" | "source"
    values: int  # delivered (OPC UA: notifications / rows in batches; Modbus: registers)
    wall_s: float  # the measured window
    cpu_s: float  # client CPU time in that window
    rate: float  # values/s on the wall clock
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def cpu_per_1k(self) -> float:
        return self.cpu_s / self.values * 1000

    @property
    def busy(self) -> float:
        return self.cpu_s / self.wall_s

    @property
    def capacity(self) -> float:
        """Values/s one fully busy core would handle at this CPU cost per value."""
        return self.values / self.cpu_s


class _Counter:
    """A bare handler: counts and does nothing else."""

    n = 0

    def datachange_notification(self, node: object, val: object, data: object) -> None:
        self.n += 1


def _run(coro: Any, limit_s: float = 120.0) -> Any:
    """asyncio.run with an upper bound on the whole client measurement."""

    async def bounded() -> Any:
        async with asyncio.timeout(limit_s):
            return await coro

    return asyncio.run(bounded())


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel a CollectorRunner task and wait for it. On Python 3.11 ``asyncio.wait_for`` (used by
    the runner) can swallow a cancel that lands in the tick its inner read completes
    (CPython gh-86296), and the runner then simply goes on reading: cancel again until it ends."""
    deadline = time.monotonic() + 30
    while not task.done():
        if time.monotonic() > deadline:
            raise RuntimeError("CollectorRunner did not stop within 30 s of cancel()")
        task.cancel()
        await asyncio.wait({task}, timeout=0.2)
    with contextlib.suppress(asyncio.CancelledError):
        task.result()


async def _settle(count: Callable[[], int], want: int, quiet_s: float = 0.6, limit_s: float = 30.0) -> None:
    """Wait until the initial values have arrived and nothing more is coming."""
    t0 = last_t = time.perf_counter()
    last = count()
    while time.perf_counter() - t0 < limit_s:
        await asyncio.sleep(0.05)
        c = count()
        if c != last:
            last, last_t = c, time.perf_counter()
        elif c >= want and time.perf_counter() - last_t > quiet_s:
            return


async def _feed(server: _Server, count: Callable[[], int], feed: str, client: str, seconds: float) -> Run:
    """Ask for ``seconds`` of value changes and follow the deliveries to the last one."""
    mode, rate = FEEDS[feed]
    base = last = count()
    c0, t0 = time.process_time(), time.perf_counter()
    cpu_last, t_last = c0, t0
    first: tuple[float, int] | None = None  # (time, count) of the first delivery
    server.conn.send(("feed", mode, seconds, rate))
    done: dict[str, float] | None = None
    t_done = 0.0
    while True:
        await asyncio.sleep(0.02)
        now, c = time.perf_counter(), count()
        if c != last:
            last, t_last, cpu_last = c, now, time.process_time()
            first = first or (now, c)
        if done is None and server.conn.poll():
            done, t_done = server.conn.recv(), now
        # Done: everything queued has arrived, or nothing more for 2 s after the feed ended
        # (notifications the server's queues dropped never come).
        if done is not None and (last - base >= done["queued"] or now - max(t_last, t_done) > 2.0):
            break
        if now - t0 > seconds + 30:
            raise RuntimeError("OPC UA feed did not finish")
    if done is None or first is None:
        raise RuntimeError("OPC UA feed delivered nothing")
    # Steady rate: from the first delivery to the last (both carry the same publish latency).
    steady = (last - first[1]) / (t_last - first[0]) if t_last > first[0] else 0.0
    return Run(
        client,
        last - base,
        t_last - t0,
        cpu_last - c0,
        steady,
        {"queued": done["queued"], "server_rate": done["queued"] / done["wall"],
         "server_busy": done["cpu"] / done["wall"]},
    )  # fmt: skip


async def _opc_bare(server: _Server, device: OpcUaDevice, feed: str) -> Run:
    from asyncua import Client

    async with Client(device.endpoint, timeout=device.timeout_s) as client:
        ns = await client.get_namespace_index(NS_URI)
        nodes = [client.get_node(f"ns={ns};s=T{i}") for i in range(OPC_NODES)]
        handler = _Counter()
        sub = await client.create_subscription(device.interval_s * 1000, handler)
        for k in range(0, len(nodes), 500):  # OpcUaSource's chunk size
            await sub.subscribe_data_change(
                nodes[k : k + 500], queuesize=device.queue_size, sampling_interval=device.interval_s * 1000
            )
        await _settle(lambda: handler.n, OPC_NODES)
        return await _feed(server, lambda: handler.n, feed, "bare", OPC_FEED_S)


async def _opc_source(server: _Server, plant: Plant, device: OpcUaDevice, feed: str) -> Run:
    from collector.base import CollectorRunner
    from collector.opcua.source import OpcUaSource, points_for_device
    from core.registry import TagRegistry

    source = OpcUaSource(device, points_for_device(plant, TagRegistry.from_plant(plant), device))
    rows = [0, 0]  # rows, batches

    def publish(batch: ReadingBatch) -> None:
        rows[0] += len(batch)
        rows[1] += 1

    runner = CollectorRunner(source, publish, read_timeout_s=PATIENT_READ_TIMEOUT_S)
    task = asyncio.create_task(runner.run())
    try:
        await _settle(lambda: rows[0], OPC_NODES)
        b0 = rows[1]
        run = await _feed(server, lambda: rows[0], feed, "source", OPC_FEED_S)
        run.extra["batches"] = rows[1] - b0
        run.extra["dropped"] = source.dropped
        if runner.stats.errors:
            raise RuntimeError(f"OpcUaSource failed during the benchmark: {runner.stats.last_error}")
        return run
    finally:
        await _stop(task)


def _opcua() -> tuple[dict[str, list[Run]], float]:
    runs: dict[str, list[Run]] = {}
    with _Server("opcua") as server:
        plant = synthetic_plant(OPC_NODES, 0)
        ents = [
            e.model_copy(update={"devices": [d.model_copy(update={"endpoint": server.address})
                                             if isinstance(d, OpcUaDevice) else d for d in e.devices]})
            for e in plant.enterprises
        ]  # fmt: skip
        plant = plant.model_copy(update={"enterprises": ents})
        device = next(d for d in plant.devices() if isinstance(d, OpcUaDevice))
        schedule = []
        for feed in FEEDS:
            for r in range(ROUNDS):  # alternate which client goes first
                pair = [(feed, "bare"), (feed, "source")]
                schedule += pair if r % 2 == 0 else pair[::-1]
        for feed, client in schedule:
            coro = (
                _opc_bare(server, device, feed)
                if client == "bare"
                else _opc_source(server, plant, device, feed)
            )
            run = _run(coro)
            runs.setdefault(feed, []).append(run)
            print(
                f"  opcua {feed:5} {client:6}: server queued {run.extra['server_rate']:,.0f}/s, delivered "
                f"{run.values:,} of {int(run.extra['queued']):,}, steady {run.rate:,.0f}/s, "
                f"{run.cpu_per_1k * 1e3:.1f} ms CPU per 1k, busy {run.busy:.0%}",
                flush=True,
            )
        return runs, server.start_s


def _cpu_of(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes ``pids`` used so far (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


async def _opc_workers(server: _Server, plant: Plant, workers: int) -> Run:
    """The plant's OPC UA devices as ``hazardwatch run`` collects them with
    ``settings.collect.opcua_workers: workers``: 0 = CollectorRunners on this loop, else an
    OpcUaWorkerPool whose batches arrive here through its pipes; the publish callback counts rows."""
    from collector.base import CollectorRunner
    from collector.factory import build_sources
    from collector.opcua.workers import OpcUaWorkerPool, split_opcua
    from core.clock import SystemClock
    from core.registry import TagRegistry

    sources = build_sources(plant, TagRegistry.from_plant(plant), SystemClock())
    rows = [0]

    def publish(batch: ReadingBatch) -> None:
        rows[0] += len(batch)

    pool: OpcUaWorkerPool | None = None
    runners: list[CollectorRunner] = []
    tasks: list[asyncio.Task[None]] = []
    patient = PATIENT_READ_TIMEOUT_S
    if workers:
        options = {"read_timeout_s": patient}
        pool = OpcUaWorkerPool(split_opcua(sources)[0], workers, publish, runner_options=options)
        await pool.start()
        runners = pool.runners
    else:
        runners = [CollectorRunner(s, publish, read_timeout_s=patient) for s in sources]
        tasks = [asyncio.create_task(r.run()) for r in runners]
    try:
        await _settle(lambda: rows[0], OPC_NODES, limit_s=90)
        pids = pool.pids() if pool is not None else []
        w0, e0 = _cpu_of(pids), sum(r.stats.errors for r in runners)
        run = await _feed(server, lambda: rows[0], WK_FEED, f"w{workers}", WK_FEED_S)
        run.extra["worker_cpu"] = _cpu_of(pids) - w0
        # A loop too busy to handle publish responses in time trips the publish watchdog: a finding
        # (reported per run), not a benchmark failure.
        run.extra["failures"] = sum(r.stats.errors for r in runners) - e0
        return run
    finally:
        for task in tasks:
            await _stop(task)
        if pool is not None:
            await pool.stop()


PIPE_ROWS = 2_500  # rows per batch: one device's publish of the worker section
PIPE_BATCHES = 400


def _pipe_sender(conn: Connection, rows: int, batches: int) -> None:
    """Child: the worker's half of the transport, as fast as it goes (the batch is built once)."""
    import numpy as np

    from collector.opcua.worker_process import encode_batch

    batch = ReadingBatch(
        np.arange(rows, dtype=np.int32),
        np.full(rows, 1_700_000_000_000_000, dtype=np.int64),
        np.linspace(0.0, 1.0, rows),
        np.full(rows, 0xC0, dtype=np.uint8),
    )
    for _ in range(batches):
        conn.send_bytes(encode_batch(0, batch))
    conn.close()


def _pipe_transport() -> tuple[float, float]:
    """The main process's half: recv_bytes + decode into a ReadingBatch, as the pool's reader
    thread does, for PIPE_BATCHES batches of PIPE_ROWS rows. (rows/s, receiver CPU ms per 1k rows)."""
    from collector.opcua.worker_process import decode

    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_pipe_sender, args=(send, PIPE_ROWS, PIPE_BATCHES), daemon=True)
    proc.start()
    send.close()
    first = recv.recv_bytes()  # the child's start-up is not part of the transport
    c0, t0 = time.process_time(), time.perf_counter()
    got = len(decode(first)[2])
    with contextlib.suppress(EOFError):
        while True:
            got += len(decode(recv.recv_bytes())[2])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    proc.join(10)
    if got != PIPE_ROWS * PIPE_BATCHES:
        raise RuntimeError(f"pipe transport delivered {got} of {PIPE_ROWS * PIPE_BATCHES} rows")
    return got / wall, cpu / got * 1e6


def _opcua_workers() -> tuple[dict[int, list[Run]], float, list[tuple[float, float]]]:
    """WK_ROUNDS rounds; each measures every worker count once (order rotated per round), and
    the pipe transport alone once."""
    runs: dict[int, list[Run]] = {k: [] for k in WK_COUNTS}
    pipe: list[tuple[float, float]] = []
    with _Server("opcua2") as server:
        plant = synthetic_plant(OPC_NODES, 0, opc_devices=2)
        # The longest publish watchdog (60 intervals, 15 s): on a shared 2-core machine the server
        # flat out can be starved long enough to trip the 2 s default, and a throughput run should
        # not measure reconnects. Failures that happen anyway are counted per run.
        moved = {"endpoint": server.address, "publish_watchdog_intervals": 60}
        ents = [
            e.model_copy(update={"devices": [d.model_copy(update=moved)
                                             if isinstance(d, OpcUaDevice) else d for d in e.devices]})
            for e in plant.enterprises
        ]  # fmt: skip
        plant = plant.model_copy(update={"enterprises": ents})
        for r in range(WK_ROUNDS):
            pipe.append(_pipe_transport())
            print(
                f"  pipe transport: {pipe[-1][0]:,.0f} rows/s, {pipe[-1][1]:.3f} ms CPU per 1k rows",
                flush=True,
            )
            order = WK_COUNTS[r % len(WK_COUNTS) :] + WK_COUNTS[: r % len(WK_COUNTS)]
            for workers in order:
                run = _run(_opc_workers(server, plant, workers), limit_s=180)
                runs[workers].append(run)
                print(
                    f"  opcua workers={workers}: server queued {run.extra['server_rate']:,.0f}/s "
                    f"(busy {run.extra['server_busy']:.0%}), delivered "
                    f"{run.values:,} of {int(run.extra['queued']):,}, steady {run.rate:,.0f}/s, main process "
                    f"{run.cpu_per_1k * 1e3:.1f} ms CPU per 1k (busy {run.busy:.0%}), workers "
                    f"{run.extra['worker_cpu'] / run.values * 1e6:.1f} ms CPU per 1k, "
                    f"{run.extra['failures']:.0f} source failures",
                    flush=True,
                )
        return runs, server.start_s, pipe


async def _mb_bare(
    port: int, device: ModbusDevice, requests: list[Any], seconds: float
) -> list[tuple[float, float, int]]:
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient(
        device.host or "127.0.0.1",
        port=port,
        timeout=device.timeout_s,
        retries=device.retries,
        reconnect_delay=0,
    )
    if not await client.connect():
        raise RuntimeError(f"cannot connect to the Modbus simulator on port {port}")
    marks: list[tuple[float, float, int]] = []
    try:
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for r in requests:
                rr = await client.read_holding_registers(r.start, count=r.count, slave=r.unit_id)
                if rr.isError():
                    raise RuntimeError(f"Modbus error {rr}")
                n += len(rr.registers)
            marks.append((time.perf_counter(), time.process_time(), n))
    finally:
        client.close()
    return marks


async def _mb_source(
    device: ModbusDevice, plant: Plant, seconds: float
) -> tuple[list[tuple[float, float, int]], int]:
    from collector.base import CollectorRunner
    from collector.modbus.plan import points_for_device
    from collector.modbus.source import ModbusSource
    from core.registry import TagRegistry

    source = ModbusSource(device, points_for_device(plant, TagRegistry.from_plant(plant), device))
    marks: list[tuple[float, float, int]] = []
    words = source.plan.word_count
    n = [0]

    def publish(batch: ReadingBatch) -> None:
        n[0] += words
        marks.append((time.perf_counter(), time.process_time(), n[0]))

    runner = CollectorRunner(source, publish)
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.sleep(seconds)
    finally:
        await _stop(task)
    if runner.stats.errors:
        raise RuntimeError(f"ModbusSource failed during the benchmark: {runner.stats.last_error}")
    return marks, len(source.plan.requests)


def _window(client: str, marks: list[tuple[float, float, int]]) -> Run:
    """From the first poll completed after the warm-up to the last one."""
    start = marks[0][0] + MB_WARMUP_S
    first = next(m for m in marks if m[0] >= start)
    last = marks[-1]
    wall = last[0] - first[0]
    return Run(client, last[2] - first[2], wall, last[1] - first[1], (last[2] - first[2]) / wall)


def _modbus() -> tuple[list[Run], int, float]:
    from collector.modbus.plan import compile_plan, points_for_device
    from core.registry import TagRegistry

    out: list[Run] = []
    # A request cancelled in flight when a run stops makes pymodbus log its late answer at ERROR.
    logging.getLogger("pymodbus.logging").setLevel(logging.CRITICAL)
    with _Server("modbus") as server:
        port = int(server.address)
        plant = synthetic_plant(0, MB_TAGS)
        ents = [
            e.model_copy(update={"devices": [d.model_copy(update={"port": port})
                                             if isinstance(d, ModbusDevice) else d for d in e.devices]})
            for e in plant.enterprises
        ]  # fmt: skip
        plant = plant.model_copy(update={"enterprises": ents})
        device = next(d for d in plant.devices() if isinstance(d, ModbusDevice))
        plan = compile_plan(
            points_for_device(plant, TagRegistry.from_plant(plant), device),
            device.max_registers, device.max_bits, device.gap_tolerance,
        )  # fmt: skip
        seconds = MB_RUN_S + MB_WARMUP_S
        n_requests = len(plan.requests)
        for r in range(MB_ROUNDS):
            order = ["bare", "source"] if r % 2 == 0 else ["source", "bare"]
            for client in order:
                if client == "bare":
                    run = _window("bare", _run(_mb_bare(port, device, list(plan.requests), seconds)))
                else:
                    marks, n_requests = _run(_mb_source(device, plant, seconds))
                    run = _window("source", marks)
                out.append(run)
                print(
                    f"  modbus {client:6}: {run.rate:,.0f} registers/s, {run.cpu_per_1k * 1e3:.2f} ms CPU per 1k",
                    flush=True,
                )
        return out, n_requests, server.start_s


# --- report -------------------------------------------------------------------------------


def _of(runs: list[Run], client: str) -> list[Run]:
    """The runs of one client, in round order."""
    return [r for r in runs if r.client == client]


def _vals(runs: list[Run], key: Callable[[Run], float]) -> list[float]:
    return [key(r) for r in runs]


def _ratios(runs: list[Run], key: Callable[[Run], float]) -> list[float]:
    """source / bare of ``key``, per round (both clients of a round share the machine's load)."""
    return [key(s) / key(b) for b, s in zip(_of(runs, "bare"), _of(runs, "source"), strict=True)]


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def _load() -> str:
    try:
        return " / ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def _delivered(r: Run) -> float:
    return r.values / r.extra["queued"] * 100


def render(
    opc: dict[str, list[Run]], opc_start: float, mb: list[Run], mb_requests: int, mb_start: float
) -> str:
    """The OPC UA and Modbus sections: every figure as median (min–max, n runs)."""
    from bench.report import spread

    labels = {
        "stock": "simulator as shipped, flat out",
        "paced": f"replay, paced at {OPC_PACE:,}/s",
        "max": "replay, flat out",
    }
    rounds = {feed: len(_of(runs, "bare")) for feed, runs in opc.items()}
    lines = [
        "## Collectors (bench/collectors.py)",
        "",
        "Each source runs under CollectorRunner, as in production (its publish callback counts the rows of "
        "every ReadingBatch), and is compared with a bare client of the same library doing the same protocol "
        "work against the same simulator in the same run. The simulator runs in a child process, so the client "
        "has a core to itself and its CPU time (`time.process_time`) is its own. *CPU busy* = client CPU time / "
        "wall time; *capacity* = values per client CPU-second, i.e. what one fully busy core would handle at "
        "that cost per value (it assumes nothing else saturates first). Every figure: median (min–max, n runs) "
        f"of {max(rounds.values(), default=0)} rounds per OPC UA feed and {len(_of(mb, 'bare'))} for Modbus, each "
        "round measuring both clients (order alternated between rounds); ratios are taken per round, then spread.",
        "",
        "### OPC UA subscription (OpcUaSource)",
        "",
        f"{OPC_NODES:,} nodes, one subscription, publishing and sampling interval {OPC_INTERVAL_S * 1000:.0f} ms, "
        f"monitored-item queue size {OPC_QUEUE}, no deadband filter. Each feed lasts {OPC_FEED_S:.0f} s, and every "
        "round of it changes every node once. The device's publish watchdog allows "
        f"{OPC_WATCHDOG_INTERVALS * OPC_INTERVAL_S:.0f} s without a publish response "
        f"(`publish_watchdog_intervals: {OPC_WATCHDOG_INTERVALS:g}`): a server saturated by a flat-out feed on "
        "this shared machine can go quiet for seconds, and this measures intake, not failover.",
        "",
        "- **bare asyncua**: a subscription on the same nodes with the same parameters, handler only counts.",
        "- **OpcUaSource**: datachange handler → row buffer → `read()` → ReadingBatch → runner publish.",
        "- Feeds: *simulator as shipped* steps the simulation back to back (models, faults, publish of every "
        "node). The *replay* feeds push pre-built values (two per node, alternating) through the same server "
        "datachange path `OpcUaEndpointServer.publish` uses, with asyncua's per-change `deepcopy` of the "
        "DataValue switched off in the server process: the shipped simulator cannot produce the target rate "
        f"(see below). Server start with {OPC_NODES:,} nodes: {opc_start:.1f} s.",
        "- *Delivered* counts notifications (bare) or batch rows (OpcUaSource) against what the server queued; "
        "*steady rate* runs from the first delivery to the last.",
        "",
        "| feed | client | server queued (changes/s) | server CPU busy | delivered | steady rate (changes/s) "
        "| client CPU per 1k changes | client CPU busy | capacity (changes/s per core) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for feed, runs in opc.items():
        for client, label in (("bare", "bare asyncua"), ("source", "OpcUaSource")):
            sel = _of(runs, client)
            lines.append(
                f"| {labels[feed]} | {label} | {spread(_vals(sel, lambda r: r.extra['server_rate']))} "
                f"| {spread(_vals(sel, lambda r: r.extra['server_busy'] * 100), '{:.0f}', ' %')} "
                f"| {spread(_vals(sel, _delivered), '{:.1f}', ' %')} | {spread(_vals(sel, lambda r: r.rate))} "
                f"| {spread(_vals(sel, lambda r: r.cpu_per_1k * 1e3), '{:.1f}', ' ms')} "
                f"| {spread(_vals(sel, lambda r: r.busy * 100), '{:.0f}', ' %')} "
                f"| {spread(_vals(sel, lambda r: r.capacity))} |"
            )
    paced = opc["paced"]
    src = _of(paced, "source")
    src_rates = _vals(src, lambda r: r.rate)
    src_rate, src_cap = statistics.median(src_rates), statistics.median(_vals(src, lambda r: r.capacity))
    src_all = min(_vals(src, _delivered)) >= 100.0  # every change, in every round
    served = min(r.extra["server_rate"] for r in src)
    cap = spread(_vals(src, lambda r: r.capacity))
    if src_all and src_rate >= OPC_TARGET:
        verdict = (
            f"OpcUaSource took every change of the {OPC_PACE:,}/s feed into batches in every round at a steady "
            f"{spread(src_rates)} changes/s using {spread(_vals(src, lambda r: r.busy * 100), '{:.0f}', ' %')} "
            "of a core — **met** (median)."
        )
    elif served < OPC_TARGET:
        verdict = (
            f"not shown on the wall clock: the server queued only {served:,.0f}/s in the slowest round. By CPU cost "
            f"OpcUaSource handles {cap} changes/s per core — "
            f"**{'met' if src_cap >= OPC_TARGET else 'not met'}** (by capacity, median)."
        )
    else:
        verdict = (
            f"OpcUaSource delivered {spread(_vals(src, _delivered), '{:.1f}', ' %')} of the changes at a steady "
            f"{spread(src_rates)} changes/s — **not met** (median)."
        )
    flat = opc["max"]
    lines += [
        "",
        f"- Cost of OpcUaSource over a bare subscription (paced feed): "
        f"{spread(_ratios(paced, lambda r: r.cpu_per_1k), '{:.2f}', '×')} the client CPU per change "
        f"(capacity {cap} vs {spread(_vals(_of(paced, 'bare'), lambda r: r.capacity))} changes/s per core). "
        "Most of a bare client's CPU is asyncua's pure-Python decoding of PublishResponses; OpcUaSource adds one "
        "row conversion per notification (`_row`: timestamps, status → quality) and the batch build in `read()`.",
        f"- The simulator as shipped queues only {spread(_vals(opc['stock'], lambda r: r.extra['server_rate']))} "
        "changes/s on its core: asyncua's server deep-copies every DataValue it is handed "
        "(`MonitoredItemValues.set_current_datavalue`), which is most of its cost, so it cannot demonstrate the "
        "target.",
        f"- Flat out, the replay server queued {spread(_vals(flat, lambda r: r.extra['server_rate']))} "
        f"changes/s; delivered: bare {spread(_vals(_of(flat, 'bare'), _delivered), '{:.1f}', ' %')}, OpcUaSource "
        f"{spread(_vals(_of(flat, 'source'), _delivered), '{:.1f}', ' %')}. asyncua's client keeps one Publish "
        "request in flight, so when responses grow the publish cycle lengthens; once a node changes more than the "
        "queue size between two publishes the server drops its oldest changes (size the device's `queue_size` "
        "for that).",
        f"- Target (DESIGN.md): ≥ {OPC_TARGET:,} value changes/s into batches on one core: {verdict}",
    ]
    mb_src = _of(mb, "source")
    mb_rate = statistics.median(_vals(mb_src, lambda r: r.rate))
    lines += [
        "",
        "### Modbus TCP (ModbusSource)",
        "",
        f"{MB_TAGS:,} INT16 holding registers (one value each, linear scaling), compiled into {mb_requests} reads "
        f"of 125 registers per poll; one connection, one request in flight (Modbus allows no more); polls back to "
        f"back for {MB_RUN_S:.0f} s after {MB_WARMUP_S} s of warm-up, while the simulator steps at 1 Hz "
        f"(server start {mb_start:.1f} s).",
        "",
        "- **bare pymodbus**: `read_holding_registers` for the same requests, results not decoded.",
        "- **ModbusSource**: the same requests + copy into the word buffer + vectorized decode + ReadingBatch "
        "+ runner publish.",
        "",
        "| client | registers/s | client CPU per 1k registers | client CPU busy | capacity (registers/s per core) |",
        "|---|---:|---:|---:|---:|",
    ]
    for client, label in (("bare", "bare pymodbus"), ("source", "ModbusSource")):
        sel = _of(mb, client)
        lines.append(
            f"| {label} | {spread(_vals(sel, lambda r: r.rate))} "
            f"| {spread(_vals(sel, lambda r: r.cpu_per_1k * 1e3), '{:.2f}', ' ms')} "
            f"| {spread(_vals(sel, lambda r: r.busy * 100), '{:.0f}', ' %')} "
            f"| {spread(_vals(sel, lambda r: r.capacity))} |"
        )
    lines += [
        "",
        f"- ModbusSource / bare: {spread(_ratios(mb, lambda r: r.rate), '{:.2f}', '×')} the registers/s, "
        f"{spread(_ratios(mb, lambda r: r.cpu_per_1k), '{:.2f}', '×')} the client CPU per register. "
        "Both clients spend most of the wall time waiting for the simulator's pymodbus server to answer each "
        "request, so the rate is a loopback round-trip rate, not a CPU limit of the client.",
        f"- Target (DESIGN.md): ≥ {MB_TARGET:,} registers/s against the simulator with 125-register reads: "
        f"{spread(_vals(mb_src, lambda r: r.rate))} registers/s — **{'met' if mb_rate >= MB_TARGET else 'not met'}** "
        "(median).",
        "",
        f"asyncua {_version('asyncua')}, pymodbus {_version('pymodbus')}. "
        f"Load average (1/5/15 min) when the run ended: {_load()}.",
    ]
    return "\n".join(lines)


def render_workers(runs: dict[int, list[Run]], start_s: float, pipe: list[tuple[float, float]]) -> str:
    """The worker-process section: every figure as median (min–max, n runs)."""
    from bench.report import spread

    def figures(sel: list[Run], key: Callable[[Run], float]) -> list[float]:
        return [key(r) for r in sel]

    def per_1k_workers(r: Run) -> float:
        return r.extra["worker_cpu"] / r.values * 1e6  # ms per 1k changes

    lines = [
        "### OPC UA worker processes (`settings.collect.opcua_workers`)",
        "",
        f"The same {OPC_NODES:,} nodes as two devices of {OPC_NODES // 2:,} (one server, one session and "
        f"subscription per device; same intervals and queue size as above), collected the way `hazardwatch run` "
        "does it: with 0 workers two CollectorRunners on the main loop, with N ≥ 1 an OpcUaWorkerPool whose "
        "workers send their batches through pipes to the main process, where the publish callback counts the "
        f"rows. Feed: the replay, flat out, {WK_FEED_S:.0f} s per run; {WK_ROUNDS} round(s), each measuring 0, 1 "
        f"and 2 workers once (order rotated). Server start {start_s:.1f} s.",
        "",
        "- *Main process CPU* is this process's CPU time (event loop and the pool's reader threads) per 1,000 "
        "changes delivered; *workers' CPU* is the worker processes' (from /proc) over the same feed. A "
        "*source failure* is a device declared dead during the feed, normally the publish watchdog: a loop "
        "too busy to handle the server's publish responses in time (the device reconnects and resubscribes, "
        "so such a run also re-delivers initial values).",
        "- What this machine can show: it has 2 cores, and the simulator's server (the producer) needs one of "
        "them, so the rate into the main process is bounded by what the server queues, with or without "
        "workers, and the workers compete with the server for the second core. The figure that workers change "
        "is where asyncua's decoding runs: the main process's CPU per change, i.e. the room left on the main "
        "loop for the hub, the historian and the rules.",
        "",
        "| OPC UA workers | server queued (changes/s) | delivered | steady rate into the main process (changes/s) "
        "| main process CPU per 1k changes | main process CPU busy | workers' CPU per 1k changes "
        "| source failures per run |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k, sel in runs.items():
        worker_cpu = spread(figures(sel, per_1k_workers), "{:.1f}", " ms") if k else "—"
        lines.append(
            f"| {k} | {spread(figures(sel, lambda r: r.extra['server_rate']))} "
            f"| {spread(figures(sel, lambda r: r.values / r.extra['queued'] * 100), '{:.1f}', ' %')} "
            f"| {spread(figures(sel, lambda r: r.rate))} "
            f"| {spread(figures(sel, lambda r: r.cpu_per_1k * 1e3), '{:.1f}', ' ms')} "
            f"| {spread(figures(sel, lambda r: r.busy * 100), '{:.0f}', ' %')} | {worker_cpu} "
            f"| {spread(figures(sel, lambda r: r.extra['failures']), '{:.0f}')} |"
        )
    base = runs[0]
    lines.append("")
    for k in (n for n in runs if n):
        # Same-round ratios against the in-process run: the machine's load cancels out.
        cpu = [b.cpu_per_1k / w.cpu_per_1k for b, w in zip(base, runs[k], strict=True)]
        rate = [w.rate / b.rate for b, w in zip(base, runs[k], strict=True)]
        core = [1e6 / per_1k_workers(w) for w in runs[k]]
        main = [1e6 / (w.cpu_per_1k * 1e3) for w in runs[k]]
        lines.append(
            f"- {k} worker{'s' if k > 1 else ''}: the main process spends {spread(cpu, '{:.1f}', '×')} less CPU "
            f"per change than with the devices on its own loop; rate into it {spread(rate, '{:.2f}', '×')} "
            f"the in-process rate (server-bound, see above); decoding costs the workers "
            f"{spread(figures(runs[k], per_1k_workers), '{:.1f}', ' ms')} CPU per 1k changes, i.e. one fully "
            f"busy worker core takes {spread(core)} changes/s, while at its cost per change the main process "
            f"could take at least {spread(main)} changes/s per core (at least: this cost is mostly fixed, "
            "health reports and the benchmark's own polling, spread over few changes)."
        )
    lines += [
        f"- The pipe alone (a child sending {PIPE_BATCHES} batches of {PIPE_ROWS:,} rows as fast as it can; "
        "this process receiving and mapping them into ReadingBatches, as the pool's reader thread does): "
        f"{spread([p[0] for p in pipe])} rows/s at {spread([p[1] for p in pipe], '{:.3f}', ' ms')} of the "
        "receiver's CPU per 1k rows. Raw arrays through a pipe cost the main process a small fraction of "
        "asyncua's decoding per change, so shared memory would save little here.",
        "- Reading it for a larger machine: each worker adds one core of decoding (the capacity per worker core "
        "above), while the main process pays only its own CPU per change for the batches; threads would not "
        "add anything, because asyncua's decoding is pure Python and holds the GIL.",
        "",
        f"Load average (1/5/15 min) when the run ended: {_load()}.",
    ]
    return "\n".join(lines)


def main() -> str:
    print("collectors: OPC UA ...", flush=True)
    opc, opc_start = _opcua()
    print("collectors: Modbus ...", flush=True)
    mb, mb_requests, mb_start = _modbus()
    print("collectors: OPC UA worker processes ...", flush=True)
    wk, wk_start, pipe = _opcua_workers()
    return render(opc, opc_start, mb, mb_requests, mb_start) + "\n\n" + render_workers(wk, wk_start, pipe)


if __name__ == "__main__":
    print(main())
