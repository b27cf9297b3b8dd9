"""TagIdCache: ids for a start during an outage, served only when they cover every tag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from storage.tag_cache import TagIdCache

KEYS = ["E1/T-101", "E1/PT-201"]


def test_round_trip_in_the_spool_directory(tmp_path: Path) -> None:
    cache = TagIdCache(tmp_path / "spool")
    cache.save({"E1/T-101": 7, "E1/PT-201": 3, "E1/old": 9})
    assert cache.path == tmp_path / "spool" / "tag-ids.json"
    assert cache.load(KEYS) == {"E1/PT-201": 3, "E1/T-101": 7, "E1/old": 9}
    assert list(json.loads(cache.path.read_text(encoding="utf-8"))) == ["E1/PT-201", "E1/T-101", "E1/old"]


def test_a_tag_added_since_the_last_sync_makes_the_cache_unusable(tmp_path: Path) -> None:
    cache = TagIdCache(tmp_path)
    cache.save({"E1/T-101": 7})
    assert cache.load(KEYS) is None  # E1/PT-201 has no id yet: only the database can give one


@pytest.mark.parametrize(
    "text",
    ["", "{not json", "[1, 2]", '{"E1/T-101": "x", "E1/PT-201": 1}', '{"E1/T-101": null, "E1/PT-201": 1}'],
    ids=["empty", "torn", "not-an-object", "id-not-a-number", "id-null"],
)
def test_an_unreadable_cache_is_no_cache(tmp_path: Path, text: str) -> None:
    (tmp_path / "tag-ids.json").write_text(text, encoding="utf-8")
    assert TagIdCache(tmp_path).load(KEYS) is None


def test_no_file_is_no_cache(tmp_path: Path) -> None:
    assert TagIdCache(tmp_path / "missing").load(KEYS) is None
