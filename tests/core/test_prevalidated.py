"""core.plant_build.Prevalidated: enterprises validated as their included files arrive give the
plant (and the errors) that validating the whole document gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import core.yaml_loader as yaml_loader
from bench.config import write_plant
from core.config import load_plant
from core.errors import ConfigError
from core.plant_build import Prevalidated, build_plant
from core.yaml_loader import PathKey, load_document


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # files are shown relative to it


def _issues(plant_file: Path, early: Prevalidated | None) -> list[str]:
    loaded = load_document(plant_file, {}, on_part=early.take if early else None)
    with pytest.raises(ConfigError) as info:
        build_plant(loaded, plant_file, early)
    return [str(i) for i in info.value.issues]


@pytest.mark.parametrize("parallel", [False, True], ids=["in-process", "worker-processes"])
def test_each_clean_include_is_handed_on_with_its_place_as_it_is_read(
    parallel: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(yaml_loader, "_PARALLEL_MIN_BYTES", 0 if parallel else 1 << 40)
    (tmp_path / "a.yaml").write_text("x: 1\n", encoding="utf-8")
    (tmp_path / "b.yaml").write_text("y: [1, 2]\n", encoding="utf-8")
    (tmp_path / "bad.yaml").write_text("z: 1\nz: 2\n", encoding="utf-8")  # a duplicate key
    (tmp_path / "root.yaml").write_text(
        "parts:\n  - !include a.yaml\n  - !include bad.yaml\n  - !include b.yaml\nmore: !include a.yaml\n",
        encoding="utf-8",
    )
    seen: dict[PathKey, Any] = {}
    loaded = load_document(
        tmp_path / "root.yaml", {}, on_part=lambda at, data, top: seen.__setitem__(at, data)
    )
    assert seen == {("parts", 0): {"x": 1}, ("parts", 2): {"y": [1, 2]}, ("more",): {"x": 1}}
    assert seen[("parts", 2)] is loaded.data["parts"][2]  # the very object put in its place
    assert [str(i) for i in loaded.issues] == ["bad.yaml:2 parts[1].z: duplicate key"]


def test_a_plant_of_included_enterprises_is_validated_as_they_arrive(tmp_path: Path) -> None:
    plant_file = write_plant(tmp_path, 3000)  # three included enterprise files
    early = Prevalidated(plant_file)
    loaded = load_document(plant_file, {}, on_part=early.take)
    assert sorted(early.parts) == [0, 1, 2] and sorted(early.resolved()) == [0, 1, 2]
    plant = build_plant(loaded, plant_file, early)
    assert plant.enterprises[2] is early.resolved()[2]  # resolved while the YAML was read
    assert plant.enterprises[1] is not None and plant == load_plant(plant_file, env={})
    assert repr(plant.model_dump()) == repr(
        build_plant(load_document(plant_file, {}), plant_file).model_dump()
    )


def test_errors_are_the_whole_documents_when_an_included_enterprise_does_not_validate(tmp_path: Path) -> None:
    plant_file = write_plant(tmp_path, 3000)
    ent = tmp_path / "enterprises" / "E001.yaml"
    ent.write_text(ent.read_text(encoding="utf-8").replace("grade: 3", "grade: 7", 1), encoding="utf-8")
    early = Prevalidated(plant_file)
    issues = _issues(plant_file, early)
    assert sorted(early.parts) == [0, 2]  # E001 left to the whole document's validation
    assert issues == _issues(plant_file, None)
    assert len(issues) == 1 and issues[0].startswith("enterprises/E001.yaml:")
    assert issues[0].endswith(".grade: Input should be less than or equal to 4")


def test_a_gas_detector_that_cannot_be_resolved_is_reported_as_without_them(tmp_path: Path) -> None:
    plant_file = write_plant(tmp_path, 2000)
    ent = tmp_path / "enterprises" / "E001.yaml"
    ent.write_text(ent.read_text(encoding="utf-8").replace("gas: CO,", "gas: XYZ,", 1), encoding="utf-8")
    early = Prevalidated(plant_file)
    issues = _issues(plant_file, early)
    assert sorted(early.parts) == [0, 1] and sorted(early.resolved()) == [0]
    assert issues == _issues(plant_file, None)
    assert len(issues) == 1 and issues[0].startswith("enterprises/E001.yaml:") and "XYZ" in issues[0]


def test_a_plant_level_error_is_found_with_validated_enterprises_too(tmp_path: Path) -> None:
    plant_file = write_plant(tmp_path, 2000)
    text = plant_file.read_text(encoding="utf-8")
    plant_file.write_text(text + "settings: {rules: {max_clock_ahead_s: .nan}}\n", encoding="utf-8")
    early = Prevalidated(plant_file)
    issues = _issues(plant_file, early)
    assert sorted(early.parts) == [0, 1]
    assert issues == _issues(plant_file, None)
    assert len(issues) == 1 and "settings.rules.max_clock_ahead_s" in issues[0]


def test_enterprises_written_inline_are_validated_with_the_document(tmp_path: Path) -> None:
    plant_file = write_plant(tmp_path, 2000)
    inline = (tmp_path / "enterprises" / "E001.yaml").read_text(encoding="utf-8")
    plant_file.write_text(
        plant_file.read_text(encoding="utf-8").replace("  - !include enterprises/E001.yaml\n", "")
        + "".join(f"  {'- ' if i == 0 else '  '}{line}\n" for i, line in enumerate(inline.splitlines())),
        encoding="utf-8",
    )
    early = Prevalidated(plant_file)
    loaded = load_document(plant_file, {}, on_part=early.take)
    assert early.plant(loaded.data) is None  # one enterprise was not an included part
    plant = build_plant(loaded, plant_file, early)
    assert [e.code for e in plant.enterprises] == ["E000", "E001"]


def test_an_include_whose_place_a_duplicate_key_replaced_is_reported_not_a_crash(tmp_path: Path) -> None:
    plant_file = write_plant(tmp_path, 1000)
    plant_file.write_text(plant_file.read_text(encoding="utf-8") + "enterprises: []\n", encoding="utf-8")
    issues = _issues(plant_file, Prevalidated(plant_file))
    assert any(i.endswith("enterprises: duplicate key") for i in issues), issues
