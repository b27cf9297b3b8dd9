"""core.config.load_plant: the cycle collector is paused while a plant is built and restored after.

Loading a province allocates millions of acyclic objects; a collection every few hundred
allocations would rescan them all (half the load time of a 10k-tag plant).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

import core.config
from core.config import collector_paused, load_plant
from core.errors import ConfigError
from core.plant import Plant
from core.plant_build import Prevalidated
from core.yaml_loader import Loaded

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo"


@pytest.fixture
def collector_states(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether the collector ran, seen from inside each build_plant call."""
    seen: list[bool] = []
    build = core.config.build_plant

    def watched(loaded: Loaded, plant_file: Path, early: Prevalidated | None = None) -> Plant:
        seen.append(gc.isenabled())
        return build(loaded, plant_file, early)

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


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Whatever a test freezes goes back to the collector after it."""
    assert gc.get_freeze_count() == 0
    yield
    gc.unfreeze()


def test_a_kept_load_is_frozen_out_of_later_collections(unfrozen: None) -> None:
    with collector_paused(keep=True):
        plant = load_plant(DEMO)
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0
    assert gc.is_tracked(plant) and not any(plant is o for g in range(3) for o in gc.get_objects(g))


def test_a_failed_kept_load_leaves_its_garbage_to_the_collector(unfrozen: None, tmp_path: Path) -> None:
    (tmp_path / "plant.yaml").write_text("enterprises: []\n", encoding="utf-8")
    with pytest.raises(ConfigError), collector_paused(keep=True):
        load_plant(tmp_path, env={})
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
