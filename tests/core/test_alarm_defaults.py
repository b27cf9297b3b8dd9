"""Alarm defaults live in core.alarm_defaults only: a loaded plant's resolved limits and the
rules compiled from a plant that was never resolved use the same deadband and delays."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from core.alarm_defaults import deadband, on_delay_s
from core.config import load_plant
from core.plant import Limits, Plant
from core.registry import TagRegistry
from core.yaml_loader import load_document
from rules.compile import compile_rules
from tests.support.plants import write_small_plant

DEVICES = "- {protocol: MODBUS, id: D1, host: 127.0.0.1}\n"
TAGS = """\
- {code: LT-1, name: level, equipment: V1, kind: LEVEL, unit: m, range: [0, 10],
   source: {device: D1, table: HOLDING, address: 0, type: FLOAT32}, limits: {l: 1, h: 9}}
- {code: PT-1, name: pressure, equipment: V1, kind: PRESSURE, unit: MPa, range: [0, 4],
   source: {device: D1, table: HOLDING, address: 2, type: FLOAT32}, limits: {hh: 3.6, deadband_pct: 5}}
- {code: TT-1, name: temp, equipment: V1, kind: TEMPERATURE, unit: °C, range: [0, 200],
   source: {device: D1, table: HOLDING, address: 4, type: FLOAT32}, limits: {h: 199.5, on_delay_s: 5}}
"""


def _rules(plant: Plant) -> dict[str, tuple[float, int, int]]:
    rules = compile_rules(plant, TagRegistry.from_plant(plant))
    return {
        k: (float(rules.clear_at[i]), int(rules.on_us[i]), int(rules.off_us[i]))
        for i, k in enumerate(rules.keys)
        if k.endswith((":L", ":H", ":HH"))
    }


def test_an_unresolved_plant_compiles_to_the_rules_of_the_loaded_one(tmp_path: Path) -> None:
    plant_file = write_small_plant(tmp_path, DEVICES, TAGS) / "plant.yaml"
    loaded = load_plant(plant_file, env={})
    # The same document validated but never resolved, as tests and benchmarks build plants.
    raw = load_document(plant_file, env={}).data
    for tag in raw["enterprises"][0]["hazard_sources"][0]["tags"]:
        tag["key"] = f"E1.V1.{tag['code']}"
    unresolved = Plant.model_validate(raw)
    assert unresolved.tag("E1.V1.LT-1").limits == Limits(l=1, h=9)
    assert _rules(unresolved) == _rules(loaded)
    assert _rules(loaded) == {
        "E1.V1.LT-1:L": (1.5, 60_000_000, 0),  # LEVEL: 5 % of 10 m, 60 s
        "E1.V1.LT-1:H": (8.5, 60_000_000, 0),
        "E1.V1.PT-1:HH": (pytest.approx(3.4), 15_000_000, 0),  # deadband_pct 5 of 4 MPa
        "E1.V1.TT-1:H": (pytest.approx(199.5 - 2.0), 5_000_000, 0),  # 1 % of 200 °C
    }


@pytest.mark.parametrize(
    ("kind", "limits", "rng", "want"),
    [
        ("LEVEL", Limits(h=9), (0.0, 10.0), 0.5),  # 5 % of span
        ("LEVEL", Limits(h=0.4), (0.0, 10.0), 0.2),  # capped: half the room down to the range end
        ("LEVEL", Limits(l=9.8), (0.0, 10.0), 0.1),
        ("LEVEL", Limits(h=9, deadband_pct=10), (0.0, 10.0), 1.0),  # given: not capped
        ("LEVEL", Limits(h=9, deadband=0.3), (0.0, 10.0), 0.3),
        ("LEVEL", Limits(h=9), None, 0.0),  # no range, no share of it
        ("COUNTER", Limits(h=9), (0.0, 10.0), 0.0),
    ],
)
def test_deadband(kind: str, limits: Limits, rng: tuple[float, float] | None, want: float) -> None:
    assert math.isclose(deadband(kind, limits, rng), want)


def test_on_delay_by_kind_unless_given() -> None:
    assert on_delay_s("FLOW", Limits(h=1)) == 15.0
    assert on_delay_s("FLOW", Limits(h=1, on_delay_s=0)) == 0.0
    assert on_delay_s("DISCRETE", Limits(h=1)) == 0.0
