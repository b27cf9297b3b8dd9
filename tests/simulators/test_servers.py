"""Every tag read back through independent clients equals the model within its resolution."""

from __future__ import annotations

import math

from asyncua import Client, ua
from pymodbus.client import AsyncModbusTcpClient

from core.plant import ModbusDevice, OpcUaDevice, Plant
from core.quality import Quality, from_opcua_status
from tests.simulators.clients import quantum, read_modbus, read_opcua
from tests.support.simulator_fixture import SimulatorFactory


async def _read_all(sim, plant: Plant) -> dict[str, float]:  # type: ignore[no-untyped-def]
    got: dict[str, float] = {}
    live = sim.plant_for_clients()
    for dev in live.devices():
        tags = [t for t in plant.tags() if t.source.device == dev.id]
        if isinstance(dev, ModbusDevice):
            client = AsyncModbusTcpClient(dev.host, port=dev.port, timeout=2, retries=0)
            await client.connect()
            try:
                for t in tags:
                    got[t.key] = await read_modbus(client, plant, t)
            finally:
                client.close()
        else:
            assert isinstance(dev, OpcUaDevice)
            async with Client(dev.endpoint) as client:
                for t in tags:
                    dv = await read_opcua(client, t, t.source.namespace_uri or dev.namespace_uri or "")
                    got[t.key] = float(dv.Value.Value)
    return got


async def test_every_tag_reads_back_within_resolution(simulator: SimulatorFactory, plant: Plant) -> None:
    sim = await simulator(plant, seed=3)
    sim.set_value("V101.BY01", 1)  # a coil that is on
    sim.set_value("T301.P02", 1)  # a coil behind a second unit id
    await sim.step(3)
    got = await _read_all(sim, plant)
    assert set(got) == {t.key for t in plant.tags()}
    for t in plant.tags():
        want = sim.value(t.key)
        tol = quantum(t) / 2 + 1e-6 * max(1.0, abs(want))
        assert math.isclose(got[t.key], want, abs_tol=tol), (t.key, got[t.key], want, tol)
    assert got["E1.V101.BY01"] == 1.0 and got["E1.T301.P02"] == 1.0


async def test_opcua_metadata_timestamps_and_read_only(simulator: SimulatorFactory, plant: Plant) -> None:
    sim = await simulator(plant, seed=1)
    await sim.step(2)
    tag = plant.tag("E1.V101.TT01")
    async with Client(sim.opcua_endpoint("DCS2")) as client:
        level = client.get_node(f"ns={await client.get_namespace_index('urn:e1:dcs2')};i=5001")
        assert abs(await level.read_value() - sim.value("V101.LT01")) <= 0.005
    async with Client(sim.opcua_endpoint("DCS1")) as client:
        ns = await client.get_namespace_index("urn:e1:dcs1")
        node = client.get_node(f"ns={ns};s=V101.TT01")
        dv = await node.read_data_value()
        assert dv.SourceTimestamp is not None and dv.ServerTimestamp is not None
        assert dv.StatusCode.is_good()
        rng = await (await node.get_child("0:EURange")).read_value()
        assert (rng.Low, rng.High) == tuple(tag.range or ())
        eu = await (await node.get_child("0:EngineeringUnits")).read_value()
        assert eu.DisplayName.Text == "°C" and eu.UnitId == (ord("C") << 16 | ord("E") << 8 | ord("L"))
        access = await node.read_attribute(ua.AttributeIds.UserAccessLevel)
        assert access.Value.Value == ua.AccessLevel.CurrentRead.mask
        try:
            await node.write_value(1.0)
            raise AssertionError("the simulated DCS must refuse writes")
        except ua.UaStatusCodeError as exc:
            assert exc.code == ua.StatusCodes.BadUserAccessDenied


async def test_modbus_refuses_writes(simulator: SimulatorFactory, plant: Plant) -> None:
    sim = await simulator(plant, opcua=False)
    host, port = sim.modbus_address("PLC1")
    client = AsyncModbusTcpClient(host, port=port, timeout=2, retries=0)
    await client.connect()
    try:
        rr = await client.write_register(0, 1, slave=1)
        assert rr.isError()
    finally:
        client.close()


async def test_subscription_sees_changes_with_status(simulator: SimulatorFactory, plant: Plant) -> None:
    sim = await simulator(plant, seed=2)
    seen: list[ua.DataValue] = []

    class Handler:
        def datachange_notification(self, node: object, val: object, data: object) -> None:
            seen.append(data.monitored_item.Value)  # type: ignore[attr-defined]

    async with Client(sim.opcua_endpoint("DCS1")) as client:
        ns = await client.get_namespace_index("urn:e1:dcs1")
        sub = await client.create_subscription(50, Handler())
        await sub.subscribe_data_change(client.get_node(f"ns={ns};s=V101.TT01"))
        sim.inject_fault("V101.TT01", "BAD_QUALITY", quality=int(Quality.BAD_COMM_FAILURE))
        await sim.step()
        for _ in range(100):
            if any(not dv.StatusCode.is_good() for dv in seen):
                break
            await client.check_connection()
            import asyncio

            await asyncio.sleep(0.02)
        bad = [dv for dv in seen if not dv.StatusCode.is_good()]
        assert bad and from_opcua_status(bad[-1].StatusCode.value) == Quality.BAD_COMM_FAILURE
        assert bad[-1].Value.Value is None  # a BAD value is null (OPC UA Part 4 §7.7.1)


async def test_every_demo_tag_reads_back_within_resolution(simulator: SimulatorFactory) -> None:
    from pathlib import Path

    from core.config import load_plant

    demo = load_plant(Path(__file__).parents[2] / "config" / "demo")
    sim = await simulator(demo, seed=4)
    await sim.step(5)
    got = await _read_all(sim, demo)
    assert set(got) == {t.key for t in demo.tags()}
    for t in demo.tags():
        want = sim.value(t.key)
        tol = quantum(t) / 2 + 1e-6 * max(1.0, abs(want))
        assert math.isclose(got[t.key], want, abs_tol=tol), (t.key, got[t.key], want, tol)
