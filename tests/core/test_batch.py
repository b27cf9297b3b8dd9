"""ReadingBatch: construction, validation, views; last_per_tag against a scalar reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.batch import ReadingBatch
from core.errors import BatchError


def _arrays(n: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.arange(n, dtype=np.int32),
        np.arange(n, dtype=np.int64) * 1000,
        np.linspace(0, 1, n),
        np.full(n, 0xC0, dtype=np.uint8),
    )


def test_arrays_are_read_only_and_detached_from_the_caller() -> None:
    tag, ts, value, quality = _arrays()
    batch = ReadingBatch(tag, ts, value, quality)
    value[0] = 99.0
    assert batch.value[0] == 0.0
    with pytest.raises(ValueError, match="read-only"):
        batch.value[0] = 1.0


@pytest.mark.parametrize(
    ("field", "bad", "message"),
    [
        ("tag", np.arange(3, dtype=np.int64), "ReadingBatch.tag: expected dtype int32"),
        ("ts", np.arange(3, dtype=np.float64), "ReadingBatch.ts: expected dtype int64"),
        ("value", np.arange(3, dtype=np.float32), "ReadingBatch.value: expected dtype float64"),
        ("quality", np.arange(3, dtype=np.int16), "ReadingBatch.quality: expected dtype uint8"),
        ("value", np.zeros((3, 1)), "expected a 1-d array"),
        ("ts", np.arange(4, dtype=np.int64), "arrays differ in length"),
    ],
)
def test_wrong_dtype_shape_or_length_is_refused(field: str, bad: np.ndarray, message: str) -> None:
    arrays = dict(zip(("tag", "ts", "value", "quality"), _arrays(), strict=True))
    arrays[field] = bad
    with pytest.raises(BatchError, match=message):
        ReadingBatch(**arrays)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([(1, 2, 3.0)], "row 0 has 3 fields"),
        ([(1, 2, 3.0, 300)], "quality: values out of range for uint8"),
        ([(2**40, 2, 3.0, 192)], "tag: values out of range for int32"),
        ([(1, 2.5, 3.0, 192)], "ts: cannot cast float64"),
    ],
)
def test_from_rows_refuses_lossy_rows(rows: list[tuple[float, ...]], message: str) -> None:
    with pytest.raises(BatchError, match=message):
        ReadingBatch.from_rows(rows)


def test_from_rows_round_trips() -> None:
    rows = [(3, 10, 1.5, 0xC0), (1, 11, float("nan"), 0x18)]
    batch = ReadingBatch.from_rows(rows)
    assert batch.tag.dtype == np.int32 and batch.quality.dtype == np.uint8
    assert batch.rows()[0] == (3, 10, 1.5, 0xC0)
    assert np.isnan(batch.rows()[1][2])
    assert batch == ReadingBatch.from_rows(rows)  # NaN-aware equality


def test_concat_select_and_empty() -> None:
    a = ReadingBatch.from_rows([(0, 1, 1.0, 192), (1, 1, 2.0, 192)])
    b = ReadingBatch.from_rows([(2, 2, 3.0, 0)])
    both = ReadingBatch.concat([a, ReadingBatch.empty(), b])
    assert both.tag.tolist() == [0, 1, 2]
    assert both.select(both.value > 1.5).tag.tolist() == [1, 2]
    assert both.select(np.array([2, 0])).tag.tolist() == [2, 0]
    assert len(ReadingBatch.concat([])) == 0
    assert len(ReadingBatch.from_rows([])) == 0
    with pytest.raises(BatchError, match="mask of shape"):
        both.select(np.array([True, False]))


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([], []),
        ([(5, 10, 1.0, 192)], [(5, 10, 1.0, 192)]),
        # latest timestamp wins regardless of arrival order
        ([(1, 20, 2.0, 192), (1, 10, 1.0, 192)], [(1, 20, 2.0, 192)]),
        # equal timestamps: the later arrival wins
        ([(1, 10, 1.0, 192), (1, 10, 2.0, 0)], [(1, 10, 2.0, 0)]),
        # several tags, result ordered by tag index
        (
            [(2, 5, 1.0, 192), (0, 7, 2.0, 192), (2, 6, 3.0, 192), (0, 1, 4.0, 192)],
            [(0, 7, 2.0, 192), (2, 6, 3.0, 192)],
        ),
    ],
)
def test_last_per_tag_table(
    rows: list[tuple[int, int, float, int]], expected: list[tuple[int, int, float, int]]
) -> None:
    assert ReadingBatch.from_rows(rows).last_per_tag().rows() == expected


def _reference_last_per_tag(rows: list[tuple[int, int, float, int]]) -> list[tuple[int, int, float, int]]:
    latest: dict[int, tuple[int, int, float, int]] = {}
    for row in rows:  # arrival order: a later row with an equal timestamp replaces
        if row[0] not in latest or row[1] >= latest[row[0]][1]:
            latest[row[0]] = row
    return [latest[t] for t in sorted(latest)]


rows_strategy = st.lists(
    st.tuples(
        st.integers(0, 20),
        st.integers(0, 50),
        st.floats(allow_nan=False, allow_infinity=False, width=64),
        st.sampled_from([0x00, 0x18, 0x40, 0xC0]),
    ),
    max_size=200,
)


@given(rows_strategy)
def test_last_per_tag_equals_scalar_reference(rows: list[tuple[int, int, float, int]]) -> None:
    assert ReadingBatch.from_rows(rows).last_per_tag().rows() == _reference_last_per_tag(rows)


@given(rows_strategy, rows_strategy)
def test_last_per_tag_of_concat_is_last_of_lasts(
    a: list[tuple[int, int, float, int]], b: list[tuple[int, int, float, int]]
) -> None:
    ba, bb = ReadingBatch.from_rows(a), ReadingBatch.from_rows(b)
    direct = ReadingBatch.concat([ba, bb]).last_per_tag()
    staged = ReadingBatch.concat([ba.last_per_tag(), bb.last_per_tag()]).last_per_tag()
    assert direct == staged
