"""ModbusSource against a real pymodbus server: values, read-only wire, failures per unit and device."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from collector.base import CollectorRunner
from collector.modbus.decode import encode_words
from collector.modbus.plan import ModbusPoint
from collector.modbus.source import ModbusSource
from core.batch import ReadingBatch
from core.errors import SourceError
from core.plant import ByteOrder, DataType, ModbusDevice, ModbusTable
from core.quality import Quality
from tests.support.proxy import TcpProxy
from tests.support.servers import ModbusPlant
from tests.support.waiting import eventually

HR, IR, CO, DI = 3, 4, 1, 2


def device(port: int, **kw: object) -> ModbusDevice:
    return ModbusDevice.model_validate(
        {
            "protocol": "MODBUS",
            "id": "plc",
            "host": "127.0.0.1",
            "port": port,
            "timeout_s": 0.3,
            "retries": 0,
            "poll_interval_s": 0.1,
            **kw,
        }
    )


POINTS = [
    ModbusPoint(0, 1, ModbusTable.HOLDING, 0, DataType.FLOAT32, ByteOrder.CDAB),
    ModbusPoint(1, 1, ModbusTable.HOLDING, 2, DataType.INT16),
    ModbusPoint(2, 1, ModbusTable.INPUT, 10, DataType.UINT16, raw=(0, 27648), eng=(0, 10)),
    ModbusPoint(3, 1, ModbusTable.COIL, 5, DataType.BOOL),
    ModbusPoint(4, 1, ModbusTable.DISCRETE_INPUT, 7, DataType.BOOL),
    ModbusPoint(5, 2, ModbusTable.HOLDING, 100, DataType.FLOAT64, ByteOrder.DCBA),
]


def fill(plant: ModbusPlant) -> None:
    plant.set(1, HR, 0, encode_words(-12.5, DataType.FLOAT32, ByteOrder.CDAB))
    plant.set(1, HR, 2, encode_words(-300, DataType.INT16, ByteOrder.ABCD))
    plant.set(1, IR, 10, [20736])
    plant.set(1, CO, 5, [1])
    plant.set(1, DI, 7, [1])
    plant.set(2, HR, 100, encode_words(2.0e-3, DataType.FLOAT64, ByteOrder.DCBA))


async def test_reads_every_type_with_gather_timestamps(modbus_plant: ModbusPlant) -> None:
    fill(modbus_plant)
    source = ModbusSource(device(modbus_plant.port), POINTS)
    await source.open()
    try:
        batch = await source.read()
    finally:
        await source.close()
    got = dict(zip(batch.tag.tolist(), batch.value.tolist(), strict=True))
    assert got == {0: -12.5, 1: -300.0, 2: 7.5, 3: 1.0, 4: 1.0, 5: 2.0e-3}
    assert (batch.quality == Quality.GOOD).all()
    assert len(set(batch.ts.tolist())) == 1


async def test_only_read_function_codes_cross_the_wire(modbus_plant: ModbusPlant) -> None:
    fill(modbus_plant)
    seen: list[int] = []
    buffer = bytearray()

    def tap(data: bytes) -> None:
        buffer.extend(data)
        while len(buffer) >= 8:  # MBAP: tid(2) pid(2) len(2) unit(1), then the PDU's function code
            length = int.from_bytes(buffer[4:6], "big")
            if len(buffer) < 6 + length:
                break
            seen.append(buffer[7])
            del buffer[: 6 + length]

    proxy = TcpProxy(modbus_plant.port, tap)
    await proxy.start()
    source = ModbusSource(device(proxy.port), POINTS)
    try:
        await source.open()
        for _ in range(3):
            await source.read()
    finally:
        await source.close()
        await proxy.stop()
    assert len(seen) == 3 * len(source.plan.requests)
    assert set(seen) <= {1, 2, 3, 4}, f"non-read function codes on the wire: {set(seen) - {1, 2, 3, 4}}"


async def test_short_answer_marks_only_those_points_bad(modbus_plant: ModbusPlant) -> None:
    fill(modbus_plant)
    # Registers 5000.. lie outside the server's memory; pymodbus answers with no registers.
    points = [*POINTS, ModbusPoint(9, 1, ModbusTable.HOLDING, 5000, DataType.UINT16)]
    source = ModbusSource(device(modbus_plant.port), points)
    await source.open()
    try:
        batch = await source.read()
    finally:
        await source.close()
    q = dict(zip(batch.tag.tolist(), batch.quality.tolist(), strict=True))
    assert q[9] == Quality.BAD_DEVICE_FAILURE and np.isnan(batch.value[batch.tag == 9][0])
    assert all(q[i] == Quality.GOOD for i in range(6))


async def test_lost_connection_is_a_source_error(modbus_plant: ModbusPlant) -> None:
    source = ModbusSource(device(modbus_plant.port), POINTS)
    await source.open()
    await modbus_plant.stop()
    with pytest.raises(SourceError, match="plc"):
        for _ in range(5):
            await source.read()
    await source.close()


async def test_device_offline_goes_bad_within_two_polls_and_recovers(modbus_plant: ModbusPlant) -> None:
    fill(modbus_plant)
    proxy = TcpProxy(modbus_plant.port)
    await proxy.start()
    out: list[ReadingBatch] = []
    runner = CollectorRunner(
        ModbusSource(device(proxy.port), POINTS),
        out.append,
        backoff_initial_s=0.1,
        backoff_max_s=0.3,
        open_timeout_s=1,
    )
    task = asyncio.create_task(runner.run())
    try:
        await eventually(lambda: runner.stats.reads >= 2)
        await proxy.cut()
        loop = asyncio.get_running_loop()
        cut_at = loop.time()
        await eventually(lambda: runner.stats.state == "failed")
        assert (
            loop.time() - cut_at <= 2 * 0.1 + 0.3 + 0.2
        )  # two poll intervals plus one request timeout, with slack
        assert out[-1].quality.tolist() == [Quality.BAD_COMM_FAILURE] * len(POINTS)
        await proxy.restore()
        await eventually(lambda: runner.stats.state == "ok")
        await eventually(lambda: (out[-1].quality == Quality.GOOD).all())
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await proxy.stop()
