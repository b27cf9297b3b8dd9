"""ModbusSource: one Modbus TCP device, its ReadPlan executed by a PlanExecutor.

Only read function codes (1-4) are ever sent; the plan cannot express anything else.
Timestamps are gather time (Modbus carries none). A unit id that stops answering goes
BAD|COMM_FAILURE and is skipped for a while (PlanExecutor), so one dead unit behind a
gateway does not cost a timeout on every poll of the healthy ones; a lost TCP connection
fails the whole source and the runner reconnects. RTU buses: collector/modbus/bus.py.
"""

from __future__ import annotations

from functools import partial

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from collector.base import SourceHealth
from collector.modbus.execute import PlanExecutor, send_request
from collector.modbus.plan import ModbusPoint
from core.batch import ReadingBatch
from core.clock import Clock, SystemClock
from core.errors import SourceConfigError, SourceError
from core.plant import ModbusDevice

__all__ = ["ModbusSource"]


class ModbusSource:
    streaming = False

    def __init__(self, device: ModbusDevice, points: list[ModbusPoint], clock: Clock | None = None) -> None:
        if device.host is None:
            raise SourceConfigError(f"{device.id}: a Modbus TCP device needs host")
        self.device = device
        self.host = device.host
        self.name = device.id
        self.interval_s = device.poll_interval_s
        self.clock = clock or SystemClock()
        self.executor = PlanExecutor(device, points)
        self.plan = self.executor.plan
        self.tags = self.executor.tags
        self._client: AsyncModbusTcpClient | None = None

    async def open(self) -> None:
        d = self.device
        # reconnect_delay=0: pymodbus must not reconnect behind our back; the runner owns that.
        client = AsyncModbusTcpClient(
            self.host, port=d.port, timeout=d.timeout_s, retries=d.retries, reconnect_delay=0
        )
        try:
            ok = await client.connect()
        except (OSError, ModbusException) as exc:
            client.close()
            raise SourceError(f"{self.name}: cannot connect to {self.host}:{d.port}: {exc}") from exc
        if not ok:
            client.close()
            raise SourceError(f"{self.name}: cannot connect to {self.host}:{d.port}")
        self._client = client
        self.executor.reset()

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def health(self) -> SourceHealth:
        ex = self.executor
        return SourceHealth({ex.name: ex.up}, ex.request_errors, ex.samples(self.name))

    async def read(self) -> ReadingBatch:
        client = self._client
        if client is None:
            raise SourceError(f"{self.name}: not open")
        ts = self.clock.now_us()
        return await self.executor.read(
            partial(send_request, client), lambda: client.connected, self.clock.monotonic(), ts
        )
