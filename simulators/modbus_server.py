"""Modbus servers for the simulated plant (pymodbus is imported here and nowhere else in
simulators/).

One pymodbus ``ModbusTcpServer`` per configured (host, port), or one RTU
``ModbusSerialServer`` per serial bus (``ModbusDeviceServer.rtu``: the devices of one
serial port, served on a device path such as one end of a pty pair). Every unit id has its
own four tables served from numpy arrays that ``ModbusMap.encode`` refreshes from
PlantState. The plant is read-only to clients (writes answer ILLEGAL FUNCTION). A unit
whose device is OFFLINE stops answering (the client times out); a SLOW device answers
after its delay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from pymodbus.datastore import ModbusServerContext
from pymodbus.datastore.context import ModbusBaseSlaveContext
from pymodbus.exceptions import NoSuchSlaveException
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from core.plant import ModbusDevice, ModbusTable
from simulators.faults import DeviceFaults
from simulators.modbus_codec import ModbusMap, UnitStore
from simulators.state import PlantState

__all__ = ["ModbusDeviceServer"]

_TABLE = {
    "h": ModbusTable.HOLDING,
    "i": ModbusTable.INPUT,
    "c": ModbusTable.COIL,
    "d": ModbusTable.DISCRETE_INPUT,
}
# pymodbus logs every unanswered request to a silent unit at ERROR: that is the fault we inject
logging.getLogger("pymodbus.logging").setLevel(logging.CRITICAL)


class _Unit(ModbusBaseSlaveContext):
    def __init__(self, store: UnitStore, device: str, faults: DeviceFaults) -> None:
        self.store = store
        self.device = device
        self.faults = faults

    def reset(self) -> None:  # pymodbus interface; the plant state owns the values
        pass

    def getValues(self, fc_as_hex: int, address: int, count: int = 1) -> Sequence[int | bool] | int:  # type: ignore[override]
        table = self.store.table(_TABLE[self.decode(fc_as_hex)])
        if address + count > len(table):
            return ExceptionResponse.ILLEGAL_ADDRESS
        return table[address : address + count].tolist()

    async def async_getValues(
        self, fc_as_hex: int, address: int, count: int = 1
    ) -> Sequence[int | bool] | int:
        delay = self.faults.delay_s(self.device)
        if delay > 0:
            await asyncio.sleep(delay)
        return self.getValues(fc_as_hex, address, count)

    async def async_setValues(self, fc_as_hex: int, address: int, values: Sequence[int | bool]) -> int:
        return ExceptionResponse.ILLEGAL_FUNCTION


class _Context(ModbusServerContext):
    """Unit ids of OFFLINE devices are missing: with ignore_missing_slaves the server stays silent."""

    def __init__(self, units: dict[int, _Unit], faults: DeviceFaults) -> None:
        super().__init__(slaves=units, single=False)
        self.faults = faults

    def __getitem__(self, slave: int) -> _Unit:
        unit: _Unit = super().__getitem__(slave)
        if self.faults.is_offline(unit.device):
            raise NoSuchSlaveException(f"unit {slave} is offline")
        return unit


class ModbusDeviceServer:
    """One listening Modbus endpoint (TCP host:port, or an RTU serial bus) serving configured devices."""

    def __init__(
        self,
        host: str,
        port: int,
        devices: list[ModbusDevice],
        state: PlantState,
        faults: DeviceFaults,
        *,
        serial_port: str | None = None,
    ) -> None:
        self.host = host
        self.port = port  # 0: any free port; the bound port replaces it after start()
        self.serial_port = serial_port  # RTU: the device path served instead of host:port
        self.devices = devices
        self.state = state
        ids = {d.id for d in devices}
        tags = [(i, t) for i, t in enumerate(state.tags) if t.source.device in ids]
        self.map = ModbusMap(devices, tags)
        units = {u: _Unit(s, self.map.unit_device[u], faults) for u, s in self.map.stores.items()}
        self.context = _Context(units, faults)
        self._server: ModbusTcpServer | ModbusSerialServer | None = None

    @classmethod
    def rtu(
        cls, serial_port: str, devices: list[ModbusDevice], state: PlantState, faults: DeviceFaults
    ) -> ModbusDeviceServer:
        """The slaves of one RTU bus on ``serial_port`` with the devices' line settings
        (plant_checks makes every device on a bus agree on them)."""
        return cls("", 0, devices, state, faults, serial_port=serial_port)

    @property
    def device_ids(self) -> list[str]:
        return [d.id for d in self.devices]

    def refresh(self) -> None:
        self.map.encode(self.state.value, self.state.quality)

    async def start(self) -> None:
        self.refresh()
        if self.serial_port is not None:
            await self._start_serial(self.serial_port)
            return
        server = ModbusTcpServer(self.context, address=(self.host, self.port), ignore_missing_slaves=True)
        await server.serve_forever(background=True)
        if server.transport is None:
            raise OSError(f"Modbus simulator cannot listen on {self.host}:{self.port}")
        self.port = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._server = server

    async def _start_serial(self, path: str) -> None:
        line = self.devices[0]
        server = ModbusSerialServer(
            self.context,
            framer=FramerType.RTU,
            port=path,
            baudrate=line.baudrate,
            bytesize=line.bytesize,
            parity=line.parity.letter,
            stopbits=line.stopbits,
            ignore_missing_slaves=True,  # a slave that is not there stays silent, as on a real bus
        )
        try:
            await server.serve_forever(background=True)
        except Exception as exc:  # pyserial: termios.error / ValueError for settings the port refuses
            await server.shutdown()
            raise OSError(f"Modbus simulator cannot open serial port {path}: {exc}") from exc
        if server.transport is None:
            raise OSError(f"Modbus simulator cannot open serial port {path}")
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
