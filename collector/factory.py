"""Sources for every configured device (explicit registry of protocols, no discovery).

Modbus RTU devices are grouped by serial port: one ModbusBusSource owns each bus.
"""

from __future__ import annotations

from collector.base import Source
from core.clock import Clock
from core.plant import ModbusDevice, ModbusTransport, OpcUaDevice, Plant
from core.registry import TagRegistry

__all__ = ["build_sources"]


def build_sources(
    plant: Plant, registry: TagRegistry, clock: Clock, pki_dir: str = "var/pki"
) -> list[Source]:
    # Imported here so that a process that never collects never loads asyncua or pymodbus.
    from collector.modbus.bus import ModbusBusSource
    from collector.modbus.plan import ModbusPoint
    from collector.modbus.plan import points_for_device as modbus_points
    from collector.modbus.source import ModbusSource
    from collector.opcua.source import OpcUaSource
    from collector.opcua.source import points_for_device as opcua_points

    sources: list[Source] = []
    buses: dict[str, list[tuple[ModbusDevice, list[ModbusPoint]]]] = {}
    by_device: dict[str, list[int]] = {}
    for i, tag in enumerate(registry.tags):
        by_device.setdefault(tag.source.device, []).append(i)
    for device in plant.devices():
        mine = by_device.get(device.id, [])
        if isinstance(device, ModbusDevice):
            points = modbus_points(plant, registry, device, mine)
            if not points:
                continue
            if device.transport == ModbusTransport.RTU and device.serial_port is not None:
                buses.setdefault(device.serial_port, []).append((device, points))
            else:
                sources.append(ModbusSource(device, points, clock))
        elif isinstance(device, OpcUaDevice):
            opc_points = opcua_points(plant, registry, device, mine)
            if opc_points:
                sources.append(OpcUaSource(device, opc_points, clock, pki_dir=pki_dir))
    sources += [ModbusBusSource(members, clock) for members in buses.values()]
    return sources
