"""A province-sized plant (bench/config.py's generator, 20,000 tags in 20 included files) still
reports each config error at its own file:line, and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.config import write_plant
from core.config import load_plant
from core.errors import ConfigError

TAGS = 20_000


def _plant_error(path: Path, after: str, old: str, new: str) -> int:
    """Replace ``old`` by ``new`` on the first line holding it after the line holding ``after``;
    the 1-based number of that line."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if after in line)
    at = next(i for i in range(start, len(lines)) if old in lines[i])
    lines[at] = lines[at].replace(old, new)
    path.write_text("".join(lines), encoding="utf-8")
    return at + 1


@pytest.mark.parametrize("structural", [False, True], ids=["validates", "does-not-validate"])
def test_errors_in_a_20k_tag_plant_name_their_file_and_line(
    structural: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cross-reference errors are found on the validated model's dump, or, when a structural
    error stops validation, on the document as written: the same lines either way."""
    write_plant(tmp_path, TAGS)
    monkeypatch.chdir(tmp_path)
    ents = tmp_path / "enterprises"
    hh = _plant_error(ents / "E013.yaml", "name: V01015 PT-0153", "hh: 3.6", "hh: 3.0")
    device = _plant_error(ents / "E002.yaml", "name: V02019 AT-0197", "device: E002-MB", "device: E002-MB9")
    expected = [
        f"enterprises/E013.yaml:{hh} enterprises[13].hazard_sources[1].tags[153].limits.hh: "
        "must be above h (3.2), is 3",
        f"enterprises/E002.yaml:{device} enterprises[2].hazard_sources[2].tags[197].source.device: "
        "unknown device 'E002-MB9' (this enterprise has: E002-MB, E002-OPC)",
    ]
    if structural:
        grade = _plant_error(ents / "E019.yaml", "code: E019-H04", "grade: 3", "grade: 7")
        expected.append(
            f"enterprises/E019.yaml:{grade} enterprises[19].hazard_sources[4].grade: "
            "Input should be less than or equal to 4"
        )
    with pytest.raises(ConfigError) as info:
        load_plant(tmp_path, env={})
    assert sorted(str(i) for i in info.value.issues) == sorted(expected)
