"""Hub: fans each batch out to its sinks, one bounded queue per sink.

A slow sink (the database) never delays another (the rule engine). Each queue holds at
most ``max_batches``; when full, the OLDEST batch is dropped and counted (rows too), on the
view that the newest values matter most to a control room and the historian's own spool
covers database outages. Depth, drops and lag are exposed in ``stats()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from core.batch import ReadingBatch
from core.clock import Clock, SystemClock

__all__ = ["Hub", "MemorySink", "SinkStats"]

log = logging.getLogger(__name__)

Write = Callable[[ReadingBatch], Awaitable[None]]


@dataclass
class SinkStats:
    depth: int = 0
    written_batches: int = 0
    written_rows: int = 0
    dropped_batches: int = 0
    dropped_rows: int = 0
    errors: int = 0
    lag_s: float = 0.0  # age of the oldest queued batch


@dataclass
class _Sink:
    name: str
    write: Write
    max_batches: int
    queue: deque[tuple[float, ReadingBatch]] = field(default_factory=deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    stats: SinkStats = field(default_factory=SinkStats)


class Hub:
    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self._sinks: dict[str, _Sink] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def add_sink(self, name: str, write: Write, max_batches: int = 1000) -> None:
        if name in self._sinks:
            raise ValueError(f"sink {name!r} already added")
        if max_batches < 1:
            raise ValueError("max_batches must be at least 1")
        sink = _Sink(name, write, max_batches)
        sink.idle.set()
        self._sinks[name] = sink

    def publish(self, batch: ReadingBatch) -> None:
        """Enqueue for every sink; never blocks."""
        now = self.clock.monotonic()
        for sink in self._sinks.values():
            if len(sink.queue) >= sink.max_batches:
                _, dropped = sink.queue.popleft()
                sink.stats.dropped_batches += 1
                sink.stats.dropped_rows += len(dropped)
                if sink.stats.dropped_batches == 1 or sink.stats.dropped_batches % 1000 == 0:
                    log.warning(
                        "sink %s is behind: dropped %d batches so far", sink.name, sink.stats.dropped_batches
                    )
            sink.queue.append((now, batch))
            sink.idle.clear()
            sink.ready.set()

    async def start(self) -> None:
        for sink in self._sinks.values():
            self._tasks.append(asyncio.create_task(self._consume(sink), name=f"hub-sink-{sink.name}"))

    async def _consume(self, sink: _Sink) -> None:
        while True:
            if not sink.queue:
                sink.idle.set()
                sink.ready.clear()
                await sink.ready.wait()
                continue
            _, batch = sink.queue.popleft()
            try:
                await sink.write(batch)
                sink.stats.written_batches += 1
                sink.stats.written_rows += len(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                sink.stats.errors += 1
                log.exception("sink %s failed to take a batch of %d rows", sink.name, len(batch))

    async def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queue is empty and its last write finished; False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                for sink in self._sinks.values():
                    while sink.queue or not sink.idle.is_set():
                        await sink.idle.wait()
                        await asyncio.sleep(0)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def stats(self) -> dict[str, SinkStats]:
        now = self.clock.monotonic()
        out = {}
        for name, sink in self._sinks.items():
            sink.stats.depth = len(sink.queue)
            sink.stats.lag_s = now - sink.queue[0][0] if sink.queue else 0.0
            out[name] = sink.stats
        return out


class MemorySink:
    """A sink that keeps every batch (tests, the live snapshot's simplest form)."""

    def __init__(self) -> None:
        self.batches: list[ReadingBatch] = []

    async def write(self, batch: ReadingBatch) -> None:
        self.batches.append(batch)

    def all(self) -> ReadingBatch:
        return ReadingBatch.concat(self.batches)
