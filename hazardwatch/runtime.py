"""Runtime: wires a plant config into running collectors, hub, historian and live view.

Start-up order: migrations and registry sync (ids for every tag), the spooling historian
writer, the hub with its sinks, one CollectorRunner per device, then /metrics. Shutdown
reverses it and flushes: runners stop, the hub drains its queues into the sinks, the
writer closes (whatever the database could not take stays in the disk spool for the next
start), metrics stop last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.base import CollectorRunner
from collector.hub import Hub
from collector.live import LiveSnapshot
from collector.metrics import Metric, MetricsServer
from core.batch import ReadingBatch
from core.clock import Clock, SystemClock
from core.errors import DatabaseUnavailable
from core.plant import Plant
from core.registry import TagRegistry
from hazardwatch.compile_all import compile_plant
from hazardwatch.rule_sink import RuleSink
from storage.db import connect
from storage.migrate import upgrade
from storage.registry_sync import active_tag_ids, sync_registry
from storage.retention import retention_loop
from storage.spool import Spool
from storage.spooling import SpoolingWriter
from storage.writer import BatchWriter

__all__ = ["RuleSink", "Runtime", "RuntimeOptions"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeOptions:
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = 9108  # None: no metrics endpoint; 0: any free port
    pki_dir: str = "var/pki"
    historian_queue_batches: int = 10_000
    rule_state_file: str | None = "var/rule-state.json"  # None: rule state is not kept across restarts
    shutdown_flush_s: float = 10.0


async def _cancel_all(tasks: list[asyncio.Task[None]], rounds: int = 3, wait_s: float = 5.0) -> None:
    """Cancel and wait, bounded: a task that swallowed a cancel is cancelled again, and
    shutdown goes on (with a log line) rather than hanging on it."""
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


class Runtime:
    def __init__(
        self, plant: Plant, dsn: str, *, clock: Clock | None = None, options: RuntimeOptions | None = None
    ) -> None:
        self.plant = plant
        self.dsn = dsn
        self.clock = clock or SystemClock()
        self.options = options or RuntimeOptions()
        self.hub = Hub(self.clock)
        self.registry = TagRegistry.from_plant(plant)
        self.live = LiveSnapshot(len(self.registry))
        self.rules: RuleSink | None = None
        self.runners: list[CollectorRunner] = []
        self.writer: SpoolingWriter | None = None
        self.metrics_server: MetricsServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._extra_sinks: list[tuple[str, Callable[[ReadingBatch], Any]]] = []

    def add_sink(self, name: str, write: Callable[[ReadingBatch], Any]) -> None:
        """Another consumer of every batch (rule engine, API); call before start()."""
        self._extra_sinks.append((name, write))

    @property
    def _ids_file(self) -> Path:
        return Path(self.plant.settings.storage.spool_dir) / "tag-ids.json"

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
        # Kept beside the spool: the ids let a later start collect (and spool) while the
        # database is down, instead of collecting nothing.
        self._ids_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._ids_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(ids, ensure_ascii=False, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self._ids_file)
        return ids

    def _cached_ids(self) -> dict[str, int] | None:
        try:
            ids = json.loads(self._ids_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(ids, dict) or any(k not in ids for k in self.registry.keys):
            return None  # a tag added since: it has no id yet, so the cache cannot serve
        return {str(k): int(v) for k, v in ids.items()}

    async def prepare_database(self) -> TagRegistry:
        """Migrate and sync; with the database down, start from the cached ids and sync later."""
        try:
            ids = await self._sync()
        except DatabaseUnavailable as exc:
            cached = self._cached_ids()
            if cached is None:
                raise
            log.warning(
                "database unreachable at start (%s): collecting with the tag ids cached in %s; "
                "readings are spooled until it returns",
                exc,
                self._ids_file,
            )
            self._tasks.append(asyncio.create_task(self._sync_later(), name="registry-sync"))
            ids = cached
        return self.registry.with_db_ids(ids)

    async def _sync_later(self) -> None:
        delay = 1.0
        while True:
            await self.clock.sleep(delay)
            try:
                await self._sync()
            except DatabaseUnavailable:
                delay = min(60.0, delay * 2)
                continue
            log.warning("database reachable again: migrations and registry sync done")
            return

    async def start(self) -> None:
        # Everything the config compiles into, before the database is touched: the same call
        # as `hazardwatch check`, so a config check accepts cannot fail here (issue 9).
        compiled = compile_plant(self.plant, self.clock, self.options.pki_dir)
        self.registry = await self.prepare_database()
        s = self.plant.settings.storage
        spool = Spool(s.spool_dir, max_bytes=s.spool_max_bytes, segment_bytes=s.spool_segment_bytes)
        db_ids = self.registry.db_id
        self.writer = SpoolingWriter(
            lambda: BatchWriter.connect(self.dsn, db_ids), db_ids, spool, clock=self.clock
        )
        await self.writer.start()
        # Retention and partitions ahead of time (the writer also creates a missing day on demand).
        self._tasks.append(
            asyncio.create_task(retention_loop(lambda: connect(self.dsn), s, self.clock), name="retention")
        )
        self.hub.add_sink("historian", self.writer.write, max_batches=self.options.historian_queue_batches)
        self.hub.add_sink("live", self.live.write)
        self.rules = RuleSink(compiled.engine, self.clock)
        if self.options.rule_state_file and self.rules.load(Path(self.options.rule_state_file)):
            log.info("rule state restored from %s", self.options.rule_state_file)
        self.hub.add_sink("rules", self.rules.write)
        self._tasks.append(asyncio.create_task(self.rules.run_timer(), name="rules-timer"))
        for name, write in self._extra_sinks:
            self.hub.add_sink(name, write)
        await self.hub.start()
        for source in compiled.sources:
            runner = CollectorRunner(source, self.hub.publish, clock=self.clock)
            self.runners.append(runner)
            self._tasks.append(asyncio.create_task(runner.run(), name=f"collector-{source.name}"))
        if self.options.metrics_port is not None:
            self.metrics_server = MetricsServer(
                self.metrics, self.options.metrics_host, self.options.metrics_port
            )
            await self.metrics_server.start()
        log.info("collecting %d tags from %d sources", len(self.registry), len(self.runners))

    async def stop(self) -> None:
        await _cancel_all(self._tasks)
        for runner in self.runners:
            with contextlib.suppress(Exception):
                await runner.source.close()
        self._tasks.clear()
        if not await self.hub.drain(self.options.shutdown_flush_s):
            log.warning("shutdown: sinks did not drain within %.0f s", self.options.shutdown_flush_s)
        await self.hub.stop()
        if self.rules is not None and self.options.rule_state_file:
            self.rules.save(Path(self.options.rule_state_file))
        if self.writer is not None:
            # Let the writer finish in the database while it is up; whatever it cannot write
            # in time goes to the spool on close (drained at the next start).
            if self.writer.connected:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.options.shutdown_flush_s):
                        await self.writer.wait_drained()
            await self.writer.close()
        if self.metrics_server is not None:
            await self.metrics_server.stop()

    def metrics(self) -> Iterable[Metric]:
        runners = [(r.source.name, r.stats) for r in self.runners]
        yield (
            "hazardwatch_source_up",
            "1 when the source's last read succeeded.",
            "gauge",
            [({"source": n}, float(s.state == "ok")) for n, s in runners],
        )
        yield (
            "hazardwatch_source_readings_total",
            "Readings collected per source.",
            "counter",
            [({"source": n}, float(s.readings)) for n, s in runners],
        )
        yield (
            "hazardwatch_source_errors_total",
            "Failed reads or connects per source.",
            "counter",
            [({"source": n}, float(s.errors)) for n, s in runners],
        )
        yield (
            "hazardwatch_source_reconnects_total",
            "Reconnect attempts per source.",
            "counter",
            [({"source": n}, float(s.reconnects)) for n, s in runners],
        )
        sinks = self.hub.stats()
        yield (
            "hazardwatch_hub_queue_depth",
            "Batches queued per sink.",
            "gauge",
            [({"sink": n}, float(s.depth)) for n, s in sinks.items()],
        )
        yield (
            "hazardwatch_hub_lag_seconds",
            "Age of the oldest queued batch per sink.",
            "gauge",
            [({"sink": n}, s.lag_s) for n, s in sinks.items()],
        )
        yield (
            "hazardwatch_hub_dropped_batches_total",
            "Batches dropped (oldest first) per sink.",
            "counter",
            [({"sink": n}, float(s.dropped_batches)) for n, s in sinks.items()],
        )
        yield (
            "hazardwatch_hub_dropped_rows_total",
            "Readings dropped per sink.",
            "counter",
            [({"sink": n}, float(s.dropped_rows)) for n, s in sinks.items()],
        )
        if self.rules is not None:
            yield (
                "hazardwatch_rule_edges_total",
                "Condition edges emitted by the rule engine.",
                "counter",
                [({}, float(self.rules.edges_total))],
            )
            yield (
                "hazardwatch_rule_active_conditions",
                "Conditions active now.",
                "gauge",
                [({}, float(len(self.rules.engine.active())))],
            )
        if self.writer is not None:
            for key, value in self.writer.metrics().items():
                yield (
                    f"hazardwatch_historian_{key}",
                    f"Historian writer: {key.replace('_', ' ')}.",
                    "gauge",
                    [({}, float(value))],
                )
