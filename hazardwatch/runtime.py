"""Runtime: wires a plant config into running collectors, hub, historian and live view.

Start-up order: lock the data directory and spool (one process each), migrations and
registry sync (ids for every tag), the spooling historian writer, the hub with its sinks,
crash-gap markers if the heartbeat says the previous run died, the heartbeat, one
CollectorRunner per device, then /metrics. Shutdown reverses it and flushes: runners stop,
the hub drains its queues into the sinks, the writer closes (whatever the database could
not take stays in the disk spool for the next start), the heartbeat records the clean
stop, metrics stop, the locks go last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.registry import CollectorRegistry

from alarms.delivery_setup import DeliverySetup
from alarms.dispatcher import Dispatcher
from alarms.journal import RuleRow
from alarms.model import Catalog
from alarms.rationale import RationaleDefaults
from alarms.service import AlarmService
from collector.base import CollectorRunner, RunnerStats, Source, SourceHealth, comm_failure_batch
from collector.hub import Hub
from collector.metrics import HubMetrics, SourceMetrics
from collector.opcua.workers import OpcUaWorkerPool
from core.backoff import Backoff
from core.batch import ReadingBatch
from core.clock import Clock, SystemClock, to_datetime
from core.errors import DatabaseUnavailable
from core.live import LiveSnapshot
from core.plant import ModbusDevice, Plant
from core.registry import TagRegistry
from hazardwatch.compile_all import Compiled, compile_plant
from hazardwatch.metrics_server import LogMetrics, MetricsServer
from hazardwatch.rule_sink import RuleSink, UnitConditions
from hazardwatch.run_summary import RunSummary
from rules import RuleEngine
from storage.db import connect
from storage.dirlock import DirectoryLock
from storage.engine_beat import (
    CollectionGap,
    CollectorStatus,
    HistorianStatus,
    StatusSnapshot,
    engine_beat_loop,
)
from storage.heartbeat import Beat, Heartbeat
from storage.migrate import upgrade
from storage.registry_sync import active_tag_ids, sync_registry
from storage.retention import retention_loop
from storage.spool import Spool
from storage.spooling import SpoolingWriter
from storage.tag_cache import TagIdCache
from storage.writer import BatchWriter

__all__ = ["RuleSink", "RunSummary", "Runtime", "RuntimeOptions"]

log = logging.getLogger(__name__)

# Registry sync after a start with the database down: 1 s doubling to 60 s, +-25 % so that
# many edges started during one outage do not all reconnect in step when it ends.
SYNC_RETRY = Backoff(1.0, 60.0, jitter=0.25)


@dataclass(frozen=True)
class RuntimeOptions:
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = 9108  # None: no metrics endpoint; 0: any free port
    # Relative paths below resolve against settings.data_dir, like every local file.
    pki_dir: str = "pki"
    historian_queue_batches: int = 10_000
    rule_state_file: str | None = "rule-state.json"  # None: rule state is not kept across restarts
    shutdown_flush_s: float = 10.0
    heartbeat_s: float = 1.0  # crash detection: see storage/heartbeat.py
    engine_beat_s: float = 5.0  # engine_heartbeat and the collector/historian status rows


@dataclass(frozen=True)
class _SourceInfo:
    """What a source's collector_status row takes from the config (computed once at start)."""

    protocol: str
    enterprise: str | None  # None: its tags belong to several enterprises
    tags: int


def _source_info(plant: Plant, registry: TagRegistry, sources: tuple[Source, ...]) -> dict[str, _SourceInfo]:
    # A source is named after its device, an RTU bus after its serial port (collector.factory).
    protocol = {d.id: d.protocol.lower() for d in plant.devices()}
    protocol |= {
        d.serial_port: "modbus" for d in plant.devices() if isinstance(d, ModbusDevice) and d.serial_port
    }
    out = {}
    for s in sources:
        ents = np.unique(registry.enterprise[s.tags])
        one = registry.enterprises[int(ents[0])] if len(ents) == 1 else None
        out[s.name] = _SourceInfo(protocol.get(s.name, type(s).__name__.lower()), one, len(s.tags))
    return out


def _iso(ts_us: int) -> str:
    return to_datetime(ts_us).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _cancel_all(tasks: list[asyncio.Task[None]], rounds: int = 3, wait_s: float = 5.0) -> bool:
    """Cancel and wait, bounded: a task that swallowed a cancel is cancelled again, and
    shutdown goes on (with a log line) rather than hanging on it. True when all stopped."""
    pending = {t for t in tasks if not t.done()}
    for _ in range(rounds):
        if not pending:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=wait_s)
    for task in pending:
        log.error("shutdown: task %s did not stop", task.get_name())
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("task %s had failed: %s", task.get_name(), task.exception())
    return not pending


class Runtime:
    def __init__(
        self,
        plant: Plant,
        dsn: str,
        *,
        clock: Clock | None = None,
        options: RuntimeOptions | None = None,
        metrics_registry: CollectorRegistry | None = None,
        compiled: Compiled | None = None,
        rationale: RationaleDefaults | None = None,
        delivery: DeliverySetup | None = None,
    ) -> None:
        """``metrics_registry``: where the components register their metrics, served on
        /metrics (and by the API's ASGI app, ``metrics_server.metrics_app``); one per Runtime
        unless given, never the library's global one, so several runtimes in one process
        (tests) do not clash. ``compiled``: ``plant`` compiled already, with ``clock`` and this
        runtime's PKI directory (``hazardwatch run`` checks the config by compiling it: a
        province's compile is seconds), else ``start`` compiles it. ``rationale``: the plant's
        rationalization defaults (alarms.rationale.defaults_for), shown with every alarm.
        ``delivery``: routes, channels and rosters (alarms.delivery_setup) when ``compiled`` does
        not carry them; with either, the runtime runs the dispatcher."""
        self.plant = plant
        self.dsn = dsn
        self.clock = clock or SystemClock()
        self._compiled = compiled
        self.options = options or RuntimeOptions()
        self.hub = Hub(self.clock)
        self.registry = TagRegistry.from_plant(plant)
        self.live = LiveSnapshot(len(self.registry))
        self.rules: RuleSink | None = None
        self.alarms: AlarmService | None = None
        self.dispatcher: Dispatcher | None = None
        self.rationale = rationale
        self._delivery = delivery
        self._synced = asyncio.Event()  # migrations and registry sync done (alarm tables exist)
        self.runners: list[CollectorRunner] = []
        self.opcua_pool: OpcUaWorkerPool | None = None  # settings.collect.opcua_workers >= 1
        self.writer: SpoolingWriter | None = None
        self.metrics_registry = metrics_registry if metrics_registry is not None else CollectorRegistry()
        self.metrics_server: MetricsServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._extra_sinks: list[tuple[str, Callable[[ReadingBatch], Any]]] = []
        settings = plant.settings
        self.data_dir = Path(settings.data_dir)
        self.pki_dir = settings.local_path(self.options.pki_dir)
        self.rule_state_file = (
            settings.local_path(self.options.rule_state_file) if self.options.rule_state_file else None
        )
        # One process per data directory and per spool, for the whole process lifetime.
        self._locks = [DirectoryLock(self.data_dir, "data directory")]
        if settings.spool_path.resolve() != self.data_dir.resolve():
            self._locks.append(DirectoryLock(settings.spool_path, "spool directory"))
        self.heartbeat = Heartbeat(self.data_dir, self.options.heartbeat_s)
        # Beside the spool: lets a start during an outage collect (and spool) instead of nothing.
        self.tag_ids = TagIdCache(settings.spool_path)
        self._beating = False
        self._beat_failing = False
        self._db_failed_at: float | None = None  # monotonic: this process's first failed attempt
        self.published_rows = 0  # everything handed to the hub: readings and markers
        self.gap_markers = 0  # "not collected" markers for a crash of the previous run
        self.gap: CollectionGap | None = None  # that crash's gap, for collection_gap
        self._sources: dict[str, _SourceInfo] = {}  # every configured source, for status()

    def add_sink(self, name: str, write: Callable[[ReadingBatch], Any]) -> None:
        """Another consumer of every batch (rule engine, API); call before start()."""
        self._extra_sinks.append((name, write))

    async def _sync(self) -> dict[str, int]:
        conn = await connect(self.dsn)
        try:
            applied = await upgrade(conn)
            if applied:
                log.info("applied %d migration(s)", len(applied))
            report = await sync_registry(conn, self.plant, now_us=self.clock.now_us())
            log.info("registry: %s", report.summary())
            ids = await active_tag_ids(conn)
        finally:
            await conn.close()
        self.tag_ids.save(ids)
        return ids

    async def prepare_database(self) -> TagRegistry:
        """Migrate and sync; with the database down, start from the cached ids and sync later."""
        tried_at = self.clock.monotonic()
        try:
            ids = await self._sync()
        except DatabaseUnavailable as exc:
            self._db_failed_at = tried_at
            cached = self.tag_ids.load(self.registry.keys)
            if cached is None:
                raise
            log.warning(
                "database unreachable at start (%s): collecting with the tag ids cached in %s; "
                "readings are spooled until it returns",
                exc,
                self.tag_ids.path,
            )
            self._tasks.append(asyncio.create_task(self._sync_later(), name="registry-sync"))
            ids = cached
        else:
            self._synced.set()
        return self.registry.with_db_ids(ids)

    async def _sync_later(self) -> None:
        attempt = 0
        while True:
            await self.clock.sleep(SYNC_RETRY.delay(attempt))
            try:
                await self._sync()
            except DatabaseUnavailable:
                attempt += 1
                continue
            log.warning("database reachable again: migrations and registry sync done")
            self._synced.set()
            return

    async def start(self) -> None:
        """Start everything (see the module docstring); if any step fails, what already runs
        is stopped again and the directory locks released before the error propagates."""
        try:
            await self._start()
        except BaseException:
            with contextlib.suppress(Exception):
                await self.stop()
            raise

    async def _start(self) -> None:
        for lock in self._locks:  # first: nothing may touch the spool or the heartbeat before
            lock.acquire()
        previous = self.heartbeat.previous()  # read before this run's first beat replaces it
        # Everything the config compiles into, before the database is touched: the same call
        # as `hazardwatch check`, so a config check accepts cannot fail here (issue 9).
        compiled, self._compiled = self._compiled, None  # single use: sources keep state
        if compiled is None:
            compiled = compile_plant(self.plant, self.clock, str(self.pki_dir))
        elif self.rationale is None:
            self.rationale = compiled.rationale
        self.registry = await self.prepare_database()
        s = self.plant.settings.storage
        spool = Spool(
            self.plant.settings.spool_path, max_bytes=s.spool_max_bytes, segment_bytes=s.spool_segment_bytes
        )
        db_ids = self.registry.db_id
        self.writer = SpoolingWriter(
            lambda: BatchWriter.connect(self.dsn, db_ids),
            db_ids,
            spool,
            clock=self.clock,
            down_since=self._db_failed_at,
            metrics=self.metrics_registry,
        )
        await self.writer.start()
        # Retention and partitions ahead of time (the writer also creates a missing day on demand).
        self._tasks.append(
            asyncio.create_task(retention_loop(lambda: connect(self.dsn), s, self.clock), name="retention")
        )
        self.hub.add_sink("historian", self.writer.write, max_batches=self.options.historian_queue_batches)
        self.hub.add_sink("live", self.live.write)
        self.rules = RuleSink(compiled.engine, self.clock, registry=self.metrics_registry)
        if self.rule_state_file and self.rules.load(self.rule_state_file):
            log.info("rule state restored from %s", self.rule_state_file)
        await self._start_alarms(compiled.engine)
        setup = compiled.delivery or self._delivery
        if setup is not None:
            self._start_dispatcher(setup)
        self.hub.add_sink("rules", self.rules.write)
        self._tasks.append(asyncio.create_task(self.rules.run_timer(), name="rules-timer"))
        for name, write in self._extra_sinks:
            self.hub.add_sink(name, write)
        await self.hub.start()
        if previous is not None and not previous.clean:
            await self._mark_gap(previous)
        self._beat_now()
        self._beating = True
        self._tasks.append(asyncio.create_task(self._beat(), name="heartbeat"))
        # For the API's /readyz (someone applies commands and raises alarms) and Grafana's
        # data-quality board (status()).
        self._sources = _source_info(self.plant, self.registry, compiled.sources)
        self._tasks.append(
            asyncio.create_task(
                engine_beat_loop(
                    self.dsn,
                    self.plant.name,
                    self.clock,
                    self.options.engine_beat_s,
                    status=self.status,
                    written=self._status_written,
                ),
                name="engine-heartbeat",
            )
        )
        self.opcua_pool, sources = await OpcUaWorkerPool.start_for(
            compiled.sources,
            self.plant.settings.collect.opcua_workers,
            self._publish,
            clock=self.clock,
            metrics=self.metrics_registry,
        )
        self.runners += self.opcua_pool.runners if self.opcua_pool is not None else []
        for source in sources:
            runner = CollectorRunner(source, self._publish, clock=self.clock)
            self.runners.append(runner)
            self._tasks.append(asyncio.create_task(runner.run(), name=f"collector-{source.name}"))
        for collector in (SourceMetrics(self.runners), HubMetrics(self.hub), LogMetrics()):
            self.metrics_registry.register(collector)
        if self.options.metrics_port is not None:
            self.metrics_server = MetricsServer(
                self.metrics_registry, self.options.metrics_host, self.options.metrics_port
            )
            await self.metrics_server.start()
        log.info("collecting %d tags from %d sources", len(self.registry), len(self.runners))

    async def _start_alarms(self, engine: RuleEngine) -> None:
        """The alarm service, its state loaded and the rule engine's active conditions made to
        agree with it (a crash since the rule state file was saved); with the database down,
        loaded once it returns (the engine then keeps the file's conditions)."""
        settings = self.plant.settings
        self.alarms = AlarmService(
            Catalog(self.plant, engine.rules, self.rationale),
            settings.alarms,
            settings.local_path(settings.alarms.log_dir),
            self.dsn,
            self.clock,
            registry=self.metrics_registry,
        )
        assert self.rules is not None
        self.rules.on_edges = self.alarms.edges
        self.rules.on_sif = self.alarms.sif  # an interlock that can no longer act (0ooN)
        self.rules.suppression = UnitConditions(self.plant, engine.rules.tag_keys)  # suppress_when
        self.rules.on_suppression = self.alarms.suppression

        def align(rules: dict[str, RuleRow]) -> None:
            changed = engine.align_conditions({k: (r.active, r.since_us) for k, r in rules.items()})
            if changed:
                log.warning(
                    "rule engine: %d conditions set as the alarm store has them (a crash since the last clean stop)",
                    changed,
                )

        if self._synced.is_set():
            try:
                align(await self.alarms.recover())
            except DatabaseUnavailable as exc:  # it went away again since the sync
                log.warning("alarm state not loaded (%s): loaded once the database returns", exc)
            else:
                self.alarms.start()
                return
        task = asyncio.create_task(
            self.alarms.recover_when_reachable(self._synced, align), name="alarms-recover"
        )
        self._tasks.append(task)

    def _start_dispatcher(self, setup: DeliverySetup) -> None:
        """The dispatcher (alarms.dispatcher): outbox rows to people, once the alarm tables exist."""
        assert self.alarms is not None
        self.dispatcher = Dispatcher(
            self.dsn, setup.tree, setup.channels, setup.rosters, self.plant, setup.gas,
            self.alarms.catalog.by_key, self.clock, registry=self.metrics_registry,
        )  # fmt: skip
        dispatcher = self.dispatcher

        async def run() -> None:
            await self._synced.wait()
            await dispatcher.run()

        self._tasks.append(asyncio.create_task(run(), name="dispatcher"))

    async def stop(self) -> None:
        try:
            clean = await self._stop_collecting()
            if self._beating:  # only a run that got to collecting can vouch for a clean stop
                if clean:
                    self._beat_now(clean=True)
                else:
                    log.warning("stop was not clean (see above): the next start marks the gap in history")
                self._beating = False
        finally:
            if self.metrics_server is not None:
                await self.metrics_server.stop()
            for lock in self._locks:
                lock.release()

    async def _stop_collecting(self) -> bool:
        """Stop collectors, drain and close the historian; True when nothing was left behind
        (every task stopped, every queued batch reached the historian or its spool)."""
        # OPC UA workers first: their last batches reach the hub before it drains.
        clean = self.opcua_pool is None or await self.opcua_pool.stop()
        clean = await _cancel_all(self._tasks) and clean
        for runner in self.runners:
            with contextlib.suppress(Exception):
                await runner.source.close()
        self._tasks.clear()
        if not await self.hub.drain(self.options.shutdown_flush_s):
            log.warning("shutdown: sinks did not drain within %.0f s", self.options.shutdown_flush_s)
            clean = False
        await self.hub.stop()
        if self.rules is not None and self.rule_state_file:
            try:
                self.rules.save(self.rule_state_file)
            except OSError as exc:  # a full disk must not keep the historian from closing
                log.error("rule state %s not saved: %s", self.rule_state_file, exc)
        if self.alarms is not None:
            clean = await self.alarms.close(self.options.shutdown_flush_s) and clean
        if self.dispatcher is not None:  # what it had not sent waits in the outbox for the next start
            await self.dispatcher.close()
        if self.writer is not None:
            # Let the writer finish in the database while it is up; whatever it cannot write
            # in time goes to the spool on close (drained at the next start).
            if self.writer.connected:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.options.shutdown_flush_s):
                        await self.writer.wait_drained()
            await self.writer.close()
        return clean

    def _publish(self, batch: ReadingBatch) -> None:
        self.published_rows += len(batch)
        self.hub.publish(batch)

    async def _beat(self) -> None:
        while True:
            await self.clock.sleep(self.heartbeat.interval_s)
            self._beat_now()

    def _beat_now(self, *, clean: bool = False) -> None:
        try:
            self.heartbeat.beat(self.clock.now_us(), clean=clean)
        except OSError as exc:
            # A full or failing disk must not stop collection (or a clean stop); the next
            # start may then miss or misdate a crash, so say so, once per episode.
            if not self._beat_failing:
                log.error(
                    "heartbeat %s cannot be written (%s): crash detection is impaired",
                    self.heartbeat.path,
                    exc,
                )
            self._beat_failing = True
        else:
            self._beat_failing = False

    async def _mark_gap(self, previous: Beat) -> None:
        """The previous run died without a clean stop: one BAD|COMM_FAILURE marker per tag
        where its collection ended, through the hub (historian, live view, rules) like a
        collector's own link-loss marker, and waited for until it is stored or spooled."""
        now_us = self.clock.now_us()
        at_us = previous.gap_start_us(now_us)
        log.warning(
            "the previous run (pid %d) did not stop cleanly: last heartbeat %s, collection ended by %s; "
            "marking all %d tags BAD|COMM_FAILURE at %s so the gap shows in history",
            previous.pid,
            _iso(previous.alive_us),
            _iso(at_us),
            len(self.registry),
            _iso(at_us),
        )
        markers = comm_failure_batch(np.arange(len(self.registry), dtype=np.int32), at_us)
        self.gap_markers += len(markers)
        self.gap = CollectionGap(to_datetime(at_us), to_datetime(now_us), len(markers))
        self._publish(markers)
        # Stored (or spooled) before this run's first beat, so a crash right now cannot
        # replace the evidence of the previous one.
        await self.hub.drain(self.options.shutdown_flush_s)
        if self.writer is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.shutdown_flush_s):
                    await self.writer.flush()

    def status(self) -> StatusSnapshot:
        """Collector and historian health as the database keeps it (storage/engine_beat.py):
        every configured source, "starting" until its runner exists."""
        runners = {r.source.name: r for r in self.runners}
        rows = []
        for name, info in self._sources.items():
            runner = runners.get(name)
            stats = runner.stats if runner is not None else RunnerStats()
            health = runner.health() if runner is not None else SourceHealth()
            rows.append(
                CollectorStatus(
                    source=name,
                    enterprise=info.enterprise,
                    protocol=info.protocol,
                    state=stats.state,
                    up=runner is not None and runner.up_with(health),
                    devices_up=sum(health.devices.values()) if stats.state == "ok" else 0,  # as /metrics
                    devices_total=len(health.devices),
                    tags=info.tags,
                    readings=stats.readings,
                    errors=stats.errors,
                    reconnects=stats.reconnects,
                    restarts=stats.restarts,
                    last_ok=to_datetime(stats.last_ok_us) if stats.last_ok_us else None,
                    failed_since=to_datetime(stats.failed_since_us) if stats.state == "failed" else None,
                    last_error=stats.last_error,
                )
            )
        historian = None
        if self.writer is not None:
            m = self.writer.metrics()
            historian = HistorianStatus(
                db_up=bool(m["db_up"]),
                pending_rows=m["pending_rows"],
                pending_bytes=m["pending_bytes"],
                written_rows=m["written_rows"],
                drained_rows=m["drained_rows"],
                dropped_rows=m["dropped_rows"],
                quarantined_rows=m["quarantined_rows"],
                gap_markers=self.gap_markers,
            )
        return StatusSnapshot(rows, historian, self.gap)

    def _status_written(self, snapshot: StatusSnapshot) -> None:
        """A beat committed ``snapshot``: its crash gap is recorded and need not be sent again."""
        if snapshot.gap is not None and snapshot.gap is self.gap:
            self.gap = None

    def summary(self) -> RunSummary:
        """Where every row of this run went; see RunSummary."""
        m = self.writer.metrics() if self.writer is not None else {}
        readings = sum(r.stats.readings for r in self.runners)
        historian = self.hub.stats().get("historian")
        return RunSummary(
            readings=readings,
            comm_markers=self.published_rows - readings - self.gap_markers,
            gap_markers=self.gap_markers,
            to_historian=historian.written_rows if historian is not None else 0,
            written_rows=m.get("written_rows", 0),
            drained_rows=m.get("drained_rows", 0),
            spooled_at_start=m.get("spooled_rows_at_start", 0),
            pending_rows=m.get("pending_rows", 0),
            dropped_rows=m.get("dropped_rows", 0),
            rejected_rows=m.get("rejected_rows", 0),
            quarantined_rows=m.get("quarantined_rows", 0),
        )
