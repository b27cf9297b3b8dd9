"""TagRegistry: keys, dense indexes, database ids and attribute arrays from a plant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.config import load_plant
from core.plant import Plant, TagKind
from core.registry import KIND_CODES, NO_DB_ID, TagRegistry

PLANT = Path(__file__).parent / "data" / "two_enterprises.yaml"
KEYS = ["AA.V1.LT1", "AA.V1.PT1", "AA.V1.AT1", "AA.T1.TT1", "BB.G1.AT1", "BB.G1.XV1"]


@pytest.fixture(scope="module")
def plant() -> Plant:
    return load_plant(PLANT)


@pytest.fixture(scope="module")
def registry(plant: Plant) -> TagRegistry:
    return TagRegistry.from_plant(plant)


def test_keys_follow_plant_order(registry: TagRegistry) -> None:
    assert list(registry.keys) == KEYS
    assert len(registry) == 6
    assert [registry.index_of(k) for k in KEYS] == list(range(6))
    assert registry.indexes_of(["BB.G1.XV1", "AA.V1.LT1"]).tolist() == [5, 0]
    assert registry.key_of(3) == "AA.T1.TT1"
    assert "AA.V1.LT1" in registry and "AA.V1.NOPE" not in registry
    with pytest.raises(KeyError, match=r"unknown tag key 'AA\.V1\.NOPE'"):
        registry.index_of("AA.V1.NOPE")


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        ("range_lo", [0, 0, 0, -20, 0, np.nan]),
        ("range_hi", [10, 2.5, 100, 80, 500, np.nan]),
        ("hazard_source", [0, 0, 0, 1, 2, 2]),
        ("enterprise", [0, 0, 0, 0, 1, 1]),
        (
            "kind",
            [
                KIND_CODES[k]
                for k in (
                    TagKind.LEVEL,
                    TagKind.PRESSURE,
                    TagKind.GAS,
                    TagKind.TEMPERATURE,
                    TagKind.GAS,
                    TagKind.DISCRETE,
                )
            ],
        ),
    ],
)
def test_attribute_arrays(registry: TagRegistry, column: str, expected: list[float]) -> None:
    arr = getattr(registry, column)
    np.testing.assert_array_equal(arr, np.array(expected, dtype=arr.dtype))
    assert not arr.flags.writeable


def test_hazard_source_lookup(registry: TagRegistry) -> None:
    assert registry.hazard_sources == ("AA-HS1", "AA-HS2", "BB-HS1")
    assert registry.tags_of_hazard_source("BB-HS1").tolist() == [4, 5]
    assert registry.tag("AA.T1.TT1").name == "温度"


def test_database_ids_are_filled_then_vectorized(registry: TagRegistry) -> None:
    with pytest.raises(LookupError, match="no database ids yet"):
        registry.db_ids_of([0, 1])
    assert (registry.db_id == NO_DB_ID).all()
    ids = {k: 100 + i * 7 for i, k in enumerate(reversed(KEYS))}
    synced = registry.with_db_ids(ids)
    assert synced.db_ids_of(np.array([5, 0, 0])).tolist() == [
        ids["BB.G1.XV1"],
        ids["AA.V1.LT1"],
        ids["AA.V1.LT1"],
    ]
    assert synced.keys == registry.keys  # dense order unchanged by ids
    with pytest.raises(KeyError, match="no database id for 1 tag"):
        registry.with_db_ids({k: 1 for k in KEYS[1:]})


@given(st.lists(st.integers(0, 5), max_size=50))
def test_index_key_round_trip(registry: TagRegistry, indexes: list[int]) -> None:
    keys = [registry.key_of(i) for i in indexes]
    assert registry.indexes_of(keys).tolist() == indexes
