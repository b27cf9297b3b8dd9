"""YAML loading errors beyond the golden cases: a root file that is not UTF-8, and a BOM."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import load_plant
from core.errors import ConfigError
from core.yaml_loader import load_document


def test_a_root_file_that_is_not_utf8_gives_one_error_with_its_line_and_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # Saved by an editor in GBK. 孝 (d0 a2) happens to be valid UTF-8 (one character), so the
    # first bad byte is the d2 of 义: line 3, column 12 + 1 + 1.
    (tmp_path / "plant.yaml").write_bytes(
        b"enterprises:\n  - code: E1\n" + "    county: 孝义市\n".encode("gbk")
    )
    with pytest.raises(ConfigError) as info:
        load_plant(tmp_path, env={})
    assert [str(i) for i in info.value.issues] == [
        "plant.yaml:3: not valid UTF-8: byte 0xd2 at column 14 (save the file as UTF-8)"
    ]


def test_a_byte_order_mark_is_accepted_and_lines_stay_right(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_bytes("\ufeffa: 1\nb: [1, 2]\n".encode())
    loaded = load_document(tmp_path / "a.yaml")
    assert loaded.issues == []
    assert loaded.data == {"a": 1, "b": [1, 2]}
    assert loaded.source.where(("b", 1))[1] == 2
