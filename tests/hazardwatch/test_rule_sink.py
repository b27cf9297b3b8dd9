"""RuleSink reporting costs one log record per batch, and a 5,000-tag comm failure at the default
log level (real logging setup, real runtime, real Modbus) leaves every other source's cadence alone."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusSlaveContext

from core.batch import ReadingBatch
from core.clock import FakeClock
from core.plant import Plant
from core.quality import Quality
from core.registry import TagRegistry
from hazardwatch import logs
from hazardwatch.rule_sink import RuleSink
from hazardwatch.runtime import Runtime, RuntimeOptions
from rules import RuleEngine
from tests.support.servers import ModbusPlant, free_port

BIG = 5_000  # tags on the device that fails
SMALL_INTERVAL_S = 0.25


def generated_plant(big_port: int, small_port: int, data_dir: Path) -> Plant:
    """``BIG`` INT16 holding registers on device BIG (``big_port``) and three on SMALL, polled
    every ``SMALL_INTERVAL_S`` (``small_port``); each tag gets the default rules of its kind."""
    kinds = [("TEMPERATURE", "°C", [0, 200]), ("PRESSURE", "MPa", [0, 4]), ("FLOW", "m³/h", [0, 500])]
    tags: list[dict[str, Any]] = []
    equipment = []
    for i in range(BIG + 3):
        eq = f"E{i // 50:04d}"
        if i % 50 == 0:
            equipment.append({"code": eq, "name": eq})
        kind, unit, rng = kinds[i % 3]
        device, address = ("BIG", i) if i < BIG else ("SMALL", i - BIG)
        source = {
            "device": device,
            "table": "HOLDING",
            "address": address,
            "type": "INT16",
            "scale": {"raw": [0, 32000]},
        }
        tags.append({"code": f"T{i}", "name": f"T{i}", "equipment": eq, "kind": kind, "unit": unit, "range": rng,
                     "source": source, "key": f"G.{eq}.T{i}"})  # fmt: skip
    modbus = {"protocol": "MODBUS", "host": "127.0.0.1", "timeout_s": 0.5, "retries": 0}
    return Plant.model_validate(
        {
            "settings": {"data_dir": str(data_dir)},
            "enterprises": [
                {
                    "code": "G",
                    "name": "generated",
                    "county": "x",
                    "devices": [
                        {**modbus, "id": "BIG", "port": big_port, "poll_interval_s": 1.0},
                        {**modbus, "id": "SMALL", "port": small_port, "poll_interval_s": SMALL_INTERVAL_S},
                    ],
                    "hazard_sources": [
                        {
                            "code": "H",
                            "name": "h",
                            "kind": "STORAGE",
                            "grade": 1,
                            "units": [{"code": "U", "name": "u", "equipment": equipment}],
                            "tags": tags,
                        }
                    ],
                }
            ],
        }
    )


# --- one summary record per batch ----------------------------------------------------------


def test_a_batch_of_5000_edges_is_one_log_record(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    plant = generated_plant(1, 2, tmp_path)
    registry = TagRegistry.from_plant(plant)
    clock = FakeClock()
    sink = RuleSink(RuleEngine.from_plant(plant, registry), clock)
    tags = np.arange(BIG, dtype=np.int32)
    bad = ReadingBatch(
        tags,
        np.full(BIG, clock.now_us(), np.int64),
        np.full(BIG, np.nan),
        np.full(BIG, Quality.BAD_COMM_FAILURE, np.uint8),
    )
    with caplog.at_level(logging.INFO, logger="hazardwatch.rule_sink"):
        sink._log(sink.engine.evaluate(bad, clock.now_us()))
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith(
        f"conditions: {BIG} edges, {BIG} active (BAD_QUALITY {BIG}), 0 cleared (-)"
    )
    assert "; first 3: " in record.getMessage() and "G.E0000.T2:BAD_QUALITY ACTIVE" in record.getMessage()
    assert "G.E0000.T3:" not in record.getMessage()
    assert sink.edges_total == sink.activations_total == BIG

    caplog.clear()  # recovery: the per-edge lines exist, at DEBUG only
    good = ReadingBatch(tags, bad.ts + 1_000_000, np.full(BIG, 2.0), np.full(BIG, Quality.GOOD, np.uint8))
    with caplog.at_level(logging.DEBUG, logger="hazardwatch.rule_sink"):
        sink._log(sink.engine.evaluate(good, clock.now_us()))
    summary, *edges = caplog.records
    assert f"{BIG} edges, 0 active (-), {BIG} cleared (BAD_QUALITY {BIG})" in summary.getMessage()
    assert len(edges) == BIG and all(r.levelno == logging.DEBUG for r in edges)


def test_a_few_edges_are_all_logged_in_full(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    plant = generated_plant(1, 2, tmp_path)
    clock = FakeClock()
    sink = RuleSink(RuleEngine.from_plant(plant, TagRegistry.from_plant(plant)), clock)
    two = ReadingBatch.from_rows(
        [(t, clock.now_us(), float("nan"), Quality.BAD_COMM_FAILURE) for t in (7, 8)]
    )
    with caplog.at_level(logging.DEBUG, logger="hazardwatch.rule_sink"):
        sink._log(sink.engine.evaluate(two, clock.now_us()))
    [record] = caplog.records  # every edge is in the summary: no DEBUG repeat
    assert "2 edges, 2 active (BAD_QUALITY 2), 0 cleared (-); all: " in record.getMessage()
    assert "T7:BAD_QUALITY ACTIVE" in record.getMessage() and "T8:BAD_QUALITY ACTIVE" in record.getMessage()


def test_a_single_edge_is_logged_in_full(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    plant = generated_plant(1, 2, tmp_path)
    clock = FakeClock()
    sink = RuleSink(RuleEngine.from_plant(plant, TagRegistry.from_plant(plant)), clock)
    one = ReadingBatch.from_rows([(7, clock.now_us(), float("nan"), Quality.BAD_COMM_FAILURE)])
    with caplog.at_level(logging.INFO, logger="hazardwatch.rule_sink"):
        sink._log(sink.engine.evaluate(one, clock.now_us()))
    [record] = caplog.records
    assert (
        record.getMessage().startswith("condition ")
        and "G.E0000.T7:BAD_QUALITY ACTIVE" in record.getMessage()
    )


# --- the cadence of the other sources ----------------------------------------------------------


def _server(registers: int) -> ModbusPlant:
    unit = ModbusSlaveContext(
        di=ModbusSequentialDataBlock(1, [0] * 8),
        co=ModbusSequentialDataBlock(1, [0] * 8),
        hr=ModbusSequentialDataBlock(1, [16_000] * registers),  # mid-range: no limit alarms
        ir=ModbusSequentialDataBlock(1, [0] * 8),
    )
    return ModbusPlant(free_port(), ModbusServerContext(slaves={1: unit}, single=False))


@pytest.fixture
def real_logging() -> Iterator[io.StringIO]:
    """The logging setup of `hazardwatch run` at its default level, in the costliest format
    (rich, as on an operator's terminal)."""
    out = io.StringIO()
    logs.setup("INFO", "rich", stream=out)
    yield out
    logs.shutdown()


async def _until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


async def test_a_5000_tag_comm_failure_keeps_every_other_source_on_cadence(
    dsn: str, real_logging: io.StringIO, tmp_path: Path
) -> None:
    big, small = _server(BIG), _server(3)
    await big.start()
    await small.start()
    plant = generated_plant(big.port, small.port, tmp_path)
    runtime = Runtime(plant, dsn, options=RuntimeOptions(metrics_port=None, rule_state_file=None))
    small_idx = np.arange(BIG, BIG + 3, dtype=np.int32)  # dense indexes follow the plant's order
    arrivals: list[float] = []

    async def probe(batch: ReadingBatch) -> None:
        if np.isin(batch.tag, small_idx).any():
            arrivals.append(time.monotonic())

    runtime.add_sink("probe", probe)
    try:
        await runtime.start()
        assert runtime.rules is not None
        rules = runtime.rules
        big_runner = next(r for r in runtime.runners if r.source.name == "BIG")
        await _until(lambda: big_runner.stats.reads >= 2 and len(arrivals) >= 4)
        edges_before = rules.edges_total
        await big.stop()  # the device dies: its 5,000 tags go BAD|COMM_FAILURE at once
        await _until(lambda: rules.edges_total - edges_before >= BIG)
        failed_at = time.monotonic()
        await asyncio.sleep(2.0)  # keep watching the other source after the failure
        log_dropped = runtime.metrics_registry.get_sample_value("hazardwatch_log_records_dropped_total")
    finally:
        await runtime.stop()
        await small.stop()
        await big.stop()
    window = [t for t in arrivals if t <= failed_at + 2.0]
    gaps = np.diff(window)
    assert big_runner.stats.state == "failed"
    # per-edge logging on the loop stalled it 13 s; 2 s leaves room for a loaded 2-core machine
    assert gaps.max() <= 2.0, f"SMALL stalled for {gaps.max():.2f} s"
    assert log_dropped == 0  # nothing lost from the log
    assert f"{BIG} edges" in real_logging.getvalue()
