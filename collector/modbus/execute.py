"""PlanExecutor: one device's compiled ReadPlan, executed over a link its source owns.

TCP (ModbusSource) and RTU (ModbusBusSource) differ only in how a request reaches the
wire; both hand ``read`` a ``send`` coroutine and a ``connected`` check. Requests go out
one at a time in plan order, and a plan holds read function codes only (1-4).

Failures are as narrow as the evidence: a unit id that answers nothing (no response, or a
gateway's exception 10/11) to its first request *and* to the next one is marked
BAD|COMM_FAILURE and skipped for a growing while (at most 60 s), so a dead unit costs at
most two timeouts per probe, not two per poll, and never stalls the other units (the second
try keeps a device that silently drops one function code from hiding all its registers); a
request that fails while its unit answered others in the same poll marks only that
request's points and is itself skipped for a growing while; a lost link raises SourceError
so the runner reopens the source. A failing request is logged once, and again if it fails
after having worked. Health per unit (up, consecutive
failures, last success) and error counts per request group feed ``/metrics``.

With a heartbeat (a register that must change) or ``max_silence_s`` (some value must
change), a device whose values stop moving is tripped (collector/liveness.py): every point
BAD|COMM_FAILURE until the heartbeat or a value moves again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymodbus.exceptions import ConnectionException, ModbusException

from collector.base import cancelled_by_us
from collector.liveness import Liveness
from collector.modbus.decode import Decoder
from collector.modbus.plan import ModbusPoint, ReadRequest, compile_plan, requests_by_unit
from core.backoff import Backoff
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
}
# A gateway answering for a unit behind it that does not answer: the unit is silent.
_NO_ANSWER_CODES = {10, 11}  # gateway path unavailable, gateway target device failed to respond
MAX_SKIP_S = 60.0


def skip_policy(poll_interval_s: float) -> Backoff:
    """How long a silent unit or request is skipped after its n-th consecutive failure:
    ``poll_interval_s * 2**n`` (n from 1), at most 64 polls and at most MAX_SKIP_S.

    No jitter: the window only decides which later poll probes again, and polls already run
    at the device's own cadence, so probes cannot pile up in step."""
    cap = min(MAX_SKIP_S, 64 * poll_interval_s)
    return Backoff(min(2 * poll_interval_s, cap), cap)


class _NoAnswer(Exception):
    """A request the unit did not answer (timeout, or a gateway's exception 10/11)."""


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
class _Health:
    """One unit or one request group: skip window, consecutive failures, totals."""

    retry_at: float = 0.0  # monotonic: skipped until then
    failures: int = 0  # consecutive failed probes
    errors: int = 0  # failed requests, total
    last_ok_us: int = 0  # last answer (UTC µs), 0: never

    def skip(self, now: float, policy: Backoff) -> None:
        self.failures += 1
        self.retry_at = now + policy.delay(self.failures - 1)


class PlanExecutor:
    def __init__(self, device: ModbusDevice, points: list[ModbusPoint]) -> None:
        self.device = device
        self.name = device.id
        self.plan = compile_plan(points, device.max_registers, device.max_bits, device.gap_tolerance)
        self.decode = Decoder.for_plan(self.plan)
        self.tags = self.plan.tags
        self._units = requests_by_unit(self.plan)
        self._unit_of_point = np.array([p.unit_id for p in self.plan.points], dtype=np.int32)
        self._health = {u: _Health() for u in self._units}
        self._skip = skip_policy(device.poll_interval_s)
        self._requests = [_Health() for _ in self.plan.requests]
        self._reported: dict[int, set[int]] = {}  # request -> failure kinds logged since it last worked
        self._heartbeat: ReadRequest | None = None
        self._heartbeat_decode: Decoder | None = None
        self._heartbeat_value: float | None = None
        self._previous: np.ndarray | None = None  # last values, for max_silence_s
        self.liveness: Liveness | None = None
        hb = device.heartbeat
        if hb is not None:
            point = ModbusPoint(
                -1,
                device.unit_id if hb.unit_id is None else hb.unit_id,
                hb.table,
                hb.address,
                hb.data_type,
                hb.byte_order or device.byte_order,
            )
            hb_plan = compile_plan([point])
            self._heartbeat, self._heartbeat_decode = hb_plan.requests[0], Decoder.for_plan(hb_plan)
            what = f"heartbeat unit {point.unit_id} {hb.table.value} {hb.address}"
            self.liveness = Liveness(self.name, hb.max_age_s, what)
        elif device.max_silence_s is not None:
            self.liveness = Liveness(self.name, device.max_silence_s, "every value")

    def reset(self) -> None:
        """Probe every unit and request at the next read (a fresh connection may reach them again)."""
        for h in [*self._health.values(), *self._requests]:
            h.retry_at, h.failures = 0.0, 0

    @property
    def up(self) -> bool:
        """Every unit answers and the device's data are live."""
        live = self.liveness is None or not self.liveness.tripped
        return live and all(h.failures == 0 for h in self._health.values())

    @property
    def request_errors(self) -> int:
        return sum(h.errors for h in self._requests)

    async def read(self, send: Send, connected: Callable[[], bool], now: float, ts_us: int) -> ReadingBatch:
        words = np.zeros(self.plan.word_count, dtype=np.uint16)
        bits = np.zeros(self.plan.bit_count, dtype=bool)
        quality = np.full(len(self.plan.points), Quality.GOOD, dtype=np.uint8)
        for unit, request_ids in self._units.items():
            health = self._health[unit]
            if now < health.retry_at:
                quality[self._unit_of_point == unit] = Quality.BAD_COMM_FAILURE
                continue
            answered = silent = False
            first_miss: tuple[int, _NoAnswer] | None = None  # a no-answer before the unit answered anything
            for k, i in enumerate(request_ids):
                r, req = self.plan.requests[i], self._requests[i]
                if now < req.retry_at:
                    quality[self.plan.request_of == i] = Quality.BAD_COMM_FAILURE
                    continue
                try:
                    data = await self._request(send, connected, r, i)
                except _NoAnswer as exc:
                    req.errors += 1
                    quality[self.plan.request_of == i] = Quality.BAD_COMM_FAILURE
                    if not answered:
                        if first_miss is None:  # silent unit, or a request it drops? Try the next one once.
                            first_miss = (i, exc)
                            continue
                        for j in request_ids[k:]:  # two requests unanswered: the unit is silent
                            quality[self.plan.request_of == j] = Quality.BAD_COMM_FAILURE
                        silent = True
                        self._unit_failed(unit, health, now, exc)
                        break
                    self._request_failed(i, exc, now)  # the unit answers others: only this one's points
                    continue
                answered = True
                if isinstance(data, Quality):
                    req.errors += 1
                    quality[self.plan.request_of == i] = data
                    continue
                req.failures, req.last_ok_us = 0, ts_us
                self._recovered(i, r)
                (bits if r.is_bits else words)[r.offset : r.offset + r.count] = data[: r.count]
            if first_miss is not None and not silent:
                if answered:
                    self._request_failed(*first_miss, now=now)
                else:  # its only request (or the only one not skipped) got no answer
                    silent = True
                    self._unit_failed(unit, health, now, first_miss[1])
            if not silent:
                if health.failures:
                    log.warning("%s unit %d answers again", self.name, unit)
                health.failures = 0
            if answered:
                health.last_ok_us = ts_us
        values = self.decode(words, bits)
        values[quality != Quality.GOOD] = np.nan  # nothing was read for those points
        # A transmitter reporting NaN/inf is failed, whatever the link says.
        quality[~np.isfinite(values) & (quality == Quality.GOOD)] = Quality.BAD_SENSOR_FAILURE
        if self.liveness is not None and not self.liveness.observe(
            now, await self._sign(send, connected, values)
        ):
            quality[:] = Quality.BAD_COMM_FAILURE
            values[:] = np.nan
        return ReadingBatch(self.tags, np.full(len(values), ts_us, dtype=np.int64), values, quality)

    async def _request(self, send: Send, connected: Callable[[], bool], r: ReadRequest, i: int) -> Any:
        """The request's data; a Quality for an answer without usable data; _NoAnswer if none came."""
        try:
            resp = await send(r)
        except ConnectionException as exc:
            raise SourceError(f"{self.name}: connection lost: {exc}") from exc
        except ModbusException as exc:
            if cancelled_by_us():
                # pymodbus turns our cancellation (runner watchdog) into an IO error.
                raise asyncio.CancelledError from exc
            if not connected():
                raise SourceError(f"{self.name}: connection lost: {exc}") from exc
            raise _NoAnswer(str(exc) or type(exc).__name__) from exc
        if resp.isError():
            code = int(getattr(resp, "exception_code", 0))
            if code in _NO_ANSWER_CODES:
                raise _NoAnswer(f"gateway exception {code}")
            self._report(i, code, f"exception {code} reading {self._describe(r)}")
            return _EXCEPTION_QUALITY.get(code, Quality.BAD)
        data = resp.bits if r.is_bits else resp.registers
        if len(data) < r.count:
            # A malformed (short) answer: those points are BAD, the rest of the poll stands.
            self._report(i, -1, f"short response ({len(data)} of {r.count} values) for {self._describe(r)}")
            return Quality.BAD_DEVICE_FAILURE
        return data

    async def _sign(self, send: Send, connected: Callable[[], bool], values: np.ndarray) -> bool:
        """Did the device prove alive in this poll (its heartbeat, or else any value, changed)?"""
        if self._heartbeat is None or self._heartbeat_decode is None:
            previous, self._previous = self._previous, values.copy()
            if previous is None:
                return False
            both = np.isfinite(values) & np.isfinite(previous)
            return bool((values[both] != previous[both]).any())
        r = self._heartbeat
        unit = self._health.get(r.unit_id)
        if unit is not None and unit.failures:
            return False  # its unit is silent: no news, and no extra timeout
        try:
            data = await self._request(send, connected, r, -1)
        except _NoAnswer:
            return False
        if isinstance(data, Quality):
            return False
        self._recovered(-1, r)
        words = np.zeros(0 if r.is_bits else r.count, dtype=np.uint16)
        bits = np.zeros(r.count if r.is_bits else 0, dtype=bool)
        (bits if r.is_bits else words)[:] = data[: r.count]
        value = float(self._heartbeat_decode(words, bits)[0])
        before, self._heartbeat_value = self._heartbeat_value, value
        return before is not None and value != before

    def samples(self, source: str) -> list[tuple[str, dict[str, str], float]]:
        """Per-unit health and per-request-group error counts, as metric samples."""
        out: list[tuple[str, dict[str, str], float]] = []
        for unit, h in self._health.items():
            labels = {"source": source, "device": self.name, "unit": str(unit)}
            out += [
                ("hazardwatch_modbus_unit_up", labels, float(h.failures == 0)),
                ("hazardwatch_modbus_unit_consecutive_failures", labels, float(h.failures)),
                ("hazardwatch_modbus_unit_last_success_timestamp_seconds", labels, h.last_ok_us / 1e6),
            ]
        for r, h in zip(self.plan.requests, self._requests, strict=True):
            labels = {
                "source": source,
                "device": self.name,
                "unit": str(r.unit_id),
                "table": r.table.value,
                "start": str(r.start),
                "count": str(r.count),
            }
            out.append(("hazardwatch_modbus_request_errors_total", labels, float(h.errors)))
        return out

    def _describe(self, r: ReadRequest) -> str:
        return f"unit {r.unit_id} {r.table.value} {r.start}..{r.start + r.count - 1}"

    def _report(self, request: int, code: int, message: str) -> None:
        kinds = self._reported.setdefault(request, set())
        if code not in kinds:  # once per request and kind until it works again, not every poll
            kinds.add(code)
            log.error("%s: %s; its tags are BAD", self.name, message)

    def _recovered(self, request: int, r: ReadRequest) -> None:
        if self._reported.pop(request, None):
            log.warning("%s: %s works again", self.name, self._describe(r))

    def _request_failed(self, i: int, exc: Exception, now: float) -> None:
        """No answer to one request of a unit that answers others: skip it a growing while."""
        self._requests[i].skip(now, self._skip)
        self._report(i, -2, f"no answer to {self._describe(self.plan.requests[i])} ({exc})")

    def _unit_failed(self, unit: int, health: _Health, now: float, exc: Exception) -> None:
        # Skip a silent unit for a growing while (max 60 s) before probing it again.
        health.skip(now, self._skip)
        if health.failures == 1:
            log.error(
                "%s unit %d does not answer (%s); its tags are BAD, probing again later", self.name, unit, exc
            )
