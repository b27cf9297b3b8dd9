"""RuleSink's metrics in a registry: evaluation time per batch and per tick, edges, active conditions
and samples refused as stamped ahead, each read back from the registry."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.registry import CollectorRegistry

from core.batch import ReadingBatch
from core.clock import FakeClock
from core.config import load_plant
from core.quality import Quality
from core.registry import TagRegistry
from hazardwatch.rule_sink import RuleSink
from rules import RuleEngine

PLANT = Path(__file__).resolve().parents[1] / "core" / "data" / "two_enterprises.yaml"


def sink(clock: FakeClock, registry: CollectorRegistry | None) -> RuleSink:
    plant = load_plant(PLANT)
    return RuleSink(RuleEngine.from_plant(plant, TagRegistry.from_plant(plant)), clock, registry=registry)


async def test_evaluation_time_edges_and_active_conditions() -> None:
    clock = FakeClock()
    registry = CollectorRegistry()
    rules = sink(clock, registry)
    n = len(rules.engine.value)
    tags = np.arange(n, dtype=np.int32)
    await rules.write(
        ReadingBatch(
            tags,
            np.full(n, clock.now_us()),
            np.full(n, np.nan),
            np.full(n, Quality.BAD_COMM_FAILURE, np.uint8),
        )
    )
    ahead = clock.now_us() + 3600 * 1_000_000  # an hour ahead: past max_clock_ahead_s (300 s)
    await rules.write(ReadingBatch.from_rows([(0, ahead, 1.0, 0xC0)]))
    timer = asyncio.create_task(rules.run_timer())
    for _ in range(3):  # FakeClock: each tick's sleep returns at once
        await asyncio.sleep(0)
    timer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await timer

    def value(name: str, labels: dict[str, str] | None = None) -> float | None:
        return registry.get_sample_value(name, labels or {})

    assert value("hazardwatch_rule_evaluation_seconds_count", {"trigger": "batch"}) == 2
    assert (
        value("hazardwatch_rule_evaluation_seconds_sum", {"trigger": "batch"}) > 0
    )  # wall time, not FakeClock
    assert value("hazardwatch_rule_evaluation_seconds_count", {"trigger": "tick"}) >= 1
    assert rules.edges_total > 0
    assert value("hazardwatch_rule_edges_total") == rules.edges_total
    assert value("hazardwatch_rule_active_conditions") == len(rules.engine.active()) > 0
    assert value("hazardwatch_rule_rejected_ahead_total") == 1


def test_two_sinks_in_one_process_do_not_clash_unless_they_share_a_registry() -> None:
    clock = FakeClock()
    for registry in (None, None, CollectorRegistry(), CollectorRegistry()):
        sink(clock, registry)
    shared = CollectorRegistry()
    sink(clock, shared)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        sink(clock, shared)  # one rule engine per process registry, as the runtime wires it
