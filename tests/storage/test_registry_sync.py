"""Registry sync: ids stay stable across config edits; removed entries retire, never vanish."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.config import load_plant
from core.registry import TagRegistry
from storage.db import Conn
from storage.registry_sync import active_tag_ids, sync_registry
from tests.storage.helpers import T0

DATA = Path(__file__).parent / "data"
V1 = load_plant(DATA / "plant.yaml")
V2 = load_plant(DATA / "plant_edited.yaml")


async def tag_rows(conn: Conn) -> dict[str, tuple[int, str, float, bool]]:
    cur = await conn.execute("SELECT key, id, name, range_hi, retired_at IS NOT NULL FROM tag")
    return {k: (i, n, hi, r) for k, i, n, hi, r in await cur.fetchall()}


async def test_ids_stable_across_edit_removal_and_return(conn: Conn) -> None:
    first = await sync_registry(conn, V1, now_us=T0)
    assert first.counts["tag"].added == 3
    ids = first.tag_ids
    assert sorted(ids) == ["SY.V1.LT1", "SY.V1.PT1", "SY.V1.TT1"]

    again = await sync_registry(conn, V1, now_us=T0 + 1)
    assert again.tag_ids == ids
    assert all(c.added == c.updated == c.retired == c.revived == 0 for c in again.counts.values())

    edited = await sync_registry(conn, V2, now_us=T0 + 2)
    assert edited.tag_ids["SY.V1.LT1"] == ids["SY.V1.LT1"]  # renamed and re-ranged: same id
    assert edited.tag_ids["SY.V1.PT1"] == ids["SY.V1.PT1"]
    assert edited.tag_ids["SY.V2.FT1"] not in ids.values()
    assert (edited.counts["tag"].added, edited.counts["tag"].updated, edited.counts["tag"].retired) == (
        1,
        1,
        1,
    )
    assert edited.counts["enterprise"].updated == 1  # renamed enterprise, same row
    rows = await tag_rows(conn)
    assert rows["SY.V1.LT1"] == (ids["SY.V1.LT1"], "1号罐液位", 12.0, False)
    assert rows["SY.V1.TT1"] == (ids["SY.V1.TT1"], "温度", 80.0, True)  # retired, still there
    assert await active_tag_ids(conn) == edited.tag_ids

    back = await sync_registry(conn, V1, now_us=T0 + 3)
    assert back.tag_ids == ids  # TT1 returns under its old id
    assert (back.counts["tag"].revived, back.counts["tag"].retired) == (1, 1)


async def test_registry_gets_the_mapping_the_writer_needs(conn: Conn) -> None:
    report = await sync_registry(conn, V2, now_us=T0)
    registry = TagRegistry.from_plant(V2).with_db_ids(report.tag_ids)
    expected = [report.tag_ids[k] for k in registry.keys]
    np.testing.assert_array_equal(registry.db_id, expected)
    cur = await conn.execute(
        "SELECT t.key, u.code, h.code, e.county FROM tag t JOIN unit u ON u.id = t.unit_id "
        "JOIN hazard_source h ON h.id = t.hazard_source_id JOIN enterprise e ON e.id = h.enterprise_id "
        "WHERE t.key = 'SY.V2.FT1'"
    )
    assert await cur.fetchall() == [("SY.V2.FT1", "U1", "SY-HS1", "孝义市")]
