"""Engineering values -> Modbus register words and bits, vectorized per (table, type, byte order).

The inverse of what the Modbus collector decodes. Scaling is linear from the tag's
engineering range (``scale.eng``, else ``range``) to ``scale.raw`` (e.g. 4-20 mA as 0-27648
counts); integers are rounded and clipped to their type. Byte orders name the bytes of a
big-endian value A B C D (.. H for 64-bit): ABCD as is, DCBA all reversed, BADC bytes
swapped inside each word, CDAB word order reversed; a 16-bit value is ABCD/CDAB as is,
DCBA/BADC byte-swapped. A BAD reading is served as NaN (floats) or as a NAMUR NE43 style
failure signal below the raw range (integers; the type's maximum when that is not
representable), because Modbus itself has no quality.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.plant import ByteOrder, DataType, ModbusDevice, ModbusTable, Tag
from core.quality import is_bad

__all__ = ["ModbusMap", "UnitStore", "byte_permutation", "encode_words"]

_NUMPY = {
    DataType.INT16: ">i2",
    DataType.UINT16: ">u2",
    DataType.INT32: ">i4",
    DataType.UINT32: ">u4",
    DataType.FLOAT32: ">f4",
    DataType.FLOAT64: ">f8",
}
NE43_BELOW = 0.05  # failure signal 5 % of span below the raw range (≈ 3.2 mA on 4-20 mA)


def byte_permutation(order: ByteOrder, nbytes: int) -> np.ndarray:
    idx = np.arange(nbytes)
    if order == ByteOrder.DCBA:
        return idx[::-1].copy()
    if order == ByteOrder.BADC:
        return idx.reshape(-1, 2)[:, ::-1].ravel()
    if order == ByteOrder.CDAB:
        return idx.reshape(-1, 2)[::-1].ravel()
    return idx


def encode_words(raw: np.ndarray, dtype: DataType, order: ByteOrder) -> np.ndarray:
    """(n, width) uint16 register words for ``raw`` values already in the type's domain."""
    code = _NUMPY[dtype]
    nb = np.dtype(code).itemsize
    b = raw.astype(code).view(np.uint8).reshape(-1, nb)[:, byte_permutation(order, nb)]
    return np.ascontiguousarray(b).view(">u2").astype(np.uint16).reshape(-1, nb // 2)


@dataclass
class UnitStore:
    """One unit id's four tables, full 0..65535 address space."""

    holding: np.ndarray
    input: np.ndarray
    coil: np.ndarray
    discrete_input: np.ndarray

    @classmethod
    def empty(cls) -> UnitStore:
        return cls(
            *(np.zeros(65536, np.uint16) for _ in range(2)), *(np.zeros(65536, bool) for _ in range(2))
        )

    def table(self, t: ModbusTable) -> np.ndarray:
        return {
            ModbusTable.HOLDING: self.holding,
            ModbusTable.INPUT: self.input,
            ModbusTable.COIL: self.coil,
            ModbusTable.DISCRETE_INPUT: self.discrete_input,
        }[t]


@dataclass
class _Group:
    unit: int
    table: ModbusTable
    dtype: DataType
    order: ByteOrder
    idx: np.ndarray  # registry indexes
    targets: np.ndarray  # (n, width) register addresses
    raw_lo: np.ndarray
    gain: np.ndarray  # raw per engineering unit
    eng_lo: np.ndarray
    fail_raw: np.ndarray


class ModbusMap:
    """Every Modbus tag of a set of devices, grouped for one vectorized encode per group."""

    def __init__(self, devices: list[ModbusDevice], tags: list[tuple[int, Tag]]) -> None:
        by_id = {d.id: d for d in devices}
        self.stores: dict[int, UnitStore] = {}
        self.unit_device: dict[int, str] = {}
        rows: dict[tuple[int, ModbusTable, DataType, ByteOrder], list[tuple[int, Tag]]] = {}
        for d in devices:
            self.stores.setdefault(d.unit_id, UnitStore.empty())
            self.unit_device.setdefault(d.unit_id, d.id)
        for i, tag in tags:
            src, dev = tag.source, by_id[tag.source.device]
            unit = src.unit_id if src.unit_id is not None else dev.unit_id
            self.stores.setdefault(unit, UnitStore.empty())
            self.unit_device.setdefault(unit, dev.id)
            assert src.table is not None and src.type is not None  # plant_checks requires both
            key = (
                unit,
                ModbusTable(src.table),
                DataType(src.type),
                ByteOrder(src.byte_order or dev.byte_order),
            )
            rows.setdefault(key, []).append((i, tag))
        self.groups = [self._group(*k, v) for k, v in sorted(rows.items(), key=lambda kv: str(kv[0]))]

    @staticmethod
    def _group(
        unit: int, table: ModbusTable, dtype: DataType, order: ByteOrder, rows: list[tuple[int, Tag]]
    ) -> _Group:
        width = dtype.registers
        raw_lo, gain, eng_lo, fail = [], [], [], []
        for _, tag in rows:
            sc = tag.source.scale
            if sc is None or dtype == DataType.BOOL:
                raw_lo.append(0.0)
                gain.append(1.0)
                eng_lo.append(0.0)
                fail.append(np.nan)
                continue
            eng = sc.eng or tag.range or sc.raw
            raw_lo.append(sc.raw[0])
            gain.append((sc.raw[1] - sc.raw[0]) / (eng[1] - eng[0]))
            eng_lo.append(eng[0])
            fail.append(min(sc.raw) - NE43_BELOW * abs(sc.raw[1] - sc.raw[0]))
        addr = np.array([t.source.address for _, t in rows], np.int64)
        return _Group(
            unit, table, dtype, order,
            idx=np.array([i for i, _ in rows], np.int64),
            targets=addr[:, None] + np.arange(width)[None, :],
            raw_lo=np.array(raw_lo), gain=np.array(gain), eng_lo=np.array(eng_lo), fail_raw=np.array(fail),
        )  # fmt: skip

    def encode(self, value: np.ndarray, quality: np.ndarray) -> None:
        """Write the current engineering values into every unit's tables."""
        for g in self.groups:
            v = value[g.idx]
            bad = is_bad(quality[g.idx])
            arr = self.stores[g.unit].table(g.table)
            if g.dtype == DataType.BOOL:
                arr[g.targets[:, 0]] = v >= 0.5
                continue
            raw = g.raw_lo + (v - g.eng_lo) * g.gain
            if g.dtype in (DataType.FLOAT32, DataType.FLOAT64):
                raw = np.where(bad, np.nan, raw)
            else:
                info = np.iinfo(_NUMPY[g.dtype])
                fail = np.where(np.isnan(g.fail_raw) | (g.fail_raw < info.min), info.max, g.fail_raw)
                raw = np.clip(np.round(np.where(bad | np.isnan(raw), fail, raw)), info.min, info.max)
            arr[g.targets] = encode_words(raw, g.dtype, g.order)
