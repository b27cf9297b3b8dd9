"""Fixtures: real OPC UA and Modbus servers on loopback (tests/support/servers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pymodbus.datastore import ModbusServerContext

from tests.support.servers import ModbusPlant, UaPlant, free_port, modbus_unit


@pytest.fixture
async def ua_plant() -> AsyncIterator[UaPlant]:
    plant = UaPlant(free_port(), 20)
    await plant.start()
    yield plant
    await plant.stop()


@pytest.fixture
async def modbus_plant() -> AsyncIterator[ModbusPlant]:
    plant = ModbusPlant(
        free_port(), ModbusServerContext(slaves={1: modbus_unit(), 2: modbus_unit()}, single=False)
    )
    await plant.start()
    yield plant
    await plant.stop()
