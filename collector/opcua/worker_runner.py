"""WorkerRunner: a source that runs in an OPC UA worker process, as the main process sees it.

It is a CollectorRunner to every reader (/metrics, the live view, the run summary): ``stats``,
``health()`` and ``up`` come from the worker's reports (collector/opcua/workers.py feeds
them). Counters add up over the worker's restarts; from a worker's death until its source
delivers again the state is ``failed``, with the death as the last error, and the recovery is
logged with the length of the gap, as CollectorRunner logs a device's.
"""

from __future__ import annotations

import logging
from typing import Any

from collector.base import CollectorRunner, RunnerStats, SourceHealth
from collector.opcua.source import OpcUaSource
from core.batch import ReadingBatch
from core.clock import Clock
from core.errors import SourceError

__all__ = ["WorkerRunner"]

log = logging.getLogger(__name__)


class _RemoteSource:
    """The parent's stand-in for a source that runs in a worker: name and tags, nothing to run."""

    def __init__(self, source: OpcUaSource) -> None:
        self.name = source.name
        self.tags = source.tags
        self.interval_s = source.interval_s
        self.streaming = source.streaming

    async def open(self) -> None:
        raise SourceError(f"{self.name} runs in an OPC UA worker process, not here")

    async def read(self) -> ReadingBatch:
        raise SourceError(f"{self.name} runs in an OPC UA worker process, not here")

    async def close(self) -> None:
        return None  # the worker closes its own client


class WorkerRunner(CollectorRunner):
    """A source run in worker ``worker``, seen from the parent: ``stats``, ``health()``, ``up``
    as CollectorRunner has them, from the worker's reports. Counters add up over worker
    restarts; between a worker's death and its first data again the state is ``failed``."""

    def __init__(self, source: OpcUaSource, worker: int, clock: Clock) -> None:
        super().__init__(_RemoteSource(source), lambda _: None, clock=clock)
        self.worker = worker
        self._base = RunnerStats()  # counters of the worker's earlier lives
        self._remote = RunnerStats()  # the current worker's report
        self._report = SourceHealth({source.name: True})
        self._dropped = (0, 0)  # rows, batches dropped in the worker's outbox (all lives)
        self._dropped_base = (0, 0)
        self._dead: tuple[int, int, str] | None = None  # (found dead, outage from, why)
        self._last_outage_s = 0.0
        self.worker_restarts = 0

    async def run(self) -> None:
        raise TypeError("a WorkerRunner is driven by its OpcUaWorkerPool; the source runs in a worker")

    def health(self) -> SourceHealth:
        return self._report

    @property
    def dead(self) -> bool:
        """Its worker died and it has not delivered since (its tags are marked)."""
        return self._dead is not None

    @property
    def dropped(self) -> tuple[int, int]:
        """Rows and batches of this source the worker's outbox dropped (all its lives)."""
        return self._dropped

    def reported(self, stats: dict[str, Any], health: SourceHealth, rows: int, batches: int) -> None:
        """A health report of the worker running this source."""
        self._remote = RunnerStats(**stats)
        self._report = health
        self._dropped = (self._dropped_base[0] + rows, self._dropped_base[1] + batches)
        if self._dead is not None and self._remote.state == "ok":
            _, outage_from, _ = self._dead
            self._last_outage_s = (self.clock.now_us() - outage_from) / 1e6
            log.warning(
                "source %s recovered in OPC UA worker %d: no data for %.1f s (worker restart)",
                self.source.name,
                self.worker,
                self._last_outage_s,
            )
            self._dead = None
        self._merge()

    def died(self, now_us: int, why: str) -> None:
        """The worker running this source is gone: counters kept, state failed until data again."""
        b, r = self._base, self._remote
        last_ok = max(b.last_ok_us, r.last_ok_us)
        self._base = RunnerStats(
            reads=b.reads + r.reads,
            readings=b.readings + r.readings,
            errors=b.errors + r.errors + 1,
            reconnects=b.reconnects + r.reconnects,
            restarts=b.restarts + r.restarts + 1,
            last_ok_us=last_ok,
            history=(b.history + r.history)[-32:],
        )
        self._remote = RunnerStats()
        self._dropped_base = self._dropped
        self.worker_restarts += 1
        if self._dead is None:
            self._dead = (now_us, last_ok or now_us, why)
        self._report = SourceHealth({self.source.name: False})
        self._merge()

    def _merge(self) -> None:
        b, r = self._base, self._remote
        s = RunnerStats(
            state=r.state,
            reads=b.reads + r.reads,
            readings=b.readings + r.readings,
            errors=b.errors + r.errors,
            reconnects=b.reconnects + r.reconnects,
            restarts=b.restarts + r.restarts,
            last_ok_us=max(b.last_ok_us, r.last_ok_us),
            last_error=r.last_error,
            failed_since_us=r.failed_since_us,
            outage_from_us=r.outage_from_us,
            last_outage_s=r.last_outage_s or self._last_outage_s,
            history=(b.history + r.history)[-32:],
        )
        if self._dead is not None:
            s.state, (s.failed_since_us, s.outage_from_us, s.last_error) = "failed", self._dead
            s.history = [*s.history, "failed"][-32:]
        self.stats = s
