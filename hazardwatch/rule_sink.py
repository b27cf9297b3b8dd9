"""RuleSink: feeds the rule engine from the hub and from a timer, and reports condition edges.

Invariant: reporting costs O(1) log records per batch, whatever the number of edges. One
device failure can turn thousands of tags BAD in one batch; a log line per edge on the event
loop stalled every other source (issue 9). Each batch with edges gives one summary record
(counts per kind, the first ``SHOWN_EDGES`` edges in full); the other edges go out only at DEBUG.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from core.atomic import write_json_atomic
from core.batch import ReadingBatch
from core.clock import Clock
from core.conditions import ConditionEdges, RuleKind
from rules import EngineSnapshot, RuleEngine

__all__ = ["RuleSink"]

log = logging.getLogger(__name__)

SHOWN_EDGES = 3  # edges written in full in a batch's summary record; the rest only at DEBUG


class RuleSink:
    """Until the alarm lifecycle consumes them, edges are summarised in the log and counted;
    the live view shows the engine's active conditions."""

    def __init__(self, engine: RuleEngine, clock: Clock, tick_s: float = 1.0) -> None:
        self.engine = engine
        self.clock = clock
        self.tick_s = tick_s
        self.edges_total = 0
        self.activations_total = 0

    async def write(self, batch: ReadingBatch) -> None:
        self._log(self.engine.evaluate(batch, self.clock.now_us()))

    async def run_timer(self) -> None:
        while True:
            await self.clock.sleep(self.tick_s)
            try:
                self._log(self.engine.tick(self.clock.now_us()))
            except Exception:  # a failing tick must not stop delays and stale checks for good
                log.exception("rule engine tick failed")

    def save(self, path: Path) -> None:
        """Persist delays, latches and active conditions so a restart resumes them."""
        write_json_atomic(path, self.engine.snapshot().to_dict())  # a crash leaves the old state

    def load(self, path: Path) -> bool:
        if not path.exists():
            return False
        try:
            self.engine.restore(EngineSnapshot.from_dict(json.loads(path.read_text(encoding="utf-8"))))
        except (ValueError, KeyError, TypeError) as exc:
            log.error("rule state %s unreadable (%s); starting with fresh rule state", path, exc)
            return False
        return True

    def _log(self, edges: ConditionEdges) -> None:
        n = len(edges)
        if n == 0:
            return
        self.edges_total += n
        activations = int(edges.active.sum())
        self.activations_total += activations
        shown = self.engine.describe(_head(edges, SHOWN_EDGES))
        if n == 1:
            log.warning("condition %s", shown[0])
            return
        log.warning(
            "conditions: %d edges, %d active (%s), %d cleared (%s); %s: %s",
            n,
            activations,
            self._by_kind(edges, True),
            n - activations,
            self._by_kind(edges, False),
            "all" if n <= SHOWN_EDGES else f"first {SHOWN_EDGES}",
            "; ".join(shown),
        )
        if n > SHOWN_EDGES and log.isEnabledFor(logging.DEBUG):
            for line in self.engine.describe(edges):
                log.debug("condition %s", line)

    def _by_kind(self, edges: ConditionEdges, active: bool) -> str:
        kinds, counts = np.unique(
            self.engine.rules.kind[edges.rule[edges.active == active]], return_counts=True
        )
        return (
            ", ".join(f"{RuleKind(int(k)).name} {int(c)}" for k, c in zip(kinds, counts, strict=True)) or "-"
        )


def _head(edges: ConditionEdges, n: int) -> ConditionEdges:
    return ConditionEdges.of(
        edges.rule[:n], edges.active[:n], edges.ts[:n], edges.value[:n], edges.limit[:n], edges.severity[:n]
    )
