"""ModbusSource: executes a compiled ReadPlan against one Modbus TCP device.

Only read function codes (1-4) are ever sent; the plan cannot express anything else.
Timestamps are gather time (Modbus carries none). A unit id that stops answering is marked
BAD|COMM_FAILURE and skipped for a while, so one dead unit behind a gateway does not cost
a timeout on every poll of the healthy ones; a lost TCP connection fails the whole source
and the runner reconnects. pymodbus is imported nowhere else in HazardWatch's collector.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException

from collector.modbus.decode import Decoder
from collector.modbus.plan import ModbusPoint, ReadRequest, compile_plan, requests_by_unit
from core.batch import ReadingBatch
from core.clock import Clock, SystemClock
from core.errors import SourceError
from core.plant import ModbusDevice
from core.quality import Quality

__all__ = ["ModbusSource"]

log = logging.getLogger(__name__)

_EXCEPTION_QUALITY = {
    2: Quality.BAD_CONFIG_ERROR,  # illegal data address: the tag points at registers the device lacks
    3: Quality.BAD_CONFIG_ERROR,  # illegal data value (count)
    4: Quality.BAD_DEVICE_FAILURE,  # slave device failure
    11: Quality.BAD_COMM_FAILURE,  # gateway target failed to respond
}


@dataclass
class _UnitHealth:
    retry_at: float = 0.0
    failures: int = 0


class ModbusSource:
    streaming = False

    def __init__(self, device: ModbusDevice, points: list[ModbusPoint], clock: Clock | None = None) -> None:
        self.device = device
        self.name = device.id
        self.interval_s = device.poll_interval_s
        self.clock = clock or SystemClock()
        self.plan = compile_plan(points, device.max_registers, device.max_bits, device.gap_tolerance)
        self.decode = Decoder.for_plan(self.plan)
        self.tags = self.plan.tags
        self._units = requests_by_unit(self.plan)
        self._unit_of_point = np.array([p.unit_id for p in self.plan.points], dtype=np.int32)
        self._health = {u: _UnitHealth() for u in self._units}
        self._client: AsyncModbusTcpClient | None = None
        self._reported: set[tuple[int, int]] = set()  # (request, exception code) already logged

    async def open(self) -> None:
        d = self.device
        # reconnect_delay=0: pymodbus must not reconnect behind our back; the runner owns that.
        client = AsyncModbusTcpClient(
            d.host, port=d.port, timeout=d.timeout_s, retries=d.retries, reconnect_delay=0
        )
        try:
            ok = await client.connect()
        except (OSError, ModbusException) as exc:
            client.close()
            raise SourceError(f"{self.name}: cannot connect to {d.host}:{d.port}: {exc}") from exc
        if not ok:
            client.close()
            raise SourceError(f"{self.name}: cannot connect to {d.host}:{d.port}")
        self._client = client
        for h in self._health.values():
            h.retry_at, h.failures = 0.0, 0

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _request(self, r: ReadRequest) -> object:
        assert self._client is not None
        c = self._client
        call = {
            1: c.read_coils,
            2: c.read_discrete_inputs,
            3: c.read_holding_registers,
            4: c.read_input_registers,
        }[r.function_code]
        return await call(r.start, count=r.count, slave=r.unit_id)

    async def read(self) -> ReadingBatch:
        if self._client is None:
            raise SourceError(f"{self.name}: not open")
        ts = self.clock.now_us()
        words = np.zeros(self.plan.word_count, dtype=np.uint16)
        bits = np.zeros(self.plan.bit_count, dtype=bool)
        quality = np.full(len(self.plan.points), Quality.GOOD, dtype=np.uint8)
        now = self.clock.monotonic()
        for unit, request_ids in self._units.items():
            health = self._health[unit]
            if now < health.retry_at:
                quality[self._unit_of_point == unit] = Quality.BAD_COMM_FAILURE
                continue
            for i in request_ids:
                r = self.plan.requests[i]
                try:
                    resp = await self._request(r)
                except ConnectionException as exc:
                    raise SourceError(f"{self.name}: connection lost: {exc}") from exc
                except ModbusException as exc:
                    if self._client is None or not self._client.connected:
                        raise SourceError(f"{self.name}: connection lost: {exc}") from exc
                    self._unit_failed(unit, health, now, exc)
                    quality[self._unit_of_point == unit] = Quality.BAD_COMM_FAILURE
                    break
                if resp.isError():  # type: ignore[attr-defined]
                    code = int(getattr(resp, "exception_code", 0))
                    quality[self.plan.request_of == i] = _EXCEPTION_QUALITY.get(code, Quality.BAD)
                    self._report(i, code, f"exception {code} reading {self._describe(r)}")
                    continue
                data = resp.bits if r.is_bits else resp.registers  # type: ignore[attr-defined]
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
        return ReadingBatch(self.tags, np.full(len(values), ts, dtype=np.int64), values, quality)

    def _describe(self, r: ReadRequest) -> str:
        return f"unit {r.unit_id} {r.table.value} {r.start}..{r.start + r.count - 1}"

    def _report(self, request: int, code: int, message: str) -> None:
        if (request, code) not in self._reported:  # once per request and kind, not every poll
            self._reported.add((request, code))
            log.error("%s: %s; its tags are BAD", self.name, message)

    def _unit_failed(self, unit: int, health: _UnitHealth, now: float, exc: Exception) -> None:
        health.failures += 1
        # Skip a silent unit for a growing while (max 60 s) before probing it again.
        health.retry_at = now + min(60.0, self.interval_s * 2 ** min(health.failures, 6))
        if health.failures == 1:
            log.error(
                "%s unit %d does not answer (%s); its tags are BAD, probing again later", self.name, unit, exc
            )
