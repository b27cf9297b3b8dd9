"""RuleSink: feeds the rule engine from the hub and from a timer, and reports condition edges.

Invariant: reporting costs O(1) log records per batch, whatever the number of edges. One
device failure can turn thousands of tags BAD in one batch; a log line per edge on the event
loop stalled every other source (issue 9). Each batch with edges gives one summary record
(counts per kind, the first ``SHOWN_EDGES`` edges in full); the other edges go out only at DEBUG.

Safety functions that can no longer act: after each evaluation the engine's ``sif_state`` of the
interlocks whose inputs' ability to vote changed (none: O(1)) is compared with what was reported, and
``on_sif`` gets the interlocks whose state changed, with their reasons. Nothing is reported
before the start: each interlock's first known state is (an able one only returns an alarm that a
previous run left raised), and an interlock not known yet (inputs never reported) waits.

Suppression by design: after the edges and SIF changes, each unit declaring ``suppress_when``
(``UnitConditions``) has its condition worked out on its tag's current value in the engine, and
``on_suppression`` gets the units whose condition changed since reported and stayed so for the
unit's ``on_delay_s`` (to suppressed) or ``off_delay_s`` (back), on the engine's clock; each
unit's first known state is reported at once, once. A tag whose value is BAD, NaN or never
received, infinite, or out of its range beyond the OUT_OF_RANGE margin (a failed transmitter
reads GOOD -5 on [0, 100]) changes nothing and restarts a running delay: the unit keeps the state last reported
(a transmitter failing during a shutdown must not re-annunciate the whole unit, nor one failing
in operation hide it). Its timeliness is not judged here: a
stale tag keeps its last value (its STALE alarm says so, and is never suppressed).

Metrics: evaluation time per batch and per tick (a histogram, measured here around the
engine's calls), and edges, active conditions and refused samples (``RuleMetrics``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from alarms.changes import SifChange, SuppressionChange
from core.atomic import write_json_atomic
from core.batch import ReadingBatch
from core.clock import US_PER_S, Clock
from core.conditions import ConditionEdges, RuleKind
from core.plant import DataQuality, Plant, Tag, resolve_key
from rules import EngineSnapshot, RuleEngine
from rules.interlock import SIF_DISABLED, SIF_UNKNOWN

__all__ = ["RuleMetrics", "RuleSink", "UnitConditions"]

log = logging.getLogger(__name__)

SHOWN_EDGES = 3  # edges written in full in a batch's summary record; the rest only at DEBUG
# Rule evaluation time: 100k tags x 4 limits is ~8 ms at the 50 M evals/s target, a 1k-tag
# scan a few tens of µs; the top buckets catch a stalled engine.
EVALUATION_BUCKETS_S = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip


class RuleSink:
    """Edges are summarised in the log, counted, and handed to ``on_edges`` (the alarm
    service) in the order the engine emitted them, then the SIF changes to ``on_sif``; the live
    view shows the active conditions."""

    def __init__(
        self,
        engine: RuleEngine,
        clock: Clock,
        tick_s: float = 1.0,
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        """``registry``: the process's metrics registry (None: measured but not exported)."""
        self.engine = engine
        self.clock = clock
        self.tick_s = tick_s
        self.edges_total = 0
        self.activations_total = 0
        self.on_edges: Callable[[ConditionEdges], None] | None = None
        self.on_sif: Callable[[tuple[SifChange, ...]], None] | None = None
        self._sif = np.full(len(engine.interlocks), SIF_UNKNOWN, np.int8)  # as reported
        self.suppression: UnitConditions | None = None
        self.on_suppression: Callable[[tuple[SuppressionChange, ...]], None] | None = None
        # Wall time (perf_counter), not the injected clock: this measures the CPU the engine
        # costs the event loop, which a FakeClock would report as zero.
        self.evaluation_seconds = Histogram(
            "hazardwatch_rule_evaluation_seconds",
            "Time the rule engine took per evaluation: a hub batch, or the timer tick.",
            ["trigger"],
            buckets=EVALUATION_BUCKETS_S,
            registry=registry,
        )
        self._batch_seconds = self.evaluation_seconds.labels(trigger="batch")
        self._tick_seconds = self.evaluation_seconds.labels(trigger="tick")
        if registry is not None:
            registry.register(RuleMetrics(self))

    async def write(self, batch: ReadingBatch) -> None:
        started = time.perf_counter()
        edges = self.engine.evaluate(batch, self.clock.now_us())
        self._batch_seconds.observe(time.perf_counter() - started)
        self._emit(edges)

    async def run_timer(self) -> None:
        while True:
            await self.clock.sleep(self.tick_s)
            try:
                started = time.perf_counter()
                edges = self.engine.tick(self.clock.now_us())
                self._tick_seconds.observe(time.perf_counter() - started)
                self._emit(edges)
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

    def _emit(self, edges: ConditionEdges) -> None:
        """Edges, SIF changes and units' suppression, in the order that announces least without
        hiding what came first: a unit shut down in this batch is suppressed after the batch's
        edges timestamped before the sample that shut it down (a catch-up batch after a link
        outage holds alarms of the unit still running: they are announced) and before the others
        (the shutdown's own alarms are tracked, not announced); one back in operation is
        unsuppressed after all of them (alarms that cleared with the start-up are not announced
        again first)."""
        self._log(edges)
        hide: tuple[SuppressionChange, ...] = ()
        show: tuple[SuppressionChange, ...] = ()
        if self.on_suppression is not None and self.suppression is not None:
            changes = self.suppression.changes(self.engine.value, self.engine.valid, self.clock.now_us())
            hide = tuple(c for c in changes if c.suppressed)
            show = tuple(c for c in changes if not c.suppressed)
        if hide and self.suppression is not None:
            edges = self._hide_in_time(edges, hide, self.suppression)
        else:
            self._report_suppression(hide)
        if self.on_edges is not None and len(edges):
            self.on_edges(edges)
        if self.on_sif is not None:
            self._report_sif(self.on_sif)
        self._report_suppression(show)

    def _hide_in_time(
        self, edges: ConditionEdges, hide: tuple[SuppressionChange, ...], units: UnitConditions
    ) -> ConditionEdges:
        """Reports the edges before each hiding unit's deciding sample, then that unit's hide,
        in time order; returns the edges left (at or after the last one's sample)."""
        when: dict[int, list[SuppressionChange]] = {}
        for c in hide:
            when.setdefault(units.decided_at(c, self.engine.ts), []).append(c)
        for ts in sorted(when):
            if self.on_edges is not None and len(edges):
                early = edges.ts < ts
                if early.any():
                    self.on_edges(edges.select(early))
                    edges = edges.select(~early)
            self._report_suppression(tuple(when[ts]))
        return edges

    def _report_suppression(self, changes: tuple[SuppressionChange, ...]) -> None:
        if not changes or self.on_suppression is None:
            return
        self.on_suppression(changes)
        shown = [f"{c.unit} {'suppressed' if c.suppressed else 'unsuppressed'}" for c in changes]
        more = f" and {len(shown) - SHOWN_EDGES} more" if len(shown) > SHOWN_EDGES else ""
        log.warning("suppression by design: %s%s", ", ".join(shown[:SHOWN_EDGES]), more)

    def _report_sif(self, on_sif: Callable[[tuple[SifChange, ...]], None]) -> None:
        which, state = self.engine.sif_state()
        if not which.size:
            return
        moved = (state != SIF_UNKNOWN) & (state != self._sif[which])
        if not moved.any():
            return
        changed, state = which[moved], state[moved]
        self._sif[changed] = state
        disabled = state == SIF_DISABLED
        statuses = self.engine.interlock_status(changed)
        on_sif(
            tuple(
                SifChange(s.key, bool(d), s.can_vote, s.m, s.bypassed, s.failed, s.in_service)
                for s, d in zip(statuses, disabled.tolist(), strict=True)
            )
        )
        keys = [s.key for s, d in zip(statuses, disabled.tolist(), strict=True) if d]
        if keys:
            more = f" and {len(keys) - SHOWN_EDGES} more" if len(keys) > SHOWN_EDGES else ""
            log.warning("SIF disabled (can no longer act): %s%s", ", ".join(keys[:SHOWN_EDGES]), more)

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


_NOT_PENDING = np.iinfo(np.int64).min  # UnitConditions.since: no change waiting on its delay


class UnitConditions:
    """Each unit's suppression-by-design condition (core.plant.SuppressWhen), as columns over the
    units declaring one, evaluated on the engine's tag values (indexed like ``tag_keys``)."""

    _BELOW, _ABOVE, _EQUALS = 0, 1, 2

    def __init__(self, plant: Plant, tag_keys: tuple[str, ...]) -> None:
        index = {k: i for i, k in enumerate(tag_keys)}
        self.units: list[str] = []  # HAZARD_SOURCE.UNIT
        self.reasons: list[str] = []
        self.tag_keys: list[str] = []
        tags, ops, limits, on_s, off_s, lows, highs = [], [], [], [], [], [], []
        for ent in plant.enterprises:
            for hs in ent.hazard_sources:
                if not any(u.suppress_when for u in hs.units):
                    continue
                by_key = {t.key: t for t in hs.tags}
                by_code = {t.code: t.key for t in reversed(hs.tags)}  # plant_checks: one per code
                for unit in hs.units:
                    sw = unit.suppress_when
                    if sw is None:
                        continue
                    # a bare code: the hazard source's tag of that code (plant_checks: one)
                    key = resolve_key(ent.code, sw.tag) if "." in sw.tag else by_code.get(sw.tag, sw.tag)
                    tag = index.get(key)
                    if tag is None:  # plant_checks refuses it; a tag left out of the registry
                        log.error(
                            "unit %s.%s: suppress_when tag %s is not collected", hs.code, unit.code, key
                        )
                        continue
                    op, limit = next(
                        (o, v) for o, v in enumerate((sw.below, sw.above, sw.equals)) if v is not None
                    )
                    self.units.append(f"{hs.code}.{unit.code}")
                    self.reasons.append(sw.reason)
                    self.tag_keys.append(key)
                    tags.append(tag)
                    ops.append(op)
                    limits.append(limit)
                    on_s.append(sw.on_delay_s)
                    off_s.append(sw.off_delay_s)
                    low, high = _believable(by_key.get(key))
                    lows.append(low)
                    highs.append(high)
        self.tag = np.array(tags, np.int64)
        self.op = np.array(ops, np.int8)
        self.limit = np.array(limits, np.float64)
        self.on_us = np.round(np.array(on_s, np.float64) * US_PER_S).astype(np.int64)
        self.off_us = np.round(np.array(off_s, np.float64) * US_PER_S).astype(np.int64)
        # the readings believed: inside the range with the OUT_OF_RANGE margin (a transmitter failed
        # low reads -5 on [0, 100] with GOOD quality: it must not shut a running unit down)
        self.low = np.array(lows, np.float64)
        self.high = np.array(highs, np.float64)
        self._index = {u: i for i, u in enumerate(self.units)}
        self.reported = np.full(len(tags), -1, np.int8)  # -1: not reported yet, else 0/1
        self.since = np.full(len(tags), _NOT_PENDING, np.int64)  # when the pending change began

    def __len__(self) -> int:
        return len(self.units)

    def decided_at(self, change: SuppressionChange, ts: np.ndarray) -> int:
        """The time of the condition tag's sample that decided ``change`` (``ts``: the engine's
        per-tag sample times, indexed like ``tag_keys``)."""
        return int(ts[self.tag[self._index[change.unit]]])

    def changes(self, value: np.ndarray, valid: np.ndarray, now_us: int) -> tuple[SuppressionChange, ...]:
        """The units whose condition differs from the one last reported, for their delay by
        ``now_us`` (first known states at once); marked reported. A unit whose tag is not valid
        keeps its state, and its delay starts again; so does one whose value is not finite or is
        out of the tag's range (beyond the OUT_OF_RANGE margin: a failed transmitter)."""
        if not len(self.units):
            return ()
        v = value[self.tag]
        with np.errstate(invalid="ignore"):
            ok = valid[self.tag] & np.isfinite(v) & (v >= self.low) & (v <= self.high)
        on = np.where(
            self.op == self._BELOW,
            v < self.limit,
            np.where(self.op == self._ABOVE, v > self.limit, v == self.limit),
        )
        differs = ok & (on.astype(np.int8) != self.reported)
        self.since[~differs] = _NOT_PENDING
        self.since[differs & (self.since == _NOT_PENDING)] = now_us
        delay = np.where(on, self.on_us, self.off_us)
        moved = np.flatnonzero(differs & ((self.reported < 0) | (now_us - self.since >= delay)))
        if not moved.size:
            return ()
        self.since[moved] = _NOT_PENDING
        self.reported[moved] = on[moved]
        return tuple(
            SuppressionChange(self.units[i], bool(on[i]), self.reasons[i], self.tag_keys[i], float(v[i]))
            for i in moved.tolist()
        )


def _believable(tag: Tag | None) -> tuple[float, float]:
    """The values of ``tag`` a unit's condition believes: its range widened by the margin its
    OUT_OF_RANGE alarm allows (rules.compile), any finite value for a tag without a range."""
    if tag is None or tag.range is None:
        return -np.inf, np.inf
    lo, hi = tag.range
    pct = tag.data_quality.range_margin_pct if tag.data_quality else DataQuality().range_margin_pct
    margin = pct / 100 * (hi - lo)
    return lo - margin, hi + margin


class RuleMetrics(Collector):
    """Edges, active conditions and refused samples, read from the sink and engine at scrape time."""

    def __init__(self, sink: RuleSink) -> None:
        self.sink = sink

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "hazardwatch_rule_edges_total",
            "Condition edges emitted by the rule engine.",
            value=float(self.sink.edges_total),
        )
        yield GaugeMetricFamily(
            "hazardwatch_rule_active_conditions",
            "Conditions active now.",
            value=float(len(self.sink.engine.active())),
        )
        yield CounterMetricFamily(
            "hazardwatch_rule_rejected_ahead_total",
            "Samples the rule engine rejected as stamped too far ahead of arrival (device clock ahead).",
            value=float(self.sink.engine.rejected_ahead),
        )


def _head(edges: ConditionEdges, n: int) -> ConditionEdges:
    return ConditionEdges.of(
        edges.rule[:n], edges.active[:n], edges.ts[:n], edges.value[:n], edges.limit[:n], edges.severity[:n]
    )
