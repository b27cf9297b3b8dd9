"""One OPC UA worker process: its share of the devices on its own event loop, batches to the parent.

Started by collector/opcua/workers.py from the fork server (or with ``spawn``), never by a
plain ``fork`` of the main process: a copy of a running event loop, its sockets and the logging
thread is not safe. Each device runs
exactly as in the main process, an OpcUaSource under a CollectorRunner (reconnects, backoff,
BAD|COMM_FAILURE markers), so behaviour towards the plant is unchanged: read-only, no writes.

What goes to the parent, over one pipe, sent by one thread so a slow parent never blocks the
loop that keeps the subscriptions alive:

- every ReadingBatch as raw arrays (``encode_batch``: an 8-byte header, then ts, value, tag
  and quality back to back, each aligned; the parent maps them without copying),
- every ``HEALTH_S`` the runners' stats and health, this worker's outbox drops and CPU time,
- every log record, already formatted (the parent logs it under the same logger name).

Drop policy: batches wait in a bounded outbox (``OUTBOX_ROWS`` rows); past it the OLDEST batch
is dropped and counted per source (reported with the health, logged on the first and every
1000th drop), like the hub's sink queues. Log records past ``LOG_RECORDS`` are dropped newest
first (order kept) and counted. Health is one slot: only the latest report matters.

The worker stops on the parent's ``stop``, when the parent goes away (its end of the control
pipe closes) or when the data pipe breaks. SIGINT and SIGTERM are ignored: Ctrl-C reaches the
whole process group and a service manager may signal every process of the service, while the
parent stops its workers in order (last batches first); a worker that exited on its own would
look dead and be restarted. The parent kills a worker that does not stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import pickle
import signal
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from collector.base import CollectorRunner
from collector.opcua.source import OpcUaPoint, OpcUaSource
from core.batch import ReadingBatch
from core.clock import SystemClock
from core.plant import OpcUaDevice

__all__ = ["OUTBOX_ROWS", "Outbox", "SourceSpec", "WorkerSpec", "decode", "encode_batch", "worker_main"]

log = logging.getLogger(__name__)

HEALTH_S = 0.5  # health report period; also the parent's sign that the worker is alive
OUTBOX_ROWS = 200_000  # readings waiting for the pipe (about 4 MB); the oldest batch goes past it
LOG_RECORDS = 1_000
FLUSH_S = 5.0  # at stop: longest wait for the outbox to reach the parent
_HEAD = struct.Struct("<cxHI")  # kind, pad, source index, rows: 8 bytes keep the arrays aligned


@dataclass(frozen=True)
class SourceSpec:
    """What a worker needs to build one OpcUaSource (picklable: models and frozen dataclasses)."""

    device: OpcUaDevice
    points: tuple[OpcUaPoint, ...]
    pki_dir: str
    chunk: int


@dataclass(frozen=True)
class WorkerSpec:
    index: int
    sources: tuple[SourceSpec, ...]
    runner: dict[str, float]  # CollectorRunner keyword options (tests shorten the backoff)
    log_levels: dict[str, int]  # the parent's configured logger levels ("" = root)


def encode_batch(source: int, batch: ReadingBatch) -> bytes:
    return b"".join(
        (
            _HEAD.pack(b"B", source, len(batch)),
            batch.ts.data,
            batch.value.data,
            batch.tag.data,
            batch.quality.data,
        )
    )


def _encode(message: tuple[Any, ...]) -> bytes:
    return b"P" + pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def decode(buf: bytes) -> tuple[Any, ...]:
    """``("batch", source, ReadingBatch)`` (arrays are read-only views of ``buf``) or a control tuple."""
    if buf[:1] != b"B":
        message: tuple[Any, ...] = pickle.loads(buf[1:])
        return message
    _, source, n = _HEAD.unpack_from(buf)
    at = _HEAD.size
    ts = np.frombuffer(buf, np.int64, n, at)
    value = np.frombuffer(buf, np.float64, n, at + 8 * n)
    tag = np.frombuffer(buf, np.int32, n, at + 16 * n)
    quality = np.frombuffer(buf, np.uint8, n, at + 20 * n)
    return ("batch", source, ReadingBatch(tag, ts, value, quality))


class Outbox:
    """Messages for the parent, bounded, written to the pipe by one sender thread."""

    def __init__(self, conn: Connection, max_rows: int = OUTBOX_ROWS, max_logs: int = LOG_RECORDS) -> None:
        self._conn = conn
        self._max_rows = max_rows
        self._max_logs = max_logs
        self._cond = threading.Condition()
        self._batches: deque[tuple[int, ReadingBatch]] = deque()
        self._rows = 0
        self._logs: deque[bytes] = deque()
        self._health: bytes | None = None
        self._closing = False
        self.dropped_rows: dict[int, int] = {}
        self.dropped_batches: dict[int, int] = {}
        self.dropped_logs = 0
        self.on_broken: Callable[[], None] = lambda: None
        self._thread = threading.Thread(target=self._send_loop, name="opcua-worker-outbox", daemon=True)
        self._thread.start()

    def put_batch(self, source: int, batch: ReadingBatch) -> None:
        with self._cond:
            self._batches.append((source, batch))
            self._rows += len(batch)
            while self._rows > self._max_rows and len(self._batches) > 1:
                old_source, old = self._batches.popleft()
                self._rows -= len(old)
                self.dropped_rows[old_source] = self.dropped_rows.get(old_source, 0) + len(old)
                self.dropped_batches[old_source] = self.dropped_batches.get(old_source, 0) + 1
                total = sum(self.dropped_batches.values())
                if total == 1 or total % 1000 == 0:
                    # The log handler queues into this outbox: the lock is reentrant (RLock).
                    log.warning("the main process is behind: dropped %d batches (oldest first) so far", total)
            self._cond.notify()

    def put_log(self, data: bytes) -> None:
        with self._cond:
            if len(self._logs) >= self._max_logs:
                self.dropped_logs += 1
                return
            self._logs.append(data)
            self._cond.notify()

    def put_health(self, data: bytes) -> None:
        with self._cond:
            self._health = data
            self._cond.notify()

    def close(self, timeout_s: float = FLUSH_S) -> None:
        """Send what is queued (bounded by ``timeout_s``), then stop the sender."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout_s)

    def _next(self) -> bytes | tuple[int, ReadingBatch] | None:
        with self._cond:
            while not (self._logs or self._health is not None or self._batches or self._closing):
                self._cond.wait()
            if self._logs:
                return self._logs.popleft()
            if self._health is not None:
                data, self._health = self._health, None
                return data
            if self._batches:
                item = self._batches.popleft()
                self._rows -= len(item[1])
                return item
            return None  # closing, nothing left

    def _send_loop(self) -> None:
        while (item := self._next()) is not None:
            data = item if isinstance(item, bytes) else encode_batch(*item)
            try:
                self._conn.send_bytes(data)
            except OSError:  # the parent is gone: nothing more can be delivered
                self.on_broken()
                return


class _ToParent(logging.Handler):
    """Every record, formatted here, into the outbox; the parent logs it under the same name."""

    def __init__(self, outbox: Outbox, index: int) -> None:
        super().__init__()
        self._outbox = outbox
        self._prefix = f"[OPC UA worker {index}, pid {os.getpid()}] "

    def emit(self, record: logging.LogRecord) -> None:
        try:
            exc_text = record.exc_text
            if record.exc_info and not exc_text:
                exc_text = logging.Formatter().formatException(record.exc_info)
            fields = {
                "name": record.name,
                "levelno": record.levelno,
                "levelname": record.levelname,
                "msg": self._prefix + record.getMessage(),
                "created": record.created,
                "exc_text": exc_text,
            }
            self._outbox.put_log(_encode(("log", fields)))
        except Exception:
            self.handleError(record)


def _health(runners: list[CollectorRunner], outbox: Outbox) -> bytes:
    sources = {
        k: (
            dataclasses.asdict(r.stats),
            r.health(),
            outbox.dropped_rows.get(k, 0),
            outbox.dropped_batches.get(k, 0),
        )
        for k, r in enumerate(runners)
    }
    return _encode(("health", sources, time.process_time()))


async def _serve(spec: WorkerSpec, outbox: Outbox, ctrl: Connection) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_ctrl() -> None:
        try:
            command = ctrl.recv()
        except (EOFError, OSError):  # the parent closed its end or died
            command = "stop"
        if command == "stop":
            loop.remove_reader(ctrl.fileno())
            stop.set()

    loop.add_reader(ctrl.fileno(), on_ctrl)

    def broken() -> None:
        with contextlib.suppress(RuntimeError):  # the loop already closed
            loop.call_soon_threadsafe(stop.set)

    outbox.on_broken = broken
    clock = SystemClock()
    sources = [OpcUaSource(s.device, list(s.points), clock, s.pki_dir, s.chunk) for s in spec.sources]
    runners = [
        CollectorRunner(source, functools.partial(outbox.put_batch, k), clock=clock, **spec.runner)  # type: ignore[arg-type]
        for k, source in enumerate(sources)
    ]
    tasks = [asyncio.create_task(r.run(), name=f"collector-{r.source.name}") for r in runners]
    log.info("collecting %d device(s), %d tags", len(sources), sum(len(s.tags) for s in sources))
    try:
        while not stop.is_set():
            outbox.put_health(_health(runners, outbox))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEALTH_S):
                    await stop.wait()
    finally:
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(ctrl.fileno())
        pending = set(tasks)
        for _ in range(3):  # a task that swallowed a cancel (a library) is cancelled again
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=2.0) if pending else (set(), set())
            if not pending:
                break
        for source in sources:
            with contextlib.suppress(Exception):
                await source.close()
        outbox.put_health(_health(runners, outbox))  # the final counters


def worker_main(spec: WorkerSpec, data: Connection, ctrl: Connection) -> None:
    """Process entry (module level, so the fork server or ``spawn`` can find it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    outbox = Outbox(data)
    root = logging.getLogger()
    root.handlers[:] = [_ToParent(outbox, spec.index)]
    for name, level in spec.log_levels.items():
        logging.getLogger(name or None).setLevel(level)
    try:
        asyncio.run(_serve(spec, outbox, ctrl))
    finally:
        outbox.close()
