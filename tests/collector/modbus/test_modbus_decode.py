"""Modbus read plans and vectorized decoding: golden cases as data folders, plus plan tables.

Each ``testcases/<name>/case.yaml`` holds register images exactly as a device sends them
and the engineering value every point must decode to; a regression test needs no code.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from collector.modbus.decode import Decoder, encode_words
from collector.modbus.plan import ModbusPoint, ReadPlan, compile_plan
from core.plant import ByteOrder, DataType, ModbusTable

CASES = sorted((Path(__file__).parent / "testcases").iterdir())


def _point(i: int, spec: dict[str, Any]) -> ModbusPoint:
    scale = spec.get("scale") or {}
    return ModbusPoint(
        index=i,
        unit_id=spec.get("unit_id", 1),
        table=ModbusTable(spec.get("table", "HOLDING")),
        address=spec["address"],
        type=DataType(spec["type"]),
        byte_order=ByteOrder(spec.get("byte_order", "ABCD")),
        raw=tuple(scale["raw"]) if scale else None,
        eng=tuple(scale["eng"]) if scale else None,
    )


def _responses(plan: ReadPlan, images: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """What the device answers to each request of the plan, concatenated like the source does."""
    memory: dict[tuple[int, str, int], int] = {}
    for image in images:
        for k, v in enumerate(image["values"]):
            memory[(image["unit_id"], image["table"], image["start"] + k)] = v
    words = np.zeros(plan.word_count, dtype=np.uint16)
    bits = np.zeros(plan.bit_count, dtype=bool)
    for r in plan.requests:
        data = [memory.get((r.unit_id, r.table.value, r.start + k), 0) for k in range(r.count)]
        (bits if r.is_bits else words)[r.offset : r.offset + r.count] = data
    return words, bits


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden_decode_case(case: Path) -> None:
    spec = yaml.safe_load((case / "case.yaml").read_text(encoding="utf-8"))
    points = [_point(i, p) for i, p in enumerate(spec["points"])]
    plan = compile_plan(points)
    values = Decoder.for_plan(plan)(*_responses(plan, spec["registers"]))
    by_index = dict(zip((p.index for p in plan.points), values.tolist(), strict=True))
    for i, p in enumerate(spec["points"]):
        got, want = by_index[i], float(p["expect"])
        if math.isnan(want):
            assert math.isnan(got), f"{case.name} point {i}: expected NaN, got {got}"
        else:
            assert got == pytest.approx(want, rel=1e-12, abs=1e-12), (
                f"{case.name} point {i} at {p['address']}"
            )


def _hr(index: int, address: int, dtype: DataType = DataType.UINT16, unit: int = 1) -> ModbusPoint:
    return ModbusPoint(index, unit, ModbusTable.HOLDING, address, dtype)


@pytest.mark.parametrize(
    ("points", "options", "expected"),
    [
        # contiguous registers merge into one request
        ([_hr(0, 0), _hr(1, 1), _hr(2, 2, DataType.FLOAT32)], {}, [(1, "HOLDING", 0, 4)]),
        # a hole within the gap tolerance is read through; a wider one splits
        ([_hr(0, 0), _hr(1, 9)], {"gap_tolerance": 8}, [(1, "HOLDING", 0, 10)]),
        ([_hr(0, 0), _hr(1, 10)], {"gap_tolerance": 8}, [(1, "HOLDING", 0, 1), (1, "HOLDING", 10, 1)]),
        # the request size limit splits even contiguous registers
        ([_hr(i, i) for i in range(130)], {}, [(1, "HOLDING", 0, 125), (1, "HOLDING", 125, 5)]),
        (
            [_hr(0, 0), _hr(1, 1, DataType.FLOAT64)],
            {"max_registers": 4},
            [(1, "HOLDING", 0, 1), (1, "HOLDING", 1, 4)],
        ),
        # unit ids and tables never share a request
        (
            [_hr(0, 0, unit=2), _hr(1, 1, unit=1), ModbusPoint(2, 1, ModbusTable.INPUT, 2, DataType.INT16)],
            {},
            [(1, "HOLDING", 1, 1), (1, "INPUT", 2, 1), (2, "HOLDING", 0, 1)],
        ),
        # bits: 2000 per request
        (
            [ModbusPoint(i, 1, ModbusTable.COIL, i * 10, DataType.BOOL) for i in range(250)],
            {"gap_tolerance": 9},
            [(1, "COIL", 0, 1991), (1, "COIL", 2000, 491)],
        ),
    ],
)
def test_plan_merges_into_fewest_requests(
    points: list[ModbusPoint], options: dict[str, int], expected: list[tuple[int, str, int, int]]
) -> None:
    plan = compile_plan(points, **options)
    assert [(r.unit_id, r.table.value, r.start, r.count) for r in plan.requests] == expected
    assert {r.function_code for r in plan.requests} <= {1, 2, 3, 4}  # read function codes only


def test_overlapping_points_share_registers() -> None:
    # Two tags reading the same registers (e.g. a float and its raw high word) decode independently.
    plan = compile_plan([_hr(0, 0, DataType.FLOAT32), _hr(1, 0, DataType.UINT16)])
    assert [(r.start, r.count) for r in plan.requests] == [(0, 2)]
    words = np.array(encode_words(1.5, DataType.FLOAT32, ByteOrder.ABCD), dtype=np.uint16)
    assert Decoder.for_plan(plan)(words, np.zeros(0, bool)).tolist() == [1.5, 0x3FC0]


@pytest.mark.parametrize("order", list(ByteOrder))
@pytest.mark.parametrize("dtype", [d for d in DataType if d is not DataType.BOOL])
def test_encode_is_the_inverse_of_decode(dtype: DataType, order: ByteOrder) -> None:
    value = {"INT16": -1234, "UINT16": 54321, "INT32": -98765432, "UINT32": 3_000_000_000}.get(
        dtype.value, -1.25
    )
    plan = compile_plan([ModbusPoint(0, 1, ModbusTable.HOLDING, 0, dtype, order)])
    words = np.array(encode_words(value, dtype, order), dtype=np.uint16)
    assert Decoder.for_plan(plan)(words, np.zeros(0, bool))[0] == value
