"""``core.units.finite`` and ``finite_pair``: the cross-checks read a number only if it is a
finite int or float, never a bool, string, NaN or infinity (a NaN limit compares false against
every reading and would silently disable its alarm).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from core.units import finite, finite_pair


class _Float(float):
    pass


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.5, 1.5),
        (-0.0, 0.0),
        (0, 0.0),
        (7, 7.0),
        (1e15, 1e15),
        (np.float64(2.5), 2.5),
        (_Float(3.5), 3.5),
        (math.nan, None),
        (math.inf, None),
        (-math.inf, None),
        (np.float64("nan"), None),
        (True, None),
        (False, None),
        ("1", None),
        ("nan", None),
        (None, None),
        ([1.0], None),
    ],
)
def test_finite(value: Any, expected: float | None) -> None:
    got = finite(value)
    assert got == expected
    if expected is not None:
        assert type(got) is float  # a subclass or an int is read as a plain float


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([0, 10], (0.0, 10.0)),
        ((0.5, 1.5), (0.5, 1.5)),
        ([10, 0], (10.0, 0.0)),  # order is checked by the caller, with its own message
        ([0, math.nan], None),
        ([-math.inf, 0], None),
        ([0, True], None),
        ([0, "10"], None),
        ([0, 1, 2], None),
        ([1], None),
        ("0, 10", None),
        (None, None),
    ],
)
def test_finite_pair(value: Any, expected: tuple[float, float] | None) -> None:
    assert finite_pair(value) == expected
