"""PlanExecutor: one device's compiled ReadPlan, executed over a link its source owns.

TCP (ModbusSource) and RTU (ModbusBusSource) differ only in how a request reaches the
wire; both hand ``read`` a ``send`` coroutine and a ``connected`` check. Requests go out
one at a time in plan order, and a plan holds read function codes only (1-4). A unit id
that stops answering is marked BAD|COMM_FAILURE and skipped for a growing while (at most
60 s), so a dead unit costs one timeout per probe, not one per poll, and never stalls the
other units; a lost link raises SourceError so the runner reopens the source.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymodbus.exceptions import ConnectionException, ModbusException

from collector.modbus.decode import Decoder
from collector.modbus.plan import ModbusPoint, ReadRequest, compile_plan, requests_by_unit
from core.batch import ReadingBatch
from core.errors import SourceError
from core.plant import ModbusDevice
from core.quality import Quality

__all__ = ["PlanExecutor", "Send", "send_request"]

log = logging.getLogger(__name__)

Send = Callable[[ReadRequest], Awaitable[Any]]

_EXCEPTION_QUALITY = {
    2: Quality.BAD_CONFIG_ERROR,  # illegal data address: the tag points at registers the device lacks
    3: Quality.BAD_CONFIG_ERROR,  # illegal data value (count)
    4: Quality.BAD_DEVICE_FAILURE,  # slave device failure
    11: Quality.BAD_COMM_FAILURE,  # gateway target failed to respond
}


async def send_request(client: Any, r: ReadRequest) -> Any:
    """One read request on a pymodbus async client (TCP or serial): the only call we make."""
    call = {
        1: client.read_coils,
        2: client.read_discrete_inputs,
        3: client.read_holding_registers,
        4: client.read_input_registers,
    }[r.function_code]
    return await call(r.start, count=r.count, slave=r.unit_id)


@dataclass
class _UnitHealth:
    retry_at: float = 0.0
    failures: int = 0


class PlanExecutor:
    def __init__(self, device: ModbusDevice, points: list[ModbusPoint]) -> None:
        self.device = device
        self.name = device.id
        self.plan = compile_plan(points, device.max_registers, device.max_bits, device.gap_tolerance)
        self.decode = Decoder.for_plan(self.plan)
        self.tags = self.plan.tags
        self._units = requests_by_unit(self.plan)
        self._unit_of_point = np.array([p.unit_id for p in self.plan.points], dtype=np.int32)
        self._health = {u: _UnitHealth() for u in self._units}
        self._reported: set[tuple[int, int]] = set()  # (request, exception code) already logged

    def reset(self) -> None:
        """Probe every unit at the next read (a fresh connection may reach them again)."""
        for h in self._health.values():
            h.retry_at, h.failures = 0.0, 0

    async def read(self, send: Send, connected: Callable[[], bool], now: float, ts_us: int) -> ReadingBatch:
        words = np.zeros(self.plan.word_count, dtype=np.uint16)
        bits = np.zeros(self.plan.bit_count, dtype=bool)
        quality = np.full(len(self.plan.points), Quality.GOOD, dtype=np.uint8)
        for unit, request_ids in self._units.items():
            health = self._health[unit]
            if now < health.retry_at:
                quality[self._unit_of_point == unit] = Quality.BAD_COMM_FAILURE
                continue
            for i in request_ids:
                r = self.plan.requests[i]
                try:
                    resp = await send(r)
                except ConnectionException as exc:
                    raise SourceError(f"{self.name}: connection lost: {exc}") from exc
                except ModbusException as exc:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        # pymodbus turns our cancellation (runner watchdog) into an IO error.
                        raise asyncio.CancelledError from exc
                    if not connected():
                        raise SourceError(f"{self.name}: connection lost: {exc}") from exc
                    self._unit_failed(unit, health, now, exc)
                    quality[self._unit_of_point == unit] = Quality.BAD_COMM_FAILURE
                    break
                if resp.isError():
                    code = int(getattr(resp, "exception_code", 0))
                    quality[self.plan.request_of == i] = _EXCEPTION_QUALITY.get(code, Quality.BAD)
                    self._report(i, code, f"exception {code} reading {self._describe(r)}")
                    continue
                data = resp.bits if r.is_bits else resp.registers
                if len(data) < r.count:
                    # A malformed (short) answer: those points are BAD, the rest of the poll stands.
                    quality[self.plan.request_of == i] = Quality.BAD_DEVICE_FAILURE
                    self._report(
                        i, -1, f"short response ({len(data)} of {r.count} values) for {self._describe(r)}"
                    )
                    continue
                (bits if r.is_bits else words)[r.offset : r.offset + r.count] = data[: r.count]
            else:
                if health.failures:
                    log.warning("%s unit %d answers again", self.name, unit)
                health.failures = 0
        values = self.decode(words, bits)
        values[quality != Quality.GOOD] = np.nan  # nothing was read for those points
        # A transmitter reporting NaN/inf is failed, whatever the link says.
        quality[~np.isfinite(values) & (quality == Quality.GOOD)] = Quality.BAD_SENSOR_FAILURE
        return ReadingBatch(self.tags, np.full(len(values), ts_us, dtype=np.int64), values, quality)

    def _describe(self, r: ReadRequest) -> str:
        return f"unit {r.unit_id} {r.table.value} {r.start}..{r.start + r.count - 1}"

    def _report(self, request: int, code: int, message: str) -> None:
        if (request, code) not in self._reported:  # once per request and kind, not every poll
            self._reported.add((request, code))
            log.error("%s: %s; its tags are BAD", self.name, message)

    def _unit_failed(self, unit: int, health: _UnitHealth, now: float, exc: Exception) -> None:
        health.failures += 1
        # Skip a silent unit for a growing while (max 60 s) before probing it again.
        health.retry_at = now + min(60.0, self.device.poll_interval_s * 2 ** min(health.failures, 6))
        if health.failures == 1:
            log.error(
                "%s unit %d does not answer (%s); its tags are BAD, probing again later", self.name, unit, exc
            )
