"""Modbus unit health against a real pymodbus server: a dead unit behind a gateway shows in
/metrics, a timed-out request marks only its own points, a stopped heartbeat or values that
never move trip the device."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from collector.base import CollectorRunner
from collector.metrics import SourceMetrics
from collector.modbus.plan import ModbusPoint
from collector.modbus.source import ModbusSource
from core.batch import ReadingBatch
from core.clock import FakeClock
from core.plant import DataType, ModbusTable
from core.quality import Quality
from tests.collector.test_modbus_source import CO, HR, device
from tests.support.proxy import Rewriter, TcpProxy
from tests.support.servers import ModbusPlant
from tests.support.waiting import eventually

POINTS = [
    ModbusPoint(0, 1, ModbusTable.HOLDING, 0, DataType.INT16),
    ModbusPoint(1, 1, ModbusTable.COIL, 5, DataType.BOOL),
    ModbusPoint(2, 2, ModbusTable.HOLDING, 10, DataType.INT16),
]


@pytest.fixture(params=["timeout", "exception-11"])
async def gateway(request: pytest.FixtureRequest, modbus_plant: ModbusPlant) -> AsyncIterator[int]:
    """A gateway port: unit 1 answers; unit 2 is configured on the collector but dead behind the
    gateway, so its requests time out, or the gateway answers exception 11 (target failed to respond)."""
    modbus_plant.set(1, HR, 0, [42])
    modbus_plant.set(1, CO, 5, [1])
    dead = "drop" if request.param == "timeout" else "exception-11"
    proxy = modbus_gateway(modbus_plant.port, lambda frame: dead if frame[6] == 2 else "forward")
    await proxy.start()
    yield proxy.port
    await proxy.stop()


def metric_lines(runner: CollectorRunner) -> dict[str, float]:
    """One scrape of the runner's metrics, parsed back: ``name{label="v",...}`` (labels in the
    order written here) -> value."""
    registry = CollectorRegistry()
    registry.register(SourceMetrics([runner]))
    order = ["source", "device", "unit", "table", "start", "count"]
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            labels = ",".join(f'{k}="{s.labels[k]}"' for k in sorted(s.labels, key=order.index))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


async def test_a_dead_unit_behind_a_gateway_shows_in_metrics(gateway: int) -> None:
    out: list[ReadingBatch] = []
    runner = CollectorRunner(ModbusSource(device(gateway), POINTS), out.append, backoff_initial_s=0.1)
    task = asyncio.create_task(runner.run())
    try:
        await eventually(lambda: runner.stats.reads >= 3)
        m = metric_lines(runner)
        assert runner.stats.state == "ok"  # the link works ...
        assert m['hazardwatch_source_up{source="plc"}'] == 0  # ... but the documented alert fires
        assert m['hazardwatch_source_errors_total{source="plc"}'] >= 1
        assert m['hazardwatch_device_up{source="plc",device="plc"}'] == 0
        unit = 'source="plc",device="plc",unit="{}"'
        assert m[f"hazardwatch_modbus_unit_up{{{unit.format(2)}}}"] == 0
        assert m[f"hazardwatch_modbus_unit_consecutive_failures{{{unit.format(2)}}}"] >= 1
        assert m[f"hazardwatch_modbus_unit_last_success_timestamp_seconds{{{unit.format(2)}}}"] == 0
        assert m[f"hazardwatch_modbus_unit_up{{{unit.format(1)}}}"] == 1
        assert m[f"hazardwatch_modbus_unit_last_success_timestamp_seconds{{{unit.format(1)}}}"] > 1.7e9
        dead = f'hazardwatch_modbus_request_errors_total{{{unit.format(2)},table="HOLDING",start="10",count="1"}}'
        assert m[dead] >= 1
        last = out[-1]
        q = dict(zip(last.tag.tolist(), last.quality.tolist(), strict=True))
        assert q == {0: Quality.GOOD, 1: Quality.GOOD, 2: Quality.BAD_COMM_FAILURE}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def modbus_gateway(target_port: int, rule: Callable[[bytes], str]) -> TcpProxy:
    """A Modbus TCP gateway in front of a server: per request frame, ``rule`` says "forward",
    "drop" (the request times out) or "exception-N" (answer exception N; 11: gateway target
    failed to respond)."""

    def per_connection() -> Rewriter:
        buffer = b""

        def rewrite(data: bytes) -> tuple[bytes, bytes]:
            nonlocal buffer
            buffer += data
            up, back = b"", b""
            while len(buffer) >= 8 and len(buffer) >= 6 + int.from_bytes(buffer[4:6], "big"):
                size = 6 + int.from_bytes(buffer[4:6], "big")
                frame, buffer = buffer[:size], buffer[size:]
                match rule(frame):
                    case "forward":
                        up += frame
                    case str() as answer if answer.startswith("exception-"):
                        # MBAP (tid, pid, len 3, unit) + fc|0x80, exception code
                        code = int(answer.removeprefix("exception-"))
                        back += frame[:4] + b"\x00\x03" + frame[6:7] + bytes([frame[7] | 0x80, code])
            return up, back

        return rewrite

    return TcpProxy(target_port, rewrite=per_connection)


async def test_a_timed_out_holding_read_keeps_the_coils_that_answered(modbus_plant: ModbusPlant) -> None:
    modbus_plant.set(1, HR, 0, [42])
    modbus_plant.set(1, CO, 5, [1])
    proxy = modbus_gateway(modbus_plant.port, lambda frame: "drop" if frame[7] == 3 else "forward")
    await proxy.start()
    clock = FakeClock()
    source = ModbusSource(device(proxy.port), POINTS[:2], clock=clock)
    await source.open()
    try:
        batch = await source.read()
        q = dict(zip(batch.tag.tolist(), batch.quality.tolist(), strict=True))
        assert q == {0: Quality.BAD_COMM_FAILURE, 1: Quality.GOOD}  # the coil answered before the timeout
        assert batch.value[batch.tag == 1][0] == 1.0 and np.isnan(batch.value[batch.tag == 0][0])
        clock.advance(0.1)
        batch = await source.read()  # the failed request is skipped a while; the coil is still read
        assert dict(zip(batch.tag.tolist(), batch.quality.tolist(), strict=True))[1] == Quality.GOOD
        health = source.health()
        assert health.request_errors == 1 and health.devices == {"plc": True}  # the unit answers
    finally:
        await source.close()
        await proxy.stop()


async def test_a_heartbeat_register_that_stops_marks_every_point_bad_until_it_moves(
    modbus_plant: ModbusPlant,
) -> None:
    modbus_plant.set(1, HR, 0, [42])
    clock = FakeClock()
    beat = {"table": "HOLDING", "address": 50, "max_age_s": 3.0}
    source = ModbusSource(device(modbus_plant.port, heartbeat=beat), POINTS[:2], clock=clock)
    await source.open()

    async def poll(counter: int | None) -> ReadingBatch:
        if counter is not None:
            modbus_plant.set(1, HR, 50, [counter])
        clock.advance(1.0)
        return await source.read()

    try:
        for n in range(4):  # beating
            batch = await poll(n)
            assert (batch.quality == Quality.GOOD).all()
        for _ in range(3):  # the PLC stops: still GOOD within max_age_s
            batch = await poll(None)
        assert (batch.quality == Quality.GOOD).all()
        batch = await poll(None)  # 4 s without a change
        assert (batch.quality == Quality.BAD_COMM_FAILURE).all() and np.isnan(batch.value).all()
        assert source.health().devices == {"plc": False}
        batch = await poll(99)  # beating again: fresh data
        assert (batch.quality == Quality.GOOD).all() and batch.value[batch.tag == 0][0] == 42.0
        assert source.health().devices == {"plc": True}
    finally:
        await source.close()


async def test_max_silence_trips_a_device_whose_values_never_move(modbus_plant: ModbusPlant) -> None:
    modbus_plant.set(1, HR, 0, [42])
    clock = FakeClock()
    source = ModbusSource(device(modbus_plant.port, max_silence_s=5.0), POINTS[:2], clock=clock)
    await source.open()
    try:
        qualities = []
        for _ in range(7):
            clock.advance(1.0)
            qualities.append(set((await source.read()).quality.tolist()))
        assert qualities[:6] == [{Quality.GOOD}] * 6 and qualities[6] == {Quality.BAD_COMM_FAILURE}
        modbus_plant.set(1, HR, 0, [43])
        clock.advance(1.0)
        batch = await source.read()
        assert (batch.quality == Quality.GOOD).all() and batch.value[batch.tag == 0][0] == 43.0
    finally:
        await source.close()


@pytest.mark.parametrize(
    ("beat", "error"),
    [
        # type/table/byte-order mismatches are cross-checks: tests/core/testcases/modbus_heartbeat_point
        ({"table": "HOLDING", "address": 1, "max_age_s": float("inf")}, "finite"),
        ({"table": "HOLDING", "address": 70000}, "less than or equal to 65535"),
    ],
)
def test_a_heartbeat_that_cannot_be_read_is_refused_by_the_config(
    beat: dict[str, object], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        device(502, heartbeat=beat)


async def test_a_unit_that_silently_drops_its_first_request_still_has_its_other_requests_read(
    modbus_plant: ModbusPlant,
) -> None:
    modbus_plant.set(1, HR, 0, [42])
    modbus_plant.set(1, CO, 5, [1])
    # The device ignores function code 1 (read coils), the unit's first request in plan order.
    proxy = modbus_gateway(modbus_plant.port, lambda frame: "drop" if frame[7] == 1 else "forward")
    await proxy.start()
    clock = FakeClock()
    source = ModbusSource(device(proxy.port), POINTS[:2], clock=clock)
    await source.open()
    try:
        for _ in range(3):
            batch = await source.read()
            q = dict(zip(batch.tag.tolist(), batch.quality.tolist(), strict=True))
            assert q == {0: Quality.GOOD, 1: Quality.BAD_COMM_FAILURE}
            assert batch.value[batch.tag == 0][0] == 42.0
            clock.advance(0.1)
        health = source.health()
        assert health.devices == {"plc": True}  # the unit answers; one request of it does not
        assert health.request_errors >= 1
    finally:
        await source.close()
        await proxy.stop()


async def test_a_unit_that_answers_nothing_costs_at_most_two_timeouts_per_probe(
    modbus_plant: ModbusPlant,
) -> None:
    frames: list[bytes] = []

    def rule(frame: bytes) -> str:
        frames.append(frame)
        return "drop"

    proxy = modbus_gateway(modbus_plant.port, rule)
    await proxy.start()
    points = [*POINTS[:2], ModbusPoint(3, 1, ModbusTable.HOLDING, 40, DataType.INT16)]
    source = ModbusSource(device(proxy.port, max_registers=2), points, clock=FakeClock())
    await source.open()
    try:
        batch = await source.read()
        assert set(batch.quality.tolist()) == {Quality.BAD_COMM_FAILURE}
        assert len(frames) == 2 and source.health().devices == {"plc": False}
    finally:
        await source.close()
        await proxy.stop()


async def test_a_request_that_fails_again_after_recovering_is_logged_again(
    modbus_plant: ModbusPlant, caplog: pytest.LogCaptureFixture
) -> None:
    modbus_plant.set(1, HR, 0, [42])
    modbus_plant.set(1, CO, 5, [1])
    failing = True
    proxy = modbus_gateway(modbus_plant.port, lambda f: "exception-4" if failing and f[7] == 3 else "forward")
    await proxy.start()
    clock = FakeClock()
    source = ModbusSource(device(proxy.port), POINTS[:2], clock=clock)
    await source.open()

    def logged() -> int:
        return sum("exception 4 reading unit 1 HOLDING" in r.getMessage() for r in caplog.records)

    try:
        for expected_quality, is_failing, expected_logs in [
            (Quality.BAD_DEVICE_FAILURE, True, 1),
            (Quality.BAD_DEVICE_FAILURE, True, 1),  # once, not every poll
            (Quality.GOOD, False, 1),
            (Quality.BAD_DEVICE_FAILURE, True, 2),  # failing again after it worked: logged again
        ]:
            failing = is_failing
            batch = await source.read()
            assert batch.quality[batch.tag == 0][0] == expected_quality
            assert logged() == expected_logs
            clock.advance(0.1)
        assert any("HOLDING 0..0 works again" in r.getMessage() for r in caplog.records)
    finally:
        await source.close()
        await proxy.stop()
