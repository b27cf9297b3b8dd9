"""Modbus read plan: tags compiled once into the fewest read requests.

Points on the same unit id and table are sorted by address and merged into one request
while the request stays within the protocol maximum (125 registers / 2000 bits, or the
device's lower setting) and the hole between two points is at most ``gap_tolerance``.
Each point remembers where its first word sits in the concatenated response buffer, so
decoding is a handful of numpy gathers (collector/modbus/decode.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from operator import attrgetter

import numpy as np

from core.plant import ByteOrder, DataType, ModbusDevice, ModbusTable, Plant
from core.registry import TagRegistry

__all__ = ["FUNCTION_CODES", "ModbusPoint", "ReadPlan", "ReadRequest", "compile_plan", "points_for_device"]

# Read function codes only: HazardWatch never writes to a plant device (DESIGN.md principle 1).
FUNCTION_CODES: dict[ModbusTable, int] = {
    ModbusTable.COIL: 1,
    ModbusTable.DISCRETE_INPUT: 2,
    ModbusTable.HOLDING: 3,
    ModbusTable.INPUT: 4,
}
BIT_TABLES = frozenset({ModbusTable.COIL, ModbusTable.DISCRETE_INPUT})
_REGISTERS = {t: t.registers for t in DataType}  # DataType.registers builds a dict per call


@dataclass(frozen=True, slots=True)  # slots: a province builds 60,000 of them per compile
class ModbusPoint:
    """One tag's Modbus binding, resolved against its device's defaults."""

    index: int  # dense registry index
    unit_id: int
    table: ModbusTable
    address: int
    type: DataType
    byte_order: ByteOrder = ByteOrder.ABCD
    raw: tuple[float, float] | None = None  # linear scaling raw -> eng
    eng: tuple[float, float] | None = None

    @property
    def width(self) -> int:
        return _REGISTERS[self.type]


@dataclass(frozen=True)
class ReadRequest:
    unit_id: int
    table: ModbusTable
    start: int
    count: int
    offset: int  # where this response starts in its (bit or word) buffer

    @property
    def function_code(self) -> int:
        return FUNCTION_CODES[self.table]

    @property
    def is_bits(self) -> bool:
        return self.table in BIT_TABLES


@dataclass(frozen=True)
class ReadPlan:
    requests: tuple[ReadRequest, ...]
    points: tuple[ModbusPoint, ...]
    request_of: np.ndarray  # int32 per point: which request carries it
    position: np.ndarray  # int64 per point: first word/bit in its buffer
    word_count: int
    bit_count: int

    @property
    def tags(self) -> np.ndarray:
        return np.array([p.index for p in self.points], dtype=np.int32)


def compile_plan(
    points: Iterable[ModbusPoint], max_registers: int = 125, max_bits: int = 2000, gap_tolerance: int = 8
) -> ReadPlan:
    pts = sorted(points, key=attrgetter("unit_id", "table", "address"))  # a StrEnum sorts as its value
    requests: list[ReadRequest] = []
    request_of: list[int] = []
    position: list[int] = []
    offsets = {False: 0, True: 0}  # next free slot in the word and bit buffers
    cur: list[int] | None = None  # [unit, table-index, start, end)
    cur_key: tuple[int, ModbusTable] | None = None

    def close() -> None:
        nonlocal cur
        if cur is not None and cur_key is not None:
            is_bits = cur_key[1] in BIT_TABLES
            requests.append(ReadRequest(cur_key[0], cur_key[1], cur[0], cur[1] - cur[0], offsets[is_bits]))
            offsets[is_bits] += cur[1] - cur[0]
        cur = None

    for p in pts:
        key = (p.unit_id, p.table)
        limit = max_bits if p.table in BIT_TABLES else max_registers
        end = p.address + p.width
        if (
            cur is None
            or key != cur_key
            or p.address - cur[1] > gap_tolerance
            or max(end, cur[1]) - cur[0] > limit
        ):
            close()
            cur, cur_key = [p.address, end], key
        else:
            cur[1] = max(cur[1], end)
        request_of.append(len(requests))
        position.append(p.address - cur[0])  # relative for now; made absolute below
    close()
    rel = np.array(position, dtype=np.int64)
    req_idx = np.array(request_of, dtype=np.int32)
    base = np.array([r.offset for r in requests], dtype=np.int64)
    return ReadPlan(
        requests=tuple(requests),
        points=tuple(pts),
        request_of=req_idx,
        position=rel + (base[req_idx] if len(pts) else 0),
        word_count=offsets[False],
        bit_count=offsets[True],
    )


def points_for_device(
    plant: Plant, registry: TagRegistry, device: ModbusDevice, indexes: Iterable[int] | None = None
) -> list[ModbusPoint]:
    """The Modbus points of every tag bound to ``device``, device defaults applied.
    ``indexes``: the registry indexes of the device's tags, when the caller has grouped them
    (a province's devices each scanning every tag is quadratic)."""
    out: list[ModbusPoint] = []
    # (no local holding every tag: compile_all reads the failing tag from this frame's locals)
    for i in range(len(registry.tags)) if indexes is None else indexes:
        tag = registry.tags[i]
        src = tag.source
        if src.device != device.id:
            continue
        assert src.table is not None and src.address is not None and src.type is not None
        raw = eng = None
        if src.scale is not None:
            raw = src.scale.raw
            eng = src.scale.eng or tag.range
        out.append(
            ModbusPoint(
                index=i,
                unit_id=src.unit_id if src.unit_id is not None else device.unit_id,
                table=src.table,
                address=src.address,
                type=src.type,
                byte_order=src.byte_order or device.byte_order,
                raw=raw,
                eng=eng,
            )
        )
    return out


def requests_by_unit(plan: ReadPlan) -> dict[int, list[int]]:
    """Request indexes per unit id (a dead unit is skipped without stalling the others)."""
    out: dict[int, list[int]] = {}
    for i, r in enumerate(plan.requests):
        out.setdefault(r.unit_id, []).append(i)
    return out
