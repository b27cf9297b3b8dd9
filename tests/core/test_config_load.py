"""core.config.load_plant: the cycle collector is paused while a plant is built and restored after.

Loading a province allocates millions of acyclic objects; a collection every few hundred
allocations would rescan them all (half the load time of a 10k-tag plant).
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

import core.config
from core.config import load_plant
from core.errors import ConfigError
from core.plant import Plant
from core.yaml_loader import Loaded

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo"


@pytest.fixture
def collector_states(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether the collector ran, seen from inside each build_plant call."""
    seen: list[bool] = []
    build = core.config.build_plant

    def watched(loaded: Loaded, plant_file: Path) -> Plant:
        seen.append(gc.isenabled())
        return build(loaded, plant_file)

    monkeypatch.setattr(core.config, "build_plant", watched)
    return seen


def test_the_collector_is_paused_while_loading_and_runs_again_after(collector_states: list[bool]) -> None:
    assert gc.isenabled()
    load_plant(DEMO)
    assert collector_states == [False]
    assert gc.isenabled()


def test_a_config_error_restores_the_collector_too(collector_states: list[bool], tmp_path: Path) -> None:
    (tmp_path / "plant.yaml").write_text("enterprises: []\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        load_plant(tmp_path, env={})
    assert collector_states == [False]
    assert gc.isenabled()


def test_a_collector_the_caller_paused_stays_paused(collector_states: list[bool]) -> None:
    gc.disable()
    try:
        load_plant(DEMO)
        assert not gc.isenabled()
    finally:
        gc.enable()
