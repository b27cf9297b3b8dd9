"""ModbusBusSource: the one owner of an RTU serial bus, reading every device on it.

RTU has one master and one outstanding request, so the devices on a serial port share one
AsyncModbusSerialClient and their requests go out strictly one after another, each after
at least ``pause_s`` of bus silence (never less than the 3.5-character gap RTU framing
needs). The runner ticks at the smallest poll interval on the bus; each tick reads only
the devices that are due, so every device keeps its own interval on average (jitter up to
half a tick) and a slow tank gauge does not take bus time from a gas detector. A device's
timeout and retries apply to its own requests. A silent unit goes BAD|COMM_FAILURE and is
probed on a growing interval (PlanExecutor); that survives reopening the port, because
reopening our end of the cable changes nothing about the slaves. A timeout never closes the
port; a serial error does, and then the runner reopens it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.framer import FramerType

from collector.base import SourceHealth
from collector.modbus.execute import PlanExecutor, send_request
from collector.modbus.plan import ModbusPoint, ReadRequest
from core.batch import ReadingBatch
from core.clock import Clock, SystemClock
from core.errors import SourceConfigError, SourceError
from core.plant import ModbusDevice, Parity

__all__ = ["ModbusBusSource", "silent_interval_s"]


def silent_interval_s(device: ModbusDevice) -> float:
    """The RTU inter-frame gap t3.5 (Modbus over Serial Line v1.02 §2.5.1.1)."""
    if device.baudrate > 19200:
        return 0.00175  # fixed above 19200 baud, so fast lines are not bound by UART timing
    bits = 1 + device.bytesize + (device.parity != Parity.NONE) + device.stopbits
    return 3.5 * bits / device.baudrate


@dataclass
class _Member:
    executor: PlanExecutor
    next_due: float = 0.0  # monotonic seconds; 0: read at the next tick


class ModbusBusSource:
    streaming = False

    def __init__(
        self, devices: Sequence[tuple[ModbusDevice, list[ModbusPoint]]], clock: Clock | None = None
    ) -> None:
        ports = {d.serial_port for d, _ in devices}
        if len(ports) != 1 or None in ports:
            raise SourceConfigError(
                f"an RTU bus is the devices of one serial port, got {sorted(map(str, ports))}"
            )
        line = devices[0][0]  # plant_checks: every device on the port has the same line settings
        assert line.serial_port is not None
        self.serial_port = line.serial_port
        self.line = line
        self.name = line.serial_port
        self.clock = clock or SystemClock()
        self.members = [_Member(PlanExecutor(d, p)) for d, p in devices]
        self.interval_s = min(d.poll_interval_s for d, _ in devices)
        self.tags = np.concatenate([m.executor.tags for m in self.members]).astype(np.int32)
        self.pause_s = max(line.pause_s, silent_interval_s(line))
        self._client: AsyncModbusSerialClient | None = None
        self._quiet_until = 0.0  # monotonic time before which the bus must stay silent

    async def open(self) -> None:
        d = self.line
        client = AsyncModbusSerialClient(
            self.serial_port,
            framer=FramerType.RTU,
            baudrate=d.baudrate,
            bytesize=d.bytesize,
            parity=d.parity.letter,
            stopbits=d.stopbits,
            timeout=d.timeout_s,
            retries=d.retries,
            reconnect_delay=0,  # the runner owns reopening
            name=self.serial_port,
        )
        # pymodbus closes the port after retries+3 unanswered requests in a row; on a bus that
        # only means some slaves are silent (pymodbus#1654), and the health logic handles them.
        client.set_max_no_responses(sys.maxsize)
        try:
            ok = await client.connect()
        except Exception as exc:  # pyserial raises termios.error / ValueError for refused settings
            client.close()
            raise SourceError(f"{self.name}: cannot open the serial port: {exc}") from exc
        if not ok:
            client.close()
            raise SourceError(f"{self.name}: cannot open the serial port")
        self._client = client
        for m in self.members:
            m.next_due = 0.0

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def health(self) -> SourceHealth:
        executors = [m.executor for m in self.members]
        return SourceHealth(
            {ex.name: ex.up for ex in executors},
            sum(ex.request_errors for ex in executors),
            [s for ex in executors for s in ex.samples(self.name)],
        )

    async def read(self) -> ReadingBatch:
        client = self._client
        if client is None:
            raise SourceError(f"{self.name}: not open")
        now = self.clock.monotonic()
        batches = []
        for m in self.members:
            if now < m.next_due - self.interval_s / 2:
                continue
            interval = m.executor.device.poll_interval_s
            # Keep the average interval; after a slow poll start again from now, never burst.
            m.next_due = m.next_due + interval if m.next_due + interval > now else now + interval
            send = partial(self._send, client, m.executor.device)
            batch = await m.executor.read(
                send, lambda: client.connected, self.clock.monotonic(), self.clock.now_us()
            )
            batches.append(batch)
        return ReadingBatch.concat(batches)

    async def _send(self, client: AsyncModbusSerialClient, device: ModbusDevice, r: ReadRequest) -> object:
        wait = self._quiet_until - self.clock.monotonic()
        if wait > 0:
            await self.clock.sleep(wait)
        # One client serves every device on the bus; pymodbus reads both per request.
        client.ctx.comm_params.timeout_connect = device.timeout_s
        client.ctx.retries = device.retries
        try:
            return await send_request(client, r)
        finally:
            self._quiet_until = self.clock.monotonic() + self.pause_s
