"""SpoolingWriter: the historian sink that keeps accepting batches through database outages.

``write()`` never waits for the database: batches go to a bounded memory buffer, and one
task writes them, coalescing whatever has queued up into one transaction of at most
``max_batch_rows`` (group commit: small transactions when the database keeps up, large
ones when it falls behind, which amortizes the per-transaction rollup and latest-value
upserts). While the database is unreachable, or the buffer is full, batches go to the
disk Spool; the same task reconnects with exponential backoff and jitter and replays the
spool oldest-first, alternating with fresh data. Invariants: every accepted reading ends
up in the database exactly once (writes are idempotent, so replaying after an ambiguous
failure is safe) or is counted dropped by the spool; only memory-buffered batches (at
most ``max_buffer_rows``) are lost if the process dies.

Bad data never blocks good data: rows with a timestamp outside [1970, 2200) are set aside
at ``write()`` and counted in ``rejected_rows``; a group the database refuses because of
its data (SQLSTATE class 22 or 23, or a trigger's RAISE) is retried one batch per
transaction, and a batch refused on its own goes to the spool's quarantine (counted in
``quarantined_*``) instead of being retried forever. The task survives any exception
(logged, its batches spooled, then it backs off), and ``close()`` always leaves the
memory buffer in the spool.

Metrics (``metrics=`` a registry): every ``metrics()`` counter as a gauge
``hazardwatch_historian_<key>``, read at scrape time, and ``hazardwatch_historian_batch_age_seconds``,
the age of each batch's newest reading when its transaction committed, by the way it came
(``via="memory"`` straight from ``write()``, ``via="spool"`` drained from disk).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence

import numpy as np
from prometheus_client import Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from core.backoff import Backoff
from core.batch import ReadingBatch
from core.clock import Clock, SystemClock
from core.errors import DatabaseUnavailable, StorageError
from storage.spool import Spool, SpoolRecord
from storage.writer import MAX_TS_US, MIN_TS_US, BatchWriter, split_time_range, to_db_ids

__all__ = ["HistorianMetrics", "SpoolingWriter"]

log = logging.getLogger(__name__)

Connector = Callable[[], Awaitable[BatchWriter]]

# SQLSTATE classes meaning "this data is refused", not "the database or session is broken":
# 22 data exception (e.g. value out of range), 23 integrity constraint (CHECK, NOT NULL),
# P0 PL/pgSQL RAISE (a trigger refusing rows). Anything else (privileges, missing tables,
# internal errors) affects every batch alike: those stay spooled and are retried.
_REFUSED_SQLSTATE_CLASSES = ("22", "23", "P0")

# Batch age at commit: a 1 Hz scan normally lands within a second or two; the long tail is a
# backlog (falling behind, or drained from the spool after an outage).
BATCH_AGE_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, 86400.0)


def _refused(exc: BaseException) -> bool:
    """Did the batch's data, rather than the database or our session, cause ``exc``?"""
    if isinstance(exc, DatabaseUnavailable):
        return False
    if isinstance(exc, StorageError):
        sqlstate = getattr(exc.__cause__, "sqlstate", None) or ""
        return sqlstate[:2] in _REFUSED_SQLSTATE_CLASSES
    # Our own numpy/date code choking on the values (BatchError is a ValueError).
    return isinstance(exc, (ValueError, ArithmeticError))


class SpoolingWriter:
    """Front-end over BatchWriter + Spool. Use as ``async with``, or call start()/close()."""

    def __init__(
        self,
        connect: Connector,
        db_ids: np.ndarray,
        spool: Spool,
        *,
        clock: Clock | None = None,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        write_timeout_s: float = 60.0,
        max_batch_rows: int = 200_000,
        max_buffer_rows: int = 1_000_000,
        rng: random.Random | None = None,
        down_since: float | None = None,
        metrics: CollectorRegistry | None = None,
    ) -> None:
        """``down_since``: ``clock.monotonic()`` when this process first failed to reach the
        database before the writer existed (a start during an outage), so the outage it
        reports is counted from there rather than from the writer's own first attempt.
        ``metrics``: the process's registry to report in (None: measured, not exported)."""
        self._connect = connect
        self.db_ids = np.asarray(db_ids, dtype=np.int32)
        self.spool = spool
        self._clock = clock or SystemClock()
        # "Equal jitter": half the exponential delay fixed, half random, so reconnect storms
        # from many processes spread out but each still backs off; never above the cap.
        self._backoff = Backoff(backoff_initial_s, backoff_max_s, jitter=0.5, spread="below")
        self._write_timeout_s = write_timeout_s
        self.max_batch_rows = max_batch_rows
        self.max_buffer_rows = max_buffer_rows
        self._rng = rng or random.Random()
        self._writer: BatchWriter | None = None
        self._buffer: deque[ReadingBatch] = deque()
        self._buffer_rows = 0
        self._in_flight = False
        self._settled = asyncio.Event()  # buffer empty and no buffered batch in flight
        self._settled.set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._down_since = down_since
        self._rejected = False  # a non-outage error is being retried (logged once)
        self._logged_time_kinds: set[str] = set()
        self.written_batches = self.written_rows = self.transactions = 0
        self.drained_batches = self.drained_rows = self.duplicate_rows = 0
        self.rejected_rows = 0  # timestamp outside [MIN_TS_US, MAX_TS_US): never written
        self.spooled_rows_at_start = spool.pending_rows  # left by an earlier run, drained by this one
        self.task_errors = 0  # unexpected exceptions the writer task survived
        self.batch_age_seconds = Histogram(
            "hazardwatch_historian_batch_age_seconds",
            "Age of a batch's newest reading when its transaction committed, by way of memory or spool.",
            ["via"],
            buckets=BATCH_AGE_BUCKETS_S,
            registry=metrics,
        )
        if metrics is not None:
            metrics.register(HistorianMetrics(self))

    # --- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="historian-writer")

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stop; buffered batches are written if the database answers in time, else spooled.

        Whatever happened before (even a crashed task), the buffer ends up in the spool.
        """
        try:
            task, self._task = self._task, None
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                except Exception:
                    log.exception("historian: the writer task had failed")
            if self._buffer and self._writer is not None:
                try:
                    async with asyncio.timeout(timeout_s):
                        while self._buffer and self._writer is not None:
                            await self._write_buffered()
                except (StorageError, TimeoutError):
                    pass
                except Exception:
                    log.exception("historian: writing the buffer on close failed; spooling it")
        finally:
            self._spill_buffer()
            await self._drop_writer()
            self.spool.close()

    async def __aenter__(self) -> SpoolingWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._writer is not None

    def metrics(self) -> dict[str, int]:
        s = self.spool
        return {
            "db_up": int(self.connected),
            "written_batches": self.written_batches,
            "written_rows": self.written_rows,
            "transactions": self.transactions,
            "duplicate_rows": self.duplicate_rows,
            "buffered_batches": len(self._buffer),
            "buffered_rows": self._buffer_rows,
            "spooled_batches": s.spooled_batches,
            "spooled_bytes": s.spooled_bytes,
            "dropped_batches": s.dropped_batches,
            "dropped_rows": s.dropped_rows,
            "drained_batches": self.drained_batches,
            "drained_rows": self.drained_rows,
            "spooled_rows_at_start": self.spooled_rows_at_start,
            "torn_records": s.torn_records,
            "pending_batches": s.pending_batches,
            "pending_rows": s.pending_rows,
            "pending_bytes": s.size_bytes,
            "rejected_rows": self.rejected_rows,
            "quarantined_batches": s.quarantined_batches,
            "quarantined_rows": s.quarantined_rows,
            "quarantine_bytes": s.quarantine_bytes,
            "spool_write_errors": s.write_errors,
            "task_errors": self.task_errors,
        }

    async def flush(self) -> None:
        """Return once everything written so far is in the database or in the spool."""
        self._wake.set()
        await self._settled.wait()

    async def wait_drained(self) -> None:
        """Return once the buffer and spool are empty, the database is connected and the
        writer task is idle: a batch taken from the buffer or spool is in neither while its
        transaction runs, so empty queues alone would return mid-write (and a stop that closes
        the writer then would cancel that write and spool it)."""
        await self._wait_idle()
        while self._buffer or self.spool.pending_batches or not self.connected:
            await self._wait_idle()

    async def _wait_idle(self) -> None:
        self._idle.clear()
        self._wake.set()
        await self._idle.wait()

    # --- accepting ---------------------------------------------------------------

    async def write(self, batch: ReadingBatch) -> None:
        """Accept a batch of dense-index readings; never waits for the database."""
        resolved, rejected = split_time_range(to_db_ids(batch, self.db_ids))
        if len(rejected):
            self._count_rejected(rejected)
        if len(resolved) == 0:
            return
        if self._writer is None or self._buffer_rows + len(resolved) > self.max_buffer_rows:
            # Down, or falling behind: disk, not memory, so a crash cannot take it.
            self.spool.append(resolved)
        else:
            self._buffer.append(resolved)
            self._buffer_rows += len(resolved)
            self._settled.clear()
        self._wake.set()

    # --- the one task that talks to the database -----------------------------------

    def _count_rejected(self, rejected: ReadingBatch) -> None:
        self.rejected_rows += len(rejected)
        for kind, mask in (("before 1970-01-01", rejected.ts < MIN_TS_US),
                           ("at or after 2200-01-01", rejected.ts >= MAX_TS_US)):  # fmt: skip
            if kind not in self._logged_time_kinds and mask.any():
                self._logged_time_kinds.add(kind)
                i = int(mask.argmax())
                log.error(
                    "historian: readings timestamped %s are not stored (first: tag id %d, ts %d µs); "
                    "counted in rejected_rows, logged once",
                    kind, int(rejected.tag[i]), int(rejected.ts[i]),
                )  # fmt: skip

    async def _run(self) -> None:
        while True:
            try:
                await self._loop()
            except Exception:
                # Never die: a dead task would silently stop the historian. Keep the
                # buffer on disk, start over on a fresh connection after a pause.
                self.task_errors += 1
                log.exception("historian: unexpected error in the writer task; spooling, retrying")
                await self._drop_writer()
                self._spill_buffer()
                await self._clock.sleep(self._backoff.max_s)

    async def _loop(self) -> None:
        attempt = 0
        spool_turn = False
        while True:
            if self._writer is None:
                self._spill_buffer()
                if not await self._try_connect(attempt):
                    attempt += 1
                    continue
                attempt = 0
            if self._buffer and not (spool_turn and self.spool.pending_batches):
                await self._write_buffered()
                spool_turn = True  # alternate, so a steady stream cannot starve the backlog
            elif self.spool.pending_batches:
                await self._write_spooled()
                spool_turn = False
            else:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()

    async def _try_connect(self, attempt: int) -> bool:
        tried_at = self._clock.monotonic()
        try:
            self._writer = await self._connect()
        except DatabaseUnavailable as exc:
            self._went_down(exc, tried_at)
            await self._clock.sleep(self._backoff_delay(attempt))
            return False
        except StorageError as exc:
            # A schema mismatch will not fix itself soon: keep spooling, retry slowly.
            if not self._rejected:
                log.error("historian: cannot use the database (%s); spooling, retrying every %.0f s",
                          exc, self._backoff.max_s)  # fmt: skip
            self._rejected = True
            await self._clock.sleep(self._backoff.max_s)
            return False
        if self._down_since is not None:
            # A process cannot know when an outage began before it first tried: say what is counted.
            log.warning(
                "historian: database back after %.1f s (counted from this process's first failed "
                "attempt; it may have been down longer); draining %d spooled batches",
                self._clock.monotonic() - self._down_since,
                self.spool.pending_batches,
            )
            self._down_since = None
        return True

    async def _write_buffered(self) -> None:
        batches = [self._buffer.popleft()]
        rows = len(batches[0])
        while self._buffer and rows + len(self._buffer[0]) <= self.max_batch_rows:
            batches.append(self._buffer.popleft())
            rows += len(batches[-1])
        self._buffer_rows -= rows
        self._in_flight = True
        done: list[bool] = []  # per batch handled: written (True) or quarantined (False)
        try:
            stop = await self._write_group(batches, done)
            if stop is not None:  # outage, or a failure not tied to this data: spool the rest
                for b in batches[len(done) :]:
                    self.spool.append(b)
        except BaseException:  # cancelled (close): give the rest back, close() decides
            rest = batches[len(done) :]
            self._buffer.extendleft(reversed(rest))
            self._buffer_rows += sum(len(b) for b in rest)
            raise
        finally:
            self._in_flight = False
            self._check_settled()
            written = [b for b, ok in zip(batches, done, strict=False) if ok]
            self.written_batches += len(written)
            self.written_rows += sum(len(b) for b in written)
            self._observe_age(written, "memory")
        if stop is not None:
            await self._failed(stop)

    async def _write_spooled(self) -> None:
        records: list[SpoolRecord] = self.spool.take(self.max_batch_rows)
        if not records:
            return
        batches = [r.batch for r in records]
        done: list[bool] = []
        try:
            stop = await self._write_group(batches, done)
        except BaseException:
            self.spool.requeue(records[len(done) :])
            raise
        finally:
            self.spool.ack(records[: len(done)])
            drained = [b for b, ok in zip(batches, done, strict=False) if ok]
            self.drained_batches += len(drained)
            self.drained_rows += sum(len(b) for b in drained)
            self._observe_age(drained, "spool")
        if stop is not None:
            self.spool.requeue(records[len(done) :])
            await self._failed(stop)

    async def _write_group(self, batches: Sequence[ReadingBatch], done: list[bool]) -> Exception | None:
        """Write ``batches`` in one transaction, or one by one if their data is refused.

        Appends to ``done`` per batch handled (see :meth:`_write_each`); returns the
        exception that stopped it (outage, or a failure not tied to the data), else None.
        """
        try:
            await self._write_db(ReadingBatch.concat(batches))
        except Exception as exc:
            if not _refused(exc):
                return exc
            return await self._write_each(batches, done, exc)
        done += [True] * len(batches)
        return None

    async def _write_each(
        self, batches: Sequence[ReadingBatch], done: list[bool], group_exc: Exception
    ) -> Exception | None:
        """The database refused a group: write its batches one per transaction.

        Appends to ``done`` per batch handled: True written, False refused on its own and
        quarantined (never retried, so it cannot block the rest). Returns the exception
        that stopped it early (outage, or a failure not tied to one batch), else None.
        """
        if len(batches) > 1:
            log.warning("historian: database refused a group of %d batches (%s); writing them one by one",
                        len(batches), group_exc)  # fmt: skip
        for i, b in enumerate(batches):
            if len(batches) == 1:
                exc: Exception | None = group_exc
            else:
                try:
                    await self._write_db(b)
                    exc = None
                except Exception as e:
                    exc = e
            if exc is None:
                done.append(True)
            elif _refused(exc):
                self.spool.quarantine(b, f"{type(exc).__name__}: {exc}")
                done.append(False)
            else:
                return exc
            assert len(done) == i + 1
        return None

    async def _write_db(self, batch: ReadingBatch) -> None:
        writer = self._writer
        if writer is None:
            raise DatabaseUnavailable("not connected")
        try:
            async with asyncio.timeout(self._write_timeout_s):
                result = await writer.write_resolved(batch)
        except TimeoutError as exc:
            raise DatabaseUnavailable(f"write timed out after {self._write_timeout_s} s") from exc
        self.transactions += 1
        self.duplicate_rows += result.duplicates
        if result.rejected:  # spooled by an older version that did not screen timestamps
            _, rejected = split_time_range(batch)
            self._count_rejected(rejected)
        if self._rejected:
            log.warning("historian: database accepts batches again")
            self._rejected = False

    async def _failed(self, exc: Exception) -> None:
        if isinstance(exc, DatabaseUnavailable):
            self._went_down(exc)
        else:
            # Not an outage, and not this data: the database (privileges, schema) or our
            # code refuses every batch alike. They stay spooled (nothing is lost
            # silently); reconnect and retry later instead of spinning.
            if not self._rejected:
                log.error("historian: cannot write (%s: %s); kept in the spool, retrying",
                          type(exc).__name__, exc, exc_info=not isinstance(exc, StorageError))  # fmt: skip
            self._rejected = True
            await self._clock.sleep(self._backoff.max_s)
        await self._drop_writer()

    def _went_down(self, exc: DatabaseUnavailable, tried_at: float | None = None) -> None:
        if self._down_since is None:
            self._down_since = self._clock.monotonic() if tried_at is None else tried_at
            log.warning("historian: database unavailable (%s); spooling to %s", exc, self.spool.directory)

    def _spill_buffer(self) -> None:
        while self._buffer:
            self.spool.append(self._buffer.popleft())
        self._buffer_rows = 0
        self._check_settled()

    def _check_settled(self) -> None:
        if not self._buffer and not self._in_flight:
            self._settled.set()

    async def _drop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(Exception):
                await writer.close()

    def _backoff_delay(self, attempt: int) -> float:
        return self._backoff.delay(attempt, self._rng)

    def _observe_age(self, committed: Sequence[ReadingBatch], via: str) -> None:
        now_us = self._clock.now_us()
        ages = self.batch_age_seconds.labels(via=via)
        for b in committed:
            if len(b):  # a device clock ahead of ours would make it negative: counted as fresh
                ages.observe(max(0.0, (now_us - int(b.ts.max())) / 1e6))


class HistorianMetrics(Collector):
    """``SpoolingWriter.metrics()`` as gauges ``hazardwatch_historian_<key>``, read at scrape time
    (names as documented in docs/operations.md since the first release: dashboards use them)."""

    def __init__(self, writer: SpoolingWriter) -> None:
        self.writer = writer

    def collect(self) -> Iterator[Metric]:
        for key, value in self.writer.metrics().items():
            yield GaugeMetricFamily(
                f"hazardwatch_historian_{key}",
                f"Historian writer: {key.replace('_', ' ')}.",
                value=float(value),
            )
