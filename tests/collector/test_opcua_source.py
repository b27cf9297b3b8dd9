"""OpcUaSource against a real asyncua server: values, timestamps, status codes, restarts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import numpy as np
import pytest
from asyncua import ua

from collector.base import CollectorRunner
from collector.opcua.source import OpcUaPoint, OpcUaSource
from core.batch import ReadingBatch
from core.clock import from_datetime
from core.plant import OpcUaDevice
from core.quality import Quality
from tests.support.servers import NS_URI, UaPlant, free_port
from tests.support.waiting import eventually


def device(plant: UaPlant, **kw: object) -> OpcUaDevice:
    return OpcUaDevice.model_validate(
        {
            "protocol": "OPCUA",
            "id": "dcs",
            "endpoint": plant.endpoint,
            "namespace_uri": NS_URI,
            "interval_s": 0.1,
            **kw,
        }
    )


def points(n: int) -> list[OpcUaPoint]:
    return [OpcUaPoint(i, f"s=T{i}.PV", NS_URI) for i in range(n)]


class Collected:
    def __init__(self) -> None:
        self.batches: list[ReadingBatch] = []

    def __call__(self, batch: ReadingBatch) -> None:
        self.batches.append(batch)

    def rows(self, tag: int | None = None) -> list[tuple[int, int, float, int]]:
        return [r for b in self.batches for r in b.rows() if tag is None or r[0] == tag]

    def latest(self, tag: int) -> tuple[int, int, float, int] | None:
        rows = self.rows(tag)
        return rows[-1] if rows else None


async def run(source: OpcUaSource, out: Collected) -> tuple[CollectorRunner, asyncio.Task[None]]:
    runner = CollectorRunner(source, out, backoff_initial_s=0.1, backoff_max_s=0.5, read_timeout_s=2.0)
    return runner, asyncio.create_task(runner.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("mode", ["SUBSCRIPTION", "POLLING"])
async def test_values_source_timestamps_and_status_codes(ua_plant: UaPlant, mode: str) -> None:
    out = Collected()
    source = OpcUaSource(device(ua_plant, mode=mode), points(20))
    runner, task = await run(source, out)
    try:
        await eventually(lambda: {r[0] for r in out.rows()} == set(range(20)))
        assert out.latest(3) is not None and out.latest(3)[2] == 3.0  # type: ignore[index]
        stamp = datetime(2026, 11, 28, 8, 30, 15, 250000, tzinfo=UTC)
        await ua_plant.nodes[5].write_value(
            ua.DataValue(ua.Variant(42.5, ua.VariantType.Double), SourceTimestamp=stamp)
        )
        await eventually(lambda: (out.latest(5) or (0, 0, 0.0, 0))[2] == 42.5)
        assert out.latest(5) == (5, from_datetime(stamp), 42.5, Quality.GOOD)
        bad = ua.DataValue(
            ua.Variant(1.0, ua.VariantType.Double), StatusCode_=ua.StatusCode(ua.StatusCodes.BadSensorFailure)
        )
        await ua_plant.nodes[6].write_value(bad)
        await eventually(lambda: (out.latest(6) or (0, 0, 0.0, 0))[3] == Quality.BAD_SENSOR_FAILURE)
        assert runner.stats.state == "ok" and runner.stats.errors == 0
    finally:
        await stop(task)


async def test_unknown_nodes_and_namespaces_are_bad_config_not_a_crash_loop(ua_plant: UaPlant) -> None:
    out = Collected()
    pts = [
        *points(2),
        OpcUaPoint(10, "s=NO.SUCH.NODE", NS_URI),
        OpcUaPoint(11, "s=T1.PV", "urn:not:on:server"),
    ]
    source = OpcUaSource(device(ua_plant), pts)
    runner, task = await run(source, out)
    try:
        await eventually(
            lambda: out.latest(10) is not None and out.latest(11) is not None and out.latest(1) is not None
        )
        assert out.latest(10)[3] == Quality.BAD_CONFIG_ERROR  # type: ignore[index]
        assert out.latest(11)[3] == Quality.BAD_CONFIG_ERROR  # type: ignore[index]
        assert np.isnan(out.latest(11)[2])  # type: ignore[index]
        assert out.latest(1)[3] == Quality.GOOD  # type: ignore[index]
        reads = runner.stats.reads
        await eventually(lambda: runner.stats.reads >= reads + 5)  # the unknown nodes do not fail later reads
        assert runner.stats.errors == 0 and runner.stats.reconnects == 0
    finally:
        await stop(task)


async def test_server_restart_with_renumbered_namespace_resumes_and_marks_the_gap(ua_plant: UaPlant) -> None:
    out = Collected()
    source = OpcUaSource(device(ua_plant), points(20))
    runner, task = await run(source, out)
    try:
        await eventually(lambda: out.latest(7) is not None)
        await ua_plant.stop()
        await eventually(lambda: runner.stats.state == "failed")
        gap = out.latest(7)
        assert gap is not None and gap[3] == Quality.BAD_COMM_FAILURE and np.isnan(gap[2])
        await ua_plant.start(extra_namespaces=2)  # our namespace now has another index
        await eventually(lambda: runner.stats.state == "ok")
        await ua_plant.nodes[7].write_value(777.0)
        await eventually(lambda: (out.latest(7) or (0, 0, 0.0, 0))[2] == 777.0)
        assert out.latest(7)[3] == Quality.GOOD  # type: ignore[index]
        assert runner.stats.history[-2:] == ["failed", "ok"]
    finally:
        await stop(task)


async def test_unreachable_endpoint_at_start_marks_tags_bad_and_keeps_retrying() -> None:
    out = Collected()
    plant = UaPlant(1, 0)  # port 1: nothing listens
    source = OpcUaSource(device(plant, timeout_s=0.5), points(3))
    runner, task = await run(source, out)
    try:
        await eventually(lambda: runner.stats.reconnects >= 2)
        assert runner.stats.state == "failed"
        assert len(out.batches) == 1  # one COMM_FAILURE batch on the transition, not one per attempt
        assert out.batches[0].quality.tolist() == [Quality.BAD_COMM_FAILURE] * 3
        assert "cannot connect" in runner.stats.last_error
    finally:
        await stop(task)


async def test_five_thousand_monitored_items() -> None:
    plant = UaPlant(free_port(), 5000)
    await plant.start()
    out = Collected()
    source = OpcUaSource(device(plant, interval_s=0.5), points(5000))
    runner, task = await run(source, out)
    try:
        await eventually(lambda: len({r[0] for r in out.rows()}) == 5000, timeout=60)
        await plant.nodes[4999].write_value(-1.0)
        await eventually(lambda: (out.latest(4999) or (0, 0, 0.0, 0))[2] == -1.0)
        assert runner.stats.errors == 0
    finally:
        await stop(task)
        await plant.stop()
