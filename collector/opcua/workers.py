"""OPC UA devices spread over worker processes, feeding the one hub of the main process.

Why processes: asyncua decodes every PublishResponse in pure Python (about 26 % of a core per
4,700 changes/s), so one event loop fills at roughly 16-17k changes/s beside the hub, the
historian and the rules. Threads would not help: they share one GIL, and the decoding holds
it. ``settings.collect.opcua_workers: N`` (N >= 1) runs the OPC UA devices in N processes
(collector/opcua/worker_process.py), balanced by tag count; 0 keeps them in the main loop.

The parent keeps, per worker: the process, a reader thread that takes its
messages off the pipe, and a supervisor. Batches are published into the hub as they arrive;
each source has a WorkerRunner here, a CollectorRunner whose stats and health mirror the
worker's copy, so /metrics, the live view, the run summary and the logs read them as before.

Bounds and drop policy: the reader thread hands at most ``INFLIGHT`` messages per worker to
the event loop; past that it stops reading, the pipe fills, and the worker's outbox (bounded,
oldest batch dropped first, counted per source) absorbs the rest. OpcUaWorkerMetrics serves
the drops and the workers' restarts to /metrics.

A worker that dies (or hangs: silent for ``SILENT_S``, then killed) is restarted after a backoff
with jitter (core.backoff; the attempt count starts again once a worker has run ``STABLE_S``).
Its tags get one BAD|COMM_FAILURE marker at the moment it is found dead, as a dead device's
do, and one log line says which devices, why and when it restarts; the recovery is logged
when its data flow again. ``stop()`` asks every worker to stop, waits ``STOP_WAIT_S``, then
kills what is left (workers ignore SIGTERM): no orphan processes, no hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from collector.base import CollectorRunner, Source, comm_failure_batch
from collector.metrics import family
from collector.opcua.source import OpcUaSource
from collector.opcua.worker_process import SourceSpec, WorkerSpec, decode, worker_main
from collector.opcua.worker_runner import WorkerRunner
from core.backoff import Backoff
from core.batch import ReadingBatch
from core.clock import Clock, SystemClock

__all__ = ["OpcUaWorkerMetrics", "OpcUaWorkerPool", "WorkerRunner", "assign", "split_opcua"]

log = logging.getLogger(__name__)

RESTART = Backoff(1.0, 60.0, jitter=0.25)  # worker restarts: 1 s doubling to 60 s, +-25 %
STABLE_S = 60.0  # a worker that ran this long before dying starts its backoff again
SILENT_S = 30.0  # no message (health comes every 0.5 s) for this long: the worker hangs; kill it
STOP_WAIT_S = 10.0  # at stop: wait this long for a worker to flush and exit, then kill it
INFLIGHT = 64  # messages per worker handed to the event loop and not yet handled


def split_opcua(sources: Sequence[Source]) -> tuple[list[OpcUaSource], list[Source]]:
    """The OPC UA sources (for the workers) and the rest (run in this process as before)."""
    opcua = [s for s in sources if isinstance(s, OpcUaSource)]
    return opcua, [s for s in sources if not isinstance(s, OpcUaSource)]


def assign(sizes: Sequence[int], workers: int) -> list[list[int]]:
    """Source indexes per worker, balanced by tag count: largest first onto the lightest worker.
    Never more workers than sources (an idle process helps nobody)."""
    groups: list[list[int]] = [[] for _ in range(min(workers, len(sizes)))]
    load = [0] * len(groups)
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        k = load.index(min(load))
        groups[k].append(i)
        load[k] += sizes[i]
    return [sorted(g) for g in groups]


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class _Worker:
    """One worker process and what the parent keeps about it; restarted in place."""

    def __init__(self, index: int, sources: list[OpcUaSource], runners: list[WorkerRunner]) -> None:
        self.index = index
        self.sources = sources
        self.runners = runners
        self.tags = np.concatenate([s.tags for s in sources]).astype(np.int32)
        self.process: BaseProcess | None = None
        self.ctrl: Connection | None = None
        self.reader: threading.Thread | None = None
        self.ended = asyncio.Event()  # the reader saw the pipe close (the process ended)
        self.slots = threading.Semaphore(INFLIGHT)
        self.heard = time.monotonic()  # updated by the reader thread
        self.cpu_s = 0.0  # the current process's CPU time, from its health report
        self.lives = 0

    def describe(self) -> str:
        pid = self.process.pid if self.process is not None else "?"
        return f"OPC UA worker {self.index} (pid {pid}; devices {', '.join(s.name for s in self.sources)})"


class OpcUaWorkerPool:
    """Runs ``sources`` in up to ``workers`` processes and publishes their batches here."""

    def __init__(
        self,
        sources: Sequence[OpcUaSource],
        workers: int,
        publish: Callable[[ReadingBatch], None],
        *,
        clock: Clock | None = None,
        runner_options: dict[str, float] | None = None,
        restart: Backoff = RESTART,
        rng: random.Random | None = None,
        silent_s: float = SILENT_S,
        stop_wait_s: float = STOP_WAIT_S,
    ) -> None:
        if workers < 1:
            raise ValueError(f"an OPC UA worker pool needs at least one worker, got {workers}")
        self.clock = clock or SystemClock()
        self.publish = publish
        self.runner_options = dict(runner_options or {})
        self.restart = restart
        self.silent_s = silent_s
        self.stop_wait_s = stop_wait_s
        self._rng = rng or random.Random()
        self.workers: list[_Worker] = []
        for k, group in enumerate(assign([len(s.tags) for s in sources], workers)):
            members = [sources[i] for i in group]
            runners = [WorkerRunner(s, k, self.clock) for s in members]
            self.workers.append(_Worker(k, members, runners))
        self.runners: list[CollectorRunner] = [r for w in self.workers for r in w.runners]
        self.received_rows = 0
        self._ctx = _context()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._stop = asyncio.Event()
        self._killed = 0  # workers killed during stop()

    @classmethod
    async def start_for(
        cls,
        sources: Sequence[Source],
        workers: int,
        publish: Callable[[ReadingBatch], None],
        *,
        clock: Clock | None = None,
        metrics: CollectorRegistry | None = None,
    ) -> tuple[OpcUaWorkerPool | None, list[Source]]:
        """The runtime's one call: with ``workers`` >= 1 and OPC UA sources among ``sources``,
        a started pool for them (its metrics registered) and the sources left to run here;
        otherwise no pool and every source."""
        opcua, rest = split_opcua(sources)
        if workers < 1 or not opcua:
            return None, list(sources)
        pool = cls(opcua, workers, publish, clock=clock)
        if metrics is not None:
            metrics.register(OpcUaWorkerMetrics(pool))
        await pool.start()
        return pool, rest

    async def start(self) -> None:
        for w in self.workers:
            self._tasks.append(asyncio.create_task(self._supervise(w), name=f"opcua-worker-{w.index}"))
        log.info(
            "OPC UA: %d device(s) in %d worker process(es), tags per worker %s",
            len(self.runners),
            len(self.workers),
            ", ".join(str(len(w.tags)) for w in self.workers),
        )

    def pids(self) -> list[int]:
        return [w.process.pid for w in self.workers if w.process is not None and w.process.pid is not None]

    # --- one worker's life ------------------------------------------------------------

    async def _supervise(self, w: _Worker) -> None:
        attempt = 0
        while not self._stopping:
            started = self.clock.monotonic()
            try:
                await self._spawn(w)
            except Exception as exc:  # no process (fork server, resources): retried like a death
                log.exception("%s could not be started", w.describe())
                why = f"{w.describe()} could not be started: {type(exc).__name__}: {exc}"
            else:
                code = await self._wait_end(w)
                why = f"{w.describe()} {_exit_text(code)}"
            if self._stopping:
                return
            now_us = self.clock.now_us()
            if not all(r.dead for r in w.runners):  # marked once per outage, like a dead device
                self.publish(comm_failure_batch(w.tags, now_us))
            for runner in w.runners:
                runner.died(now_us, why)
            if self.clock.monotonic() - started >= STABLE_S:
                attempt = 0
            delay = self.restart.delay(attempt, self._rng)
            attempt += 1
            log.error("%s: its %d tags BAD|COMM_FAILURE; restarting it in %.1f s", why, len(w.tags), delay)
            with contextlib.suppress(TimeoutError):  # stop() ends the wait at once
                async with asyncio.timeout(delay):
                    await self._stop.wait()

    async def _spawn(self, w: _Worker) -> None:
        spec = WorkerSpec(
            w.index,
            tuple(SourceSpec(s.device, tuple(s.points), str(s.pki_dir), s.chunk) for s in w.sources),
            self.runner_options,
            _log_levels(),
        )
        data_recv, data_send = self._ctx.Pipe(duplex=False)
        ctrl_recv, ctrl_send = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=worker_main,
            args=(spec, data_send, ctrl_recv),
            name=f"hazardwatch-opcua-worker-{w.index}",
            daemon=True,  # the last resort: multiprocessing ends daemonic children at exit
        )
        await asyncio.to_thread(process.start)  # pickling the spec of a big share takes a while
        data_send.close()  # ours closed: the pipe reads EOF exactly when the worker is gone
        ctrl_recv.close()
        w.process, w.ctrl, w.lives = process, ctrl_send, w.lives + 1
        w.ended = asyncio.Event()
        w.slots = threading.Semaphore(INFLIGHT)
        w.heard = time.monotonic()
        loop = asyncio.get_running_loop()
        w.reader = threading.Thread(
            target=self._read, args=(w, data_recv, loop), name=f"opcua-worker-{w.index}-reader", daemon=True
        )
        w.reader.start()
        if w.lives == 1:
            log.info("started %s", w.describe())
        else:
            log.warning("restarted %s", w.describe())
        if self._stopping:  # stop() came while this one was starting: it missed the request
            with contextlib.suppress(OSError):
                ctrl_send.send("stop")

    def _read(self, w: _Worker, conn: Connection, loop: asyncio.AbstractEventLoop) -> None:
        """Reader thread: messages off the pipe into the event loop, at most INFLIGHT at a time."""
        slots, ended = w.slots, w.ended
        try:
            while True:
                try:
                    message = decode(conn.recv_bytes())
                except (EOFError, OSError):
                    return
                w.heard = time.monotonic()
                while not slots.acquire(timeout=0.5):
                    w.heard = time.monotonic()  # the worker is alive: it is we who are behind
                    if loop.is_closed():
                        return
                loop.call_soon_threadsafe(self._deliver, w, slots, message)
        except RuntimeError:  # the loop closed under us (interpreter shutting down)
            return
        finally:
            conn.close()
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(ended.set)

    def _deliver(self, w: _Worker, slots: threading.Semaphore, message: tuple[Any, ...]) -> None:
        slots.release()
        kind = message[0]
        if kind == "batch":
            batch: ReadingBatch = message[2]
            self.received_rows += len(batch)
            self.publish(batch)
        elif kind == "health":
            _, sources, w.cpu_s = message
            for k, (stats, health, rows, batches) in sources.items():
                w.runners[k].reported(stats, health, rows, batches)
        elif kind == "log":
            record = logging.makeLogRecord(message[1])
            logging.getLogger(record.name).handle(record)

    async def _wait_end(self, w: _Worker) -> int | None:
        """Until the worker's pipe closes (it ended). A worker silent for ``silent_s`` is killed;
        while stopping, one that has not ended within ``stop_wait_s`` is killed."""
        stop_by: float | None = None
        while not w.ended.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await w.ended.wait()
            now = time.monotonic()
            if w.ended.is_set():
                break
            if self._stopping:
                stop_by = stop_by or now + self.stop_wait_s
                if now >= stop_by:
                    log.error("%s did not stop within %.0f s: killing it", w.describe(), self.stop_wait_s)
                    return await self._reap(w, 0.0)
            elif now - w.heard > self.silent_s:
                log.error("%s sent nothing for %.0f s: killing it", w.describe(), self.silent_s)
                self._kill(w)
        return await self._reap(w, self.stop_wait_s)

    async def _reap(self, w: _Worker, wait_s: float) -> int | None:
        """Join the process: wait, then kill; its exit code."""
        process = w.process
        if process is None:
            return None
        await asyncio.to_thread(process.join, wait_s)
        if process.exitcode is None:  # workers ignore SIGTERM (see worker_process): kill
            if wait_s:
                log.error("%s did not exit within %.0f s: killing it", w.describe(), wait_s)
            self._kill(w)
            await asyncio.to_thread(process.join, 5.0)
        if w.reader is not None:
            await asyncio.to_thread(w.reader.join, 3.0)
        return process.exitcode

    def _kill(self, w: _Worker) -> None:
        # By pid while its pipe is open (it still runs): a fork server that died reports its
        # children as ended (exit code 255) although they run on.
        pid = w.process.pid if w.process is not None else None
        if pid is not None and not w.ended.is_set():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._killed += self._stopping

    # --- stop -------------------------------------------------------------------------

    async def stop(self) -> bool:
        """Every worker flushes and exits (bounded), its last batches published here first.
        True when no worker had to be killed (nothing it held was lost)."""
        self._stopping = True
        self._stop.set()
        for w in self.workers:
            if w.ctrl is not None:
                with contextlib.suppress(OSError):
                    w.ctrl.send("stop")
        if self._tasks:
            # A supervisor returns once its worker exited (reaped: terminate, kill) or from its backoff.
            _, pending = await asyncio.wait(self._tasks, timeout=self.stop_wait_s + 10.0)
            for task in pending:
                log.error("shutdown: %s did not end; cancelling it", task.get_name())
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for w in self.workers:
            if w.process is not None and w.process.exitcode is None:
                await self._reap(w, 1.0)
            if w.ctrl is not None:
                w.ctrl.close()
                w.ctrl = None
        self._tasks.clear()
        return self._killed == 0


class OpcUaWorkerMetrics(Collector):
    """The pool's workers at scrape time: running, restarts, and what their outboxes dropped
    because this process fell behind (per source). Register it beside SourceMetrics, which
    already shows each source through its WorkerRunner."""

    def __init__(self, pool: OpcUaWorkerPool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        up = family("hazardwatch_opcua_worker_up")
        restarts = family("hazardwatch_opcua_worker_restarts_total")
        rows = family("hazardwatch_opcua_worker_dropped_rows_total")
        batches = family("hazardwatch_opcua_worker_dropped_batches_total")
        for w in self.pool.workers:
            k = str(w.index)
            running = w.process is not None and w.process.exitcode is None and not w.ended.is_set()
            up.add_metric([k], float(running))
            restarts.add_metric([k], float(max(0, w.lives - 1)))
            for r in w.runners:
                dropped_rows, dropped_batches = r.dropped
                rows.add_metric([k, r.source.name], float(dropped_rows))
                batches.add_metric([k, r.source.name], float(dropped_batches))
        yield from (up, restarts, rows, batches)


def _context() -> ForkServerContext | SpawnContext:
    """``forkserver`` preloaded with the worker module, else ``spawn``; never plain ``fork``.

    Both start from a clean interpreter, not a copy of this process's running loop, sockets and
    threads. The fork server (one small process that ends with this one) has asyncua and numpy
    imported already, so a worker restarts in well under a second instead of the seconds a
    fresh interpreter takes to import them: a shorter gap in the data after a worker died."""
    if "forkserver" in mp.get_all_start_methods():
        server: ForkServerContext = mp.get_context("forkserver")
        server.set_forkserver_preload(["collector.opcua.worker_process"])
        return server
    spawn: SpawnContext = mp.get_context("spawn")
    return spawn


def _log_levels() -> dict[str, int]:
    """The parent's configured logger levels, so a worker logs (and forwards) the same records."""
    levels = {"": logging.getLogger().level}
    for name, logger in logging.root.manager.loggerDict.items():
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET:
            levels[name] = logger.level
    return levels
