"""Every fault type is observable from a client: stuck, drift/spike, bad quality, offline,
slow, and an OPC UA restart that renumbers namespaces but keeps node ids."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
from asyncua import Client
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from core.plant import Plant
from core.quality import Quality, from_opcua_status
from tests.simulators.clients import read_modbus, read_opcua
from tests.support.simulator_fixture import SimulatorFactory


async def _modbus(sim, device: str) -> AsyncModbusTcpClient:  # type: ignore[no-untyped-def]
    host, port = sim.modbus_address(device)
    client = AsyncModbusTcpClient(host, port=port, timeout=0.5, retries=0)
    assert await client.connect()
    return client


async def test_stuck_drift_spike_and_bad_quality_over_modbus(
    simulator: SimulatorFactory, plant: Plant
) -> None:
    sim = await simulator(plant, seed=5, opcua=False)
    client = await _modbus(sim, "GDS1")
    co, nh3_a, nh3_b = plant.tag("E1.G201.AT01"), plant.tag("E1.V101.AT01"), plant.tag("E1.V101.AT02")
    try:
        sim.inject_fault(co.key, "STUCK", value=24.0)  # pinned at the CO_STEEL level-1 limit
        sim.inject_fault(nh3_a.key, "DRIFT", rate_per_s=0.5)
        await sim.step(10)
        assert await read_modbus(client, plant, co) == pytest.approx(24.0, abs=0.1)
        assert await read_modbus(client, plant, nh3_a) == pytest.approx(5.0, abs=0.7)
        sim.inject_fault(nh3_a.key, "SPIKE", magnitude=100.0, duration_s=1)
        await sim.step()
        assert await read_modbus(client, plant, nh3_a) == pytest.approx(100.0, abs=0.5)
        await sim.step()
        assert await read_modbus(client, plant, nh3_a) < 5.0
        sim.inject_fault(nh3_a.key, "BAD_QUALITY")  # FLOAT32: NaN
        sim.inject_fault(nh3_b.key, "BAD_QUALITY")  # UINT16 scaled: NE43 failure code (type max)
        await sim.step()
        assert math.isnan(await read_modbus(client, plant, nh3_a))
        assert await read_modbus(client, plant, nh3_b) == pytest.approx(65535 * 300 / 3000)
        sim.clear_fault(nh3_a.key)
        await sim.step()
        assert not math.isnan(await read_modbus(client, plant, nh3_a))
    finally:
        client.close()


async def test_modbus_offline_times_out_and_slow_answers_late(
    simulator: SimulatorFactory, plant: Plant
) -> None:
    sim = await simulator(plant, opcua=False)
    client = await _modbus(sim, "PLC1")
    tag = plant.tag("E1.V101.PT02")
    try:
        await sim.device_offline("PLC1")
        with pytest.raises(ModbusIOException):
            await read_modbus(client, plant, tag)
        await sim.device_online("PLC1")
        client.close()
        client = await _modbus(sim, "PLC1")
        await sim.slow_device("PLC1", 0.2)
        t0 = time.perf_counter()
        assert await read_modbus(client, plant, tag) == pytest.approx(sim.value(tag.key), abs=1e-6)
        assert time.perf_counter() - t0 >= 0.2
    finally:
        client.close()


async def test_opcua_bad_quality_offline_and_restart_renumbers(
    simulator: SimulatorFactory, plant: Plant
) -> None:
    sim = await simulator(plant, seed=1, modbus=False)
    tag = plant.tag("E1.V101.TT01")
    url = sim.opcua_endpoint("DCS1")
    async with Client(url) as client:
        before = await client.get_namespace_index("urn:e1:dcs1")
        sim.inject_fault(tag.key, "STUCK")  # frozen where it was
        sim.inject_fault(tag.key, "BAD_QUALITY", quality=int(Quality.BAD_SENSOR_FAILURE))
        await sim.step(3)
        dv = await read_opcua(client, tag, "urn:e1:dcs1")
        assert from_opcua_status(dv.StatusCode.value) == Quality.BAD_SENSOR_FAILURE
    await sim.restart_device("DCS1", renumber=True)
    assert sim.opcua_endpoint("DCS1") == url  # same port after the restart
    async with Client(url) as client:
        after = await client.get_namespace_index("urn:e1:dcs1")
        assert after != before
        sim.clear_fault(tag.key)
        await sim.step()
        dv = await read_opcua(client, tag, "urn:e1:dcs1")  # same string id, new index
        assert dv.StatusCode.is_good() and dv.Value.Value == pytest.approx(sim.value(tag.key))
    await sim.device_offline("DCS1")
    with pytest.raises((OSError, asyncio.TimeoutError)):
        async with Client(url, timeout=1):
            pass
