"""core.atomic.write_json_atomic: the old file or the whole new one, fsynced unless not durable, never a temp file left."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from core.atomic import write_json_atomic
from tests.support.fsyncs import record_fsyncs


def test_writes_and_replaces_utf8_json_creating_the_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.json"
    write_json_atomic(path, {"T-101": 1})
    write_json_atomic(path, {"储罐/T-101": 2, "n": [1.5, None]})
    assert json.loads(path.read_text(encoding="utf-8")) == {"储罐/T-101": 2, "n": [1.5, None]}
    assert "储罐" in path.read_text(encoding="utf-8")  # readable by operators, not \\u escapes
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]


def test_an_unserializable_object_leaves_the_old_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_json_atomic(path, {"ok": True})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text(encoding="utf-8")) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


@pytest.mark.parametrize("durable", [True, False])
def test_a_failed_rename_leaves_no_temporary_file(tmp_path: Path, durable: bool) -> None:
    target = tmp_path / "state.json"
    target.mkdir()  # a directory in the way: os.replace fails after the temp file was written
    with pytest.raises(OSError):
        write_json_atomic(target, {"x": 1}, durable=durable)
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_not_durable_still_replaces_atomically_without_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "heartbeat.json"
    write_json_atomic(path, {"beat": 1}, durable=False)
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    real_replace = os.replace
    seen: list[tuple[object, object]] = []

    def replace(src: Path, dst: Path) -> None:
        # Up to the rename the target is the old file, and the new text is whole beside it.
        seen.append((json.loads(Path(dst).read_text("utf-8")), json.loads(Path(src).read_text("utf-8"))))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    write_json_atomic(path, {"beat": 2, "pad": "x" * 100_000}, durable=False)
    assert seen == [({"beat": 1}, {"beat": 2, "pad": "x" * 100_000})]
    assert json.loads(path.read_text("utf-8"))["beat"] == 2
    assert synced == []  # neither the file nor the directory
    assert [p.name for p in tmp_path.iterdir()] == ["heartbeat.json"]


def test_not_durable_failed_write_leaves_the_old_file_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "heartbeat.json"
    write_json_atomic(path, {"beat": 1}, durable=False)

    def full_disk(src: Path, dst: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError):
        write_json_atomic(path, {"beat": 2}, durable=False)
    assert json.loads(path.read_text("utf-8")) == {"beat": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["heartbeat.json"]


def test_fsyncs_the_file_and_then_its_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced = record_fsyncs(monkeypatch)
    write_json_atomic(tmp_path / "state.json", [1, 2, 3])
    assert synced == ["file", "dir"]  # the data before the rename, the rename after it
