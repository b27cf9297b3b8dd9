"""``core.plant.updated``, plant_build's cheap ``model_copy(update=...)``: the copy is the one
pydantic would make (values, fields set, frozen), so exclude_unset dumps of a resolved plant
still say which keys the config gave.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from core.config import load_plant
from core.plant import Limits, Plant, Tag, updated

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo"


@pytest.fixture(scope="module")
def plant() -> Plant:
    return load_plant(DEMO, env={})


def _as_pydantic_copies(model: Tag | Limits, update: dict[str, Any]) -> None:
    mine, theirs = updated(model, update), model.model_copy(update=update)
    assert type(mine) is type(theirs)
    assert mine.__dict__ == theirs.__dict__
    assert mine.model_fields_set == theirs.model_fields_set
    assert mine.__pydantic_extra__ == theirs.__pydantic_extra__
    assert mine.__pydantic_private__ == theirs.__pydantic_private__
    assert mine == theirs and hash(mine) == hash(theirs)
    assert mine.model_dump(exclude_unset=True) == theirs.model_dump(exclude_unset=True)
    assert mine.model_dump() == theirs.model_dump()


def test_a_tag_copy_is_pydantics(plant: Plant) -> None:
    tag = plant.tags()[0]
    _as_pydantic_copies(tag, {"key": "E.EQ.T", "description": "copied"})
    _as_pydantic_copies(tag, {})


def test_a_limits_copy_is_pydantics() -> None:
    given = Limits.model_validate({"h": 8.0, "hh": 9.0, "deadband_pct": 2.0})
    _as_pydantic_copies(given, {"deadband": 0.2, "deadband_pct": None, "on_delay_s": 15.0})


def test_the_copy_is_frozen_and_the_original_unchanged(plant: Plant) -> None:
    tag = plant.tags()[0]
    before_dict, before_set = dict(tag.__dict__), set(tag.model_fields_set)
    copy = updated(tag, {"description": "copied"})
    with pytest.raises(ValidationError, match="frozen"):
        copy.description = "changed"  # type: ignore[misc]
    assert "description" in copy.model_fields_set
    assert tag.__dict__ == before_dict and tag.model_fields_set == before_set
    assert copy.__pydantic_fields_set__ is not tag.__pydantic_fields_set__


def test_unset_fields_stay_unset_in_the_copy() -> None:
    tag = Tag.model_validate(
        {
            "code": "LT01",
            "name": "level",
            "equipment": "V1",
            "kind": "LEVEL",
            "source": {"device": "D"},
        }
    )
    copy = updated(tag, {"key": "E.V1.LT01"})
    assert copy.model_dump(exclude_unset=True) == {
        "code": "LT01",
        "name": "level",
        "equipment": "V1",
        "kind": "LEVEL",
        "source": {"device": "D"},
        "key": "E.V1.LT01",
    }
