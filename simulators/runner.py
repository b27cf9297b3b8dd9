"""Simulator: the Simulation behind live OPC UA and Modbus servers, with a control API.

Servers are grouped as the plant is wired: one OPC UA server per endpoint, one Modbus
TCP server per host:port (several unit ids may share it). ``free_ports`` binds every
server to a free port; ``plant_for_clients()`` then gives the plant with the real
endpoints so collectors can connect. With ``autostep`` a task steps the model at
``rate_hz`` of wall time, ``speed`` simulated seconds per wall second; without it, time
moves only through ``step()`` (deterministic tests). Device faults act on the servers:
OPC UA OFFLINE stops the server, RESTART rebuilds it (optionally renumbering namespaces);
Modbus OFFLINE silences the unit ids, SLOW delays answers, RESTART drops connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from urllib.parse import urlparse

from core.clock import Clock, SystemClock
from core.plant import ModbusDevice, OpcUaDevice, Plant
from simulators.faults import DeviceAction
from simulators.modbus_server import ModbusDeviceServer
from simulators.opcua_server import OpcUaEndpointServer
from simulators.scenario import DeviceSpec, Scenario
from simulators.simulation import Simulation

__all__ = ["Simulator"]

log = logging.getLogger(__name__)


class Simulator:
    def __init__(
        self,
        plant: Plant,
        scenario: Scenario | None = None,
        *,
        seed: int | None = None,
        speed: float = 1.0,
        rate_hz: float = 1.0,
        clock: Clock | None = None,
        free_ports: bool = False,
        autostep: bool = True,
        opcua: bool = True,
        modbus: bool = True,
    ) -> None:
        if speed <= 0 or rate_hz <= 0:
            raise ValueError("speed and rate_hz must be positive")
        self.plant = plant
        self.clock = clock or SystemClock()
        self.sim = Simulation(plant, scenario, seed, start_us=self.clock.now_us())
        self.speed, self.rate_hz, self.autostep = speed, rate_hz, autostep
        st, faults = self.sim.state, self.sim.devices
        by_url: dict[str, list[OpcUaDevice]] = {}
        by_addr: dict[tuple[str, int], list[ModbusDevice]] = {}
        for d in plant.devices():
            if isinstance(d, OpcUaDevice):
                by_url.setdefault(d.endpoint, []).append(d)
            elif d.host is not None:
                by_addr.setdefault((d.host, d.port), []).append(d)
            else:  # RTU: the simulator needs the far end of a serial line (not wired up yet)
                log.warning("Modbus RTU device %s (%s) is not simulated", d.id, d.serial_port)
        self.opcua = [
            OpcUaEndpointServer(u, ds, st, port=0 if free_ports else None) for u, ds in by_url.items()
        ]
        self.modbus = [
            ModbusDeviceServer(h, 0 if free_ports else p, ds, st, faults) for (h, p), ds in by_addr.items()
        ]
        if not opcua:  # tests that need only one protocol skip the other's start-up cost
            self.opcua = []
        if not modbus:
            self.modbus = []
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        try:
            for m in self.modbus:
                await m.start()
            for o in self.opcua:
                await o.start()
        except BaseException:
            await self.stop()
            raise
        if self.autostep:
            self._task = asyncio.create_task(self._loop(), name="simulator-loop")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for o in self.opcua:
            await o.stop()
        for m in self.modbus:
            await m.stop()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _loop(self) -> None:
        period = 1.0 / self.rate_hz
        deadline = self.clock.monotonic()
        while True:
            deadline += period
            await self.clock.sleep(max(0.0, deadline - self.clock.monotonic()))
            try:
                await self.step(dt=self.speed * period, now_us=self.clock.now_us())
            except Exception:  # a bad step must not end the plant; the next one may succeed
                log.exception("simulator step failed")

    async def step(self, n: int = 1, dt: float | None = None, now_us: int | None = None) -> None:
        """Advance ``n`` steps of ``dt`` simulated seconds (default one period) and publish."""
        for _ in range(n):
            for action in self.sim.step(dt if dt is not None else self.speed / self.rate_hz, now_us):
                await self._device_action(action)
        await self.publish()

    async def publish(self) -> None:
        for m in self.modbus:
            m.refresh()
        for o in self.opcua:
            await o.publish()

    # --- device faults --------------------------------------------------------------------

    def _opcua_of(self, device_id: str) -> OpcUaEndpointServer | None:
        return next((o for o in self.opcua if any(d.id == device_id for d in o.devices)), None)

    def _modbus_of(self, device_id: str) -> ModbusDeviceServer | None:
        return next((m for m in self.modbus if device_id in m.device_ids), None)

    async def _device_action(self, spec: DeviceSpec) -> None:
        self.sim.device_fault(spec)
        ua_server, mb_server = self._opcua_of(spec.id), self._modbus_of(spec.id)
        if spec.id not in self.sim.state.devices:
            raise KeyError(f"unknown device {spec.id!r}")
        if ua_server is not None:
            if spec.action == DeviceAction.OFFLINE:
                await ua_server.stop()
            elif spec.action == DeviceAction.ONLINE and not ua_server.running:
                await ua_server.start()
            elif spec.action == DeviceAction.RESTART:
                await ua_server.stop()
                if spec.down_s:
                    await self.clock.sleep(spec.down_s / self.speed)
                ua_server.restarts += 1
                await ua_server.start(renumber=spec.renumber)
            elif spec.action == DeviceAction.SLOW:
                log.warning("SLOW is not simulated for OPC UA device %s", spec.id)
        elif mb_server is not None and spec.action == DeviceAction.RESTART:
            await mb_server.stop()
            if spec.down_s:
                await self.clock.sleep(spec.down_s / self.speed)
            await mb_server.start()

    async def device_offline(self, device_id: str) -> None:
        await self._device_action(DeviceSpec(id=device_id, action="OFFLINE"))

    async def device_online(self, device_id: str) -> None:
        await self._device_action(DeviceSpec(id=device_id, action="ONLINE"))

    async def restart_device(self, device_id: str, *, renumber: bool = True, down_s: float = 0.0) -> None:
        await self._device_action(
            DeviceSpec(id=device_id, action="RESTART", renumber=renumber, down_s=down_s)
        )

    async def slow_device(self, device_id: str, delay_s: float) -> None:
        await self._device_action(DeviceSpec(id=device_id, action="SLOW", delay_s=delay_s))

    # --- tag control (takes effect at the next step) ---------------------------------------

    def inject_fault(self, tag: str, kind: str, **params: float | int | None) -> None:
        self.sim.inject_fault(tag, kind, **params)

    def clear_fault(self, tag: str) -> None:
        self.sim.clear_fault(tag)

    def set_value(self, tag: str, value: float, *, hold: bool = False) -> None:
        self.sim.set_value(tag, value, hold=hold)

    def leak(self, equipment: str, rate_kg_s: float, gas: str | None = None) -> None:
        self.sim.leak(equipment, rate_kg_s, gas)

    def value(self, tag: str) -> float:
        return self.sim.value(tag)

    # --- where clients connect ----------------------------------------------------------------

    def opcua_endpoint(self, device_id: str) -> str:
        server = self._opcua_of(device_id)
        if server is None:
            raise KeyError(f"no OPC UA device {device_id!r}")
        return server.endpoint

    def modbus_address(self, device_id: str) -> tuple[str, int]:
        server = self._modbus_of(device_id)
        if server is None:
            raise KeyError(f"no Modbus device {device_id!r}")
        return server.host, server.port

    def plant_for_clients(self) -> Plant:
        """The plant with every device pointing at the port its simulated server really uses."""

        def moved(d: OpcUaDevice | ModbusDevice) -> OpcUaDevice | ModbusDevice:
            # A device whose protocol was not started (opcua=False / modbus=False) keeps its config.
            if (self._opcua_of(d.id) if isinstance(d, OpcUaDevice) else self._modbus_of(d.id)) is None:
                return d
            if isinstance(d, OpcUaDevice):
                url = urlparse(d.endpoint)
                return d.model_copy(
                    update={
                        "endpoint": url._replace(netloc=urlparse(self.opcua_endpoint(d.id)).netloc).geturl()
                    }
                )
            return d.model_copy(update={"port": self.modbus_address(d.id)[1]})

        ents = [
            e.model_copy(update={"devices": [moved(d) for d in e.devices]}) for e in self.plant.enterprises
        ]
        return self.plant.model_copy(update={"enterprises": ents})
