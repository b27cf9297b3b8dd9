"""Real protocol servers on loopback for tests: a small asyncua server and a pymodbus server.

These stand in for plant devices with exactly the behaviour a test needs (status codes,
timestamps, restarts); whole-plant tests use the simulators package instead.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

from asyncua import Node, Server, ua
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusSlaveContext
from pymodbus.server import ModbusTcpServer

NS_URI = "urn:hazardwatch:test:dcs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class UaPlant:
    port: int
    count: int
    server: Server | None = None
    nodes: list[Node] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/hw"

    async def start(self, extra_namespaces: int = 0) -> None:
        """Start (or restart) the server; extra namespaces first renumber ours."""
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        for k in range(extra_namespaces):
            await server.register_namespace(f"urn:dummy:{k}")
        ns = await server.register_namespace(NS_URI)
        folder = await server.nodes.objects.add_folder(ua.NodeId("Plant", ns), "Plant")
        self.nodes = [
            await folder.add_variable(ua.NodeId(f"T{i}.PV", ns), f"T{i}", float(i)) for i in range(self.count)
        ]
        await server.start()
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None


@dataclass
class ModbusPlant:
    port: int
    context: ModbusServerContext
    server: ModbusTcpServer | None = None
    task: asyncio.Task[None] | None = None

    def set(self, unit: int, fc: int, address: int, values: list[int]) -> None:
        self.context[unit].setValues(fc, address, values)

    async def start(self) -> None:
        self.server = ModbusTcpServer(self.context, address=("127.0.0.1", self.port))
        self.task = asyncio.create_task(self.server.serve_forever())
        for _ in range(100):
            try:
                _, w = await asyncio.open_connection("127.0.0.1", self.port)
                w.close()
                return
            except OSError:
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None


def modbus_unit() -> ModbusSlaveContext:
    # pymodbus 3.9 maps request address a to block address a+1, and needs all four blocks
    # given explicitly (otherwise it silently uses empty defaults).
    return ModbusSlaveContext(
        di=ModbusSequentialDataBlock(1, [0] * 200),
        co=ModbusSequentialDataBlock(1, [0] * 200),
        hr=ModbusSequentialDataBlock(1, [0] * 300),
        ir=ModbusSequentialDataBlock(1, [0] * 300),
    )
