"""Vectorized Modbus decoding: concatenated register/bit buffers -> engineering values.

``Decoder.for_plan`` precomputes, per (type, byte order) group, the byte indexes of every
value in the wire buffer; decoding a poll is then one gather, one ``view`` as a big-endian
numpy dtype and one linear scale per group. Byte orders name the bytes of a 32-bit value
as sent: ABCD is the Modbus standard (big-endian words, high word first), CDAB swaps words,
BADC swaps bytes inside words, DCBA both. The rule extends to 64-bit values (word order
reversed / bytes swapped in each word) and to 16-bit values (BADC and DCBA swap the bytes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from collector.modbus.plan import BIT_TABLES, ReadPlan
from core.plant import ByteOrder, DataType

__all__ = ["Decoder", "encode_words"]

_DTYPES: dict[DataType, str] = {
    DataType.INT16: ">i2",
    DataType.UINT16: ">u2",
    DataType.INT32: ">i4",
    DataType.UINT32: ">u4",
    DataType.FLOAT32: ">f4",
    DataType.FLOAT64: ">f8",
}
_WORD_SWAP = {ByteOrder.CDAB, ByteOrder.DCBA}
_BYTE_SWAP = {ByteOrder.BADC, ByteOrder.DCBA}


def _byte_permutation(words: int, order: ByteOrder) -> np.ndarray:
    """Indexes into the wire bytes that yield the value's big-endian bytes."""
    perm = np.arange(words * 2).reshape(words, 2)
    if order in _WORD_SWAP:
        perm = perm[::-1]
    if order in _BYTE_SWAP:
        perm = perm[:, ::-1]
    return perm.reshape(-1)


@dataclass(frozen=True)
class _Group:
    dtype: str
    members: np.ndarray  # point indexes
    byte_idx: np.ndarray  # (members, bytes) into the wire buffer


@dataclass(frozen=True)
class Decoder:
    size: int
    groups: tuple[_Group, ...]
    bit_members: np.ndarray
    bit_pos: np.ndarray
    slope: np.ndarray
    offset: np.ndarray

    @classmethod
    def for_plan(cls, plan: ReadPlan) -> Decoder:
        by_type: dict[tuple[DataType, ByteOrder], list[int]] = {}
        bit_members: list[int] = []
        slope = np.ones(len(plan.points))
        offset = np.zeros(len(plan.points))
        for i, p in enumerate(plan.points):
            if p.table in BIT_TABLES:
                bit_members.append(i)
            else:
                by_type.setdefault((p.type, p.byte_order), []).append(i)
            if p.raw is not None and p.eng is not None:
                (r0, r1), (e0, e1) = p.raw, p.eng
                slope[i] = (e1 - e0) / (r1 - r0)
                offset[i] = e0 - r0 * slope[i]
        groups = []
        for (dtype, order), members in by_type.items():
            sel = np.array(members, dtype=np.int64)
            byte_idx = (plan.position[sel] * 2)[:, None] + _byte_permutation(dtype.registers, order)[None, :]
            groups.append(_Group(_DTYPES[dtype], sel, byte_idx))
        bits = np.array(bit_members, dtype=np.int64)
        return cls(len(plan.points), tuple(groups), bits, plan.position[bits], slope, offset)

    def __call__(self, words: np.ndarray, bits: np.ndarray) -> np.ndarray:
        """Values (float64, in plan point order) from the word (uint16) and bit (bool) buffers."""
        raw = np.empty(self.size, dtype=np.float64)
        wire = np.ascontiguousarray(words, dtype=">u2").view(np.uint8)  # 2 bytes per register, as sent
        for g in self.groups:
            raw[g.members] = wire[g.byte_idx].reshape(-1).view(g.dtype)
        if len(self.bit_members):
            raw[self.bit_members] = bits[self.bit_pos]
        return raw * self.slope + self.offset


def encode_words(value: float, dtype: DataType, order: ByteOrder) -> list[int]:
    """The registers a device sends for a raw ``value`` (the inverse of decoding; for tests)."""
    width = dtype.registers
    be = np.array([value]).astype(_DTYPES[dtype]).view(np.uint8)
    wire = np.empty(width * 2, dtype=np.uint8)
    wire[_byte_permutation(width, order)] = be
    return [int(w) for w in wire.view(">u2")]
