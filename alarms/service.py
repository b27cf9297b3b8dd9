"""AlarmService: the alarm lifecycle inside the engine process, the one writer of alarm state.

Order of a commit: the manager makes it (in memory, on the event loop), the local log keeps it
(fsync), then the database writer stores it in one transaction. The writer runs on its own
task, so a slow or absent database never delays the rule engine: while the database is down
commits wait on disk in order (and in memory up to ``max_queued`` commits; beyond that they are
read back from the log), and the writer reconnects with backoff and jitter. The transaction
itself runs on one writer thread with a blocking connection: a write makes a dozen round trips,
and on the event loop each would wait behind whatever the loop is doing (in a flood, the
manager's work on the next batch), which tripled the flood's p99 latency (bench/alarms.py).

``recover`` runs before the engine evaluates anything: it stores what the log holds beyond the
database (a crash or an outage in the previous run), then loads every alarm's state and the
rules' active conditions, which the caller restores into the rule engine (``rule_overlay``),
so the rule state and the alarm state agree and a condition still active is not re-announced;
alarms stored as suppressed by a ``suppress_when`` no longer configured are released then.

Commands: pending ``alarm_command`` rows are read on NOTIFY ``alarm_command`` and every
``command_poll_s`` (a missed notification costs at most that), applied in submitted order,
each in its own commit; a command is applied once: the last ``_HANDLED_KEPT`` ids handled are
remembered, so a row read as pending again (its outcome not yet stored, or stored after the
read began) is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeAlias, cast

from prometheus_client import Counter, Gauge
from prometheus_client.registry import CollectorRegistry

from alarms import store
from alarms.changes import SifChange, SuppressionChange
from alarms.journal import Commit, LocalLog, RuleRow
from alarms.manager import AlarmManager
from alarms.model import Catalog
from core.backoff import Backoff
from core.clock import Clock
from core.conditions import ConditionEdges
from core.errors import DatabaseUnavailable, StorageError
from core.settings import AlarmSettings
from storage.db import BlockingConn, Conn, connect, connect_blocking

__all__ = ["AlarmService"]

log = logging.getLogger(__name__)

_RECONNECT = Backoff(initial_s=0.5, max_s=30.0, jitter=0.5, spread="below")
_WRITE_MAX_COMMITS = 500  # commits per database transaction while catching up
# Command ids remembered as handled. Not dropped as soon as the database has their outcome: a
# read of pending commands that began before that commit can still return the row as pending.
_HANDLED_KEPT = 100_000
# what the rule engine's side hands over: edges, SIF changes, suppression changes
_Input: TypeAlias = ConditionEdges | tuple[SifChange, ...] | tuple[SuppressionChange, ...]


class AlarmService:
    def __init__(
        self,
        catalog: Catalog,
        settings: AlarmSettings,
        log_dir: Path,
        dsn: str,
        clock: Clock,
        *,
        max_queued: int = 10_000,
        max_early_edges: int = 100_000,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.catalog = catalog
        self.settings = settings
        self.dsn = dsn
        self.clock = clock
        self.log = LocalLog(log_dir)
        self.manager = AlarmManager(catalog, settings)
        self.stored_seq = -1
        self.max_queued = max_queued
        self._queue: deque[Commit] = deque()
        self._spilled = False  # commits beyond the queue: read back from the log
        self._unlogged: set[int] = set()  # seqs the log failed to keep: only in the queue
        self._wake = asyncio.Event()
        self._stored = asyncio.Event()
        self._handled: dict[str, int] = {}  # command id -> seq of the commit that settled it
        self._tasks: list[asyncio.Task[None]] = []
        # the writer thread and its connection (used on that thread only)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alarms-writer")
        self._wconn: BlockingConn | None = None
        # a duplicate of its socket, kept from connect to close under the lock, so close() can
        # wake a write hung on it from the loop's thread without touching a reused fd number
        self._wsock: socket.socket | None = None
        self._wsock_lock = threading.Lock()
        self._closed: bool | None = None  # close()'s answer, once closed
        # Edges (and SIF and suppression changes) that arrive before ``recover`` could run (the
        # database was down at start): applied in order once it has; beyond ``max_early_edges``
        # the oldest are dropped.
        self.recovered = False
        self.max_early_edges = max_early_edges
        self._early: deque[tuple[_Input, int]] = deque()
        self._early_edges = 0
        self.early_dropped = Counter(
            "hazardwatch_alarm_early_edges_dropped_total",
            "Condition edges, SIF and suppression changes dropped while the alarm state could not be loaded (database down at start).",
            registry=registry,
        )
        self.commits = Counter(
            "hazardwatch_alarm_commits_total",
            "Alarm commits made (edges, commands, timers).",
            registry=registry,
        )
        self.log_failures = Counter(
            "hazardwatch_alarm_log_failures_total",
            "Alarm commits the local log could not keep (disk full, I/O error): in memory only until stored.",
            registry=registry,
        )
        self.store_errors = Counter(
            "hazardwatch_alarm_store_errors_total",
            "Attempts to store alarm commits that the database refused (not an outage): every later "
            "commit waits behind them until the cause is fixed.",
            registry=registry,
        )
        self.backlog = Gauge(
            "hazardwatch_alarm_backlog_commits", "Alarm commits not yet in the database.", registry=registry
        )
        self.backlog.set_function(lambda: max(0, self.manager.seq - self.stored_seq))

    # --- start ---------------------------------------------------------------------------

    async def recover(self) -> dict[str, RuleRow]:
        """Store the log's commits the database lacks, load the state; the rules' stored state
        (rule key -> active condition) for the engine. Raises DatabaseUnavailable when the
        database cannot be reached (the caller decides whether to start without it)."""
        conn = await connect(self.dsn, application_name="hazardwatch-alarms")
        try:
            state = await store.load(conn)
            if self.log.last_seq > state.seq:
                log.warning(
                    "alarm log: storing the commits after seq %d (to %d) the database did not have yet",
                    state.seq, self.log.last_seq,
                )  # fmt: skip
                # a chunk at a time (a day-long outage can leave gigabytes), freeing disk as it goes
                for chunk in self.log.chunks(state.seq, _WRITE_MAX_COMMITS):
                    await self._store(chunk)
                    self.log.forget(chunk[-1].seq)
                state = await store.load(conn)
        finally:
            await conn.close()
        self.log.forget(state.seq)
        self.stored_seq = state.seq
        self.manager = AlarmManager(
            self.catalog, self.settings, seq=max(state.seq, self.log.last_seq), alarms=state.alarms
        )
        self.recovered = True
        released = self.manager.release_suppressions(self.clock.now_us())  # a suppress_when removed
        if released is not None:
            self._keep(released)
        rules = dict(state.rules)
        while self._early:
            held, now_us = self._early.popleft()
            commit = self._commit_input(held, now_us)
            rules.update((r.key, r) for r in (commit.rules if commit else ()))
        return rules

    async def recover_when_reachable(
        self, ready: asyncio.Event, recovered: Callable[[dict[str, RuleRow]], object]
    ) -> None:
        """``recover`` once ``ready`` is set (the schema is migrated), retrying while the
        database is down, then ``recovered(rules)`` (the engine is aligned with them) and
        ``start``: for a process that started during an outage."""
        await ready.wait()
        attempt = 0
        while True:
            try:
                rules = await self.recover()
            except (DatabaseUnavailable, StorageError) as exc:
                await asyncio.sleep(_RECONNECT.delay(attempt))
                attempt += 1
                log.warning("alarms: state not loaded yet (%s)", exc)
                continue
            log.warning(
                "alarms: state loaded after the database returned; %d early edges applied", self._early_edges
            )
            recovered(rules)
            self.start()
            return

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="alarms-writer"),
            asyncio.create_task(self._command_loop(), name="alarms-commands"),
            asyncio.create_task(self._timer_loop(), name="alarms-timers"),
        ]

    async def close(self, timeout_s: float = 10.0) -> bool:
        """Stop reading commands and timers, give the writer ``timeout_s`` to store what is
        queued (what it cannot stays in the log for the next start); True when all was stored.
        A second call returns the first's answer (False while the first is still at work)."""
        if self._closed is not None:
            return self._closed
        self._closed = False
        for task in self._tasks[1:]:
            task.cancel()
        writer = self._tasks[0] if self._tasks else None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while writer is not None and self.stored_seq < self.manager.seq and not writer.done():
                    self._stored.clear()
                    await self._stored.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        # after a write still running on the writer thread (a cancelled task does not stop it)
        closing = asyncio.get_running_loop().run_in_executor(self._writer, self._drop_wconn)
        try:
            await asyncio.wait_for(asyncio.shield(closing), timeout_s)
        except TimeoutError:
            # the write hangs on a link that went silent: wake its thread (else the process
            # could not exit: the executor's threads are joined at exit)
            self._abort_wconn()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(closing), 5.0)
        self._writer.shutdown(wait=False)
        self.log.close()
        self.log.forget(self.stored_seq)  # a clean stop leaves no stored segment behind
        unlogged = sum(1 for seq in self._unlogged if seq > self.stored_seq)
        if self._early:
            log.error(
                "alarms: %d condition edges arrived before the alarm state could be loaded: lost",
                self._early_edges,
            )
        if unlogged:
            log.error("alarms: %d commits the local log could not keep were not stored: lost", unlogged)
        if self.stored_seq < self.manager.seq:
            log.warning(
                "alarms: %d commits not stored yet stay in the local log",
                self.manager.seq - self.stored_seq - unlogged,
            )
        self._closed = self.stored_seq >= self.manager.seq and not self._early
        return self._closed

    # --- inputs ----------------------------------------------------------------------------

    def edges(self, edges: ConditionEdges) -> None:
        """Condition edges from the rule engine (batch or tick), committed at once (held until
        the alarm state is loaded)."""
        self._take(edges, self.clock.now_us())

    def sif(self, changes: Sequence[SifChange]) -> None:
        """Safety functions that could no longer act or can again (after a batch or tick),
        committed at once like edges (held with them until the alarm state is loaded)."""
        self._take(tuple(changes), self.clock.now_us())

    def suppression(self, changes: Sequence[SuppressionChange]) -> None:
        """Units whose suppression by design began or ended (after a batch or tick), committed
        at once like edges (held with them until the alarm state is loaded)."""
        self._take(tuple(changes), self.clock.now_us())

    def _take(self, given: _Input, now_us: int) -> None:
        if self.recovered:
            self._commit_input(given, now_us)
            return
        self._early.append((given, now_us))
        if not isinstance(given, ConditionEdges):
            # SIF and suppression changes are few and never dropped: their senders report a
            # change once, so a dropped one would never come again (a unit suppressed for good);
            # a dropped edge heals: the engine is aligned with the stored state at recovery and
            # reports the condition again if it still holds
            return
        self._early_edges += len(given)
        while self._early_edges > self.max_early_edges:
            oldest = next(
                (i for i, (held, _) in enumerate(self._early) if isinstance(held, ConditionEdges)), None
            )
            if oldest is None or oldest == len(self._early) - 1:
                break  # never the batch just taken
            dropped, _ = self._early[oldest]
            del self._early[oldest]
            self._early_edges -= len(dropped)
            self.early_dropped.inc(len(dropped))

    def _commit_input(self, given: _Input, now_us: int) -> Commit | None:
        if isinstance(given, ConditionEdges):
            commit = self.manager.edges(given, now_us)
        elif given and isinstance(given[0], SuppressionChange):
            commit = self.manager.suppress(given, now_us)
        else:
            commit = self.manager.sif(cast(tuple[SifChange, ...], given), now_us)
        if commit is not None:
            self._keep(commit)
        return commit

    def _keep(self, commit: Commit) -> None:
        """Log the commit and queue it for the writer. Past ``max_queued`` the queue lets go of
        what the log holds (the writer reads it back); a commit the log failed to keep stays
        queued whatever the length: it is nowhere else."""
        self.commits.inc()
        try:
            self.log.append(commit)
        except StorageError as exc:
            self.log_failures.inc()
            log.error("alarm commit %d kept in memory only until stored: %s", commit.seq, exc)
            self._unlogged.add(commit.seq)
            self._queue.append(commit)
        else:
            if not self._spilled and len(self._queue) >= self.max_queued:
                self._spilled = True  # the log has them all but those it could not keep
                self._queue = deque(c for c in self._queue if c.seq in self._unlogged)
            if not self._spilled:
                self._queue.append(commit)
        self._wake.set()

    # --- the database writer ---------------------------------------------------------------------

    async def _write_loop(self) -> None:
        attempt = 0
        while True:
            if self.stored_seq >= self.manager.seq:
                self._wake.clear()
                await self._wake.wait()
            batch: list[Commit] = []
            try:
                batch = self._next_batch()
                if not batch:  # nothing storable yet (a gap was logged): never spin
                    await asyncio.sleep(1.0)
                    continue
                await self._store(batch)
            except DatabaseUnavailable as exc:
                delay = _RECONNECT.delay(attempt)
                attempt += 1
                log.warning("alarms: commits wait for the database (%s); retry in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                continue
            except StorageError as exc:  # reachable, and refused them (or the log is unreadable)
                self.store_errors.inc()
                delay = _RECONNECT.delay(attempt)
                attempt += 1
                which = f"commits {batch[0].seq}..{batch[-1].seq}" if batch else "the next commits"
                log.error(
                    "alarms: %s could not be stored (%s); they and every later commit wait, in order, "
                    "until the cause is fixed; retry in %.1f s",
                    which, exc, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)
                continue
            except Exception:  # a bug must not end storing for good: the commits stay held
                log.exception("alarms: storing commits failed; retrying")
                await asyncio.sleep(_RECONNECT.delay(attempt))
                attempt += 1
                continue
            attempt = 0
            self.stored_seq = batch[-1].seq
            self._unlogged = {seq for seq in self._unlogged if seq > self.stored_seq}
            while self._queue and self._queue[0].seq <= self.stored_seq:
                self._queue.popleft()
            self.log.forget(self.stored_seq)
            self._stored.set()

    def _next_batch(self) -> list[Commit]:
        """The next commits to store, in seq order without a gap."""
        if not self._spilled:
            return list(itertools.islice(self._queue, _WRITE_MAX_COMMITS))
        logged = self.log.pending(self.stored_seq, _WRITE_MAX_COMMITS)
        kept = {c.seq: c for c in self._queue if c.seq > self.stored_seq}  # the log could not keep
        merged = sorted({**kept, **{c.seq: c for c in logged}}.values(), key=lambda c: c.seq)
        batch: list[Commit] = []
        for c in merged:
            if c.seq != self.stored_seq + 1 + len(batch) or len(batch) == _WRITE_MAX_COMMITS:
                break
            batch.append(c)
        if len(logged) < _WRITE_MAX_COMMITS:  # the log holds nothing newer: queue from here on
            self._spilled = False
            self._queue = deque(merged)
        if not batch and merged:
            log.error("alarms: commit %d is missing (next held: %d)", self.stored_seq + 1, merged[0].seq)
        return batch

    async def _store(self, batch: Sequence[Commit]) -> None:
        """Store ``batch`` in one transaction on the writer thread."""
        await asyncio.get_running_loop().run_in_executor(self._writer, self._store_blocking, batch)

    def _store_blocking(self, batch: Sequence[Commit]) -> None:  # on the writer thread
        try:
            if self._wconn is None or self._wconn.closed:
                self._drop_wconn()
                conn = connect_blocking(self.dsn, application_name="hazardwatch-alarms")
                with self._wsock_lock:
                    self._wconn = conn
                    self._wsock = socket.socket(fileno=os.dup(conn.fileno()))
            store.write(self._wconn, batch)
        except BaseException:
            self._drop_wconn()  # a fresh connection for the retry: this one may be broken
            raise

    def _abort_wconn(self) -> None:
        """Shut the writer connection's socket down from the loop's thread: a write blocked on a
        silent link fails at once (its thread then drops the connection)."""
        with self._wsock_lock, contextlib.suppress(OSError):
            if self._wsock is not None:
                self._wsock.shutdown(socket.SHUT_RDWR)

    def _drop_wconn(self) -> None:  # on the writer thread
        with self._wsock_lock:
            if self._wsock is not None:
                self._wsock.close()
            self._wsock = None
        if self._wconn is not None:
            with contextlib.suppress(Exception):
                self._wconn.close()
        self._wconn = None

    # --- commands and timers -------------------------------------------------------------------

    async def _command_loop(self) -> None:
        attempt = 0
        while True:
            try:
                listen = await connect(
                    self.dsn, autocommit=True, application_name="hazardwatch-alarm-commands"
                )
            except DatabaseUnavailable:
                await asyncio.sleep(_RECONNECT.delay(attempt))
                attempt += 1
                continue
            attempt = 0
            try:
                await listen.execute("LISTEN alarm_command")
                while True:
                    await self._apply_pending(listen)
                    # a finished wait releases the connection for the read above (a running
                    # notifies() holds it); what arrives in between is kept for the next wait
                    async for _ in listen.notifies(timeout=self.settings.command_poll_s, stop_after=1):
                        pass
            except (DatabaseUnavailable, StorageError, OSError) as exc:
                log.warning("alarms: command reader lost the database (%s); reconnecting", exc)
            except Exception as exc:  # psycopg errors surface from notifies() untranslated
                log.warning("alarms: command reader failed (%s); reconnecting", exc)
            finally:
                with contextlib.suppress(Exception):
                    await listen.close()
            await asyncio.sleep(_RECONNECT.delay(attempt))
            attempt += 1

    async def _apply_pending(self, conn: Conn) -> None:
        for cmd in await store.pending_commands(conn):
            if cmd.id in self._handled:
                continue  # settled in a commit the database does not have yet
            commit = self.manager.command(cmd, self.clock.now_us())
            self._handled[cmd.id] = commit.seq
            if len(self._handled) > _HANDLED_KEPT:  # the oldest: settled in the database long ago
                del self._handled[next(iter(self._handled))]
            self._keep(commit)

    async def _timer_loop(self) -> None:
        while True:
            await self.clock.sleep(1.0)
            commit = self.manager.tick(self.clock.now_us())
            if commit is not None:
                self._keep(commit)
