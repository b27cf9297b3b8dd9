"""Source contract and the CollectorRunner that owns everything about running one.

A Source only opens, reads and closes; it never retries or sleeps. The runner schedules
reads (polling) or waits for pushed data (streaming), applies timeouts, reconnects with
exponential backoff and jitter, rebuilds the client when a watchdog sees no read complete
for ``watchdog_intervals`` intervals, and on failure publishes one batch marking the
source's tags BAD|COMM_FAILURE so rules and boards see the loss. Failures are logged once
when they start and once on recovery, never every cycle; the recovery line gives the
outage as operators see it: from the last good read to the first data again.

Invariant: ``run()`` returns only by our own cancellation (the process stopping). A
CancelledError that nobody asked for (client libraries raise one when they await an
internal task that was cancelled) is a source failure like any other, and anything that
escapes the read loop is logged with its traceback and the loop restarted with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from core.backoff import Backoff
from core.batch import ReadingBatch
from core.clock import Clock, SystemClock, to_datetime
from core.errors import SourceError
from core.quality import Quality

__all__ = [
    "CollectorRunner",
    "RunnerStats",
    "Source",
    "SourceHealth",
    "cancelled_by_us",
    "comm_failure_batch",
]

log = logging.getLogger(__name__)


def _raise_if_stopping() -> None:
    # A library that turned our cancel() into another error (pymodbus, asyncua) swallowed it;
    # the task would then run on for ever, so the stop is re-raised here.
    if cancelled_by_us():
        raise asyncio.CancelledError


def cancelled_by_us() -> bool:
    """True when the current task has a cancel() pending, i.e. a CancelledError is ours.

    A CancelledError raised while nobody cancelled this task comes from inside a library
    (asyncua's connection check awaiting its own cancelled keep-alive task): not a stop.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


@dataclass
class SourceHealth:
    """What a source knows beyond "the last read worked" (devices behind one link)."""

    devices: dict[str, bool] = field(default_factory=dict)  # device id -> answering with live data
    request_errors: int = 0  # failed requests that did not fail the whole read
    # (metric name, labels, value): protocol detail such as Modbus units and request groups
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


class Source(Protocol):
    name: str
    tags: np.ndarray  # int32 dense indexes this source owns
    interval_s: float  # poll period; for streaming sources the expected update period

    @property
    def streaming(self) -> bool:
        """True when read() waits for pushed data instead of being scheduled."""
        ...

    async def open(self) -> None: ...

    async def read(self) -> ReadingBatch:
        """One batch (polling), or the next pushed batch; an empty batch is a healthy keep-alive."""
        ...

    async def close(self) -> None: ...


@dataclass
class RunnerStats:
    state: str = "starting"  # starting | ok | failed
    reads: int = 0
    readings: int = 0
    errors: int = 0
    reconnects: int = 0
    restarts: int = 0  # read loop restarted by the supervisor after an unexpected end
    last_ok_us: int = 0  # last successful read (data or a healthy keep-alive)
    last_error: str = ""
    failed_since_us: int = 0  # when the failure was detected
    outage_from_us: int = 0  # last good read before the current failure
    last_outage_s: float = 0.0  # last good read -> first data again, of the last outage
    history: list[str] = field(default_factory=list)  # state transitions, newest last (bounded)


def comm_failure_batch(
    tags: np.ndarray, now_us: int, quality: int = Quality.BAD_COMM_FAILURE
) -> ReadingBatch:
    n = len(tags)
    return ReadingBatch(
        np.asarray(tags, dtype=np.int32).copy(),
        np.full(n, now_us, dtype=np.int64),
        np.full(n, np.nan),
        np.full(n, quality, dtype=np.uint8),
    )


def _clock_text(ts_us: int) -> str:
    return to_datetime(ts_us).strftime("%H:%M:%S.%f")[:-3]


class CollectorRunner:
    def __init__(
        self,
        source: Source,
        publish: Callable[[ReadingBatch], None],
        *,
        clock: Clock | None = None,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        jitter: float = 0.25,
        open_timeout_s: float = 10.0,
        read_timeout_s: float | None = None,
        watchdog_intervals: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        self.source = source
        self.publish = publish
        self.clock = clock or SystemClock()
        # Reconnects and restarts: +-jitter around the exponential delay (the cap applies before it).
        self.policy = Backoff(backoff_initial_s, backoff_max_s, jitter=jitter, spread="around")
        self.open_timeout_s = open_timeout_s
        # A read that takes longer than this is treated like a lost connection.
        self.read_timeout_s = read_timeout_s or max(2.0, watchdog_intervals * source.interval_s)
        self.stats = RunnerStats()
        self._rng = rng or random.Random()
        self._attempt = 0
        self._restarts = 0  # consecutive supervisor restarts without a good read in between
        self._ever_ok = False

    @property
    def up(self) -> bool:
        """The link works and every device behind it answers with live data."""
        return self.stats.state == "ok" and self.up_with(self.health())

    def up_with(self, health: SourceHealth) -> bool:
        """``up`` from a health report already taken (one ``health()`` per metrics scrape)."""
        return self.stats.state == "ok" and all(health.devices.values())

    def health(self) -> SourceHealth:
        report = getattr(self.source, "health", None)
        return report() if callable(report) else SourceHealth()

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with +-jitter, so many collectors do not reconnect in step."""
        return self.policy.delay(attempt, self._rng)

    async def run(self) -> None:
        """Collect until cancelled: the supervisor around the read loop.

        Its backoff grows with consecutive restarts and starts again after a good read, so a
        restart weeks after the last one does not wait the maximum backoff."""
        while True:
            try:
                await self._collect()
                log.error("source %s: read loop returned; restarting it", self.source.name)
            except asyncio.CancelledError:
                if cancelled_by_us():
                    raise
                log.exception(
                    "source %s: read loop ended by a CancelledError nobody asked for", self.source.name
                )
            except Exception:
                _raise_if_stopping()
                log.exception("source %s: read loop crashed; restarting it", self.source.name)
            self.stats.restarts += 1
            with contextlib.suppress(Exception):
                self._failed(SourceError("read loop restarted after an unexpected end"))
            await self.clock.sleep(self.backoff(self._restarts))
            self._restarts += 1

    async def _collect(self) -> None:
        self._attempt = 0
        while True:
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancellation that lands as the awaited call completes (CPython gh-86296),
                # and a collector that ignores cancel() hangs shutdown.
                async with asyncio.timeout(self.open_timeout_s):
                    await self.source.open()
                await self._read_loop()
            except asyncio.CancelledError as exc:
                if cancelled_by_us():
                    raise
                self._failed(SourceError(f"client library raised CancelledError: {exc or 'no message'}"))
            except (SourceError, TimeoutError, OSError) as exc:
                _raise_if_stopping()
                self._failed(exc)
            except Exception as exc:  # a bug or an unexpected library error: never end collection
                _raise_if_stopping()
                log.exception("source %s: unexpected error", self.source.name)
                self._failed(exc)
            finally:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self.open_timeout_s):
                        await self.source.close()
            _raise_if_stopping()  # a stop that close() (a library) swallowed: no backoff, no reopen
            self.stats.reconnects += 1
            await self.clock.sleep(self.backoff(self._attempt))
            self._attempt += 1

    async def _read_loop(self) -> None:
        interval = self.source.interval_s
        next_due = self.clock.monotonic()
        while True:
            _raise_if_stopping()  # a stop that a library swallowed during the last read
            if not self.source.streaming:
                delay = next_due - self.clock.monotonic()
                if delay > 0:
                    await self.clock.sleep(delay)
            try:
                async with asyncio.timeout(self.read_timeout_s):
                    batch = await self.source.read()
            except TimeoutError:
                raise SourceError(f"no read completed within {self.read_timeout_s:g} s (watchdog)") from None
            self._ok(batch)
            # Ticks missed while a read was slow are skipped (one read now), never burst through.
            next_due = max(next_due + interval, self.clock.monotonic())

    def _ok(self, batch: ReadingBatch) -> None:
        now = self.clock.now_us()
        self._attempt = 0  # backoff restarts only after a read succeeded, not after a mere connect
        self._restarts = 0
        self.stats.reads += 1
        self.stats.readings += len(batch)
        if self.stats.state == "failed" and not len(batch):
            return  # connected again, but no data yet: the outage is not over
        if self.stats.state != "ok":
            if self.stats.state == "failed":
                start = self.stats.outage_from_us
                self.stats.last_outage_s = (now - start) / 1e6
                log.warning(
                    "source %s recovered: no data for %.1f s (last good read %s, loss detected %.1f s after it)",
                    self.source.name,
                    self.stats.last_outage_s,
                    _clock_text(start),
                    (self.stats.failed_since_us - start) / 1e6,
                )
            self._transition("ok")
        self.stats.last_ok_us = now
        self._ever_ok = True
        if len(batch):
            self.publish(batch)

    def _failed(self, exc: BaseException) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        if self.stats.state != "failed":
            now = self.clock.now_us()
            self.stats.failed_since_us = now
            self.stats.outage_from_us = self.stats.last_ok_us if self._ever_ok else now
            since = now - self.stats.outage_from_us
            last = f", {since / 1e6:.1f} s after the last good read" if self._ever_ok else ""
            log.error(
                "source %s failed%s: %s (tags marked BAD, reconnecting)",
                self.source.name,
                last,
                self.stats.last_error,
            )
            self._transition("failed")
            self.publish(comm_failure_batch(self.source.tags, now))

    def _transition(self, state: str) -> None:
        self.stats.state = state
        self.stats.history.append(state)
        del self.stats.history[:-32]
