"""Mirror the plant config into the registry tables (enterprise, hazard_source, unit, tag).

Rows are matched on natural keys (enterprise code; parent + code; the tag key), so an
edited or renamed entry keeps its id. Invariants: ids are never reused or deleted; an
entry missing from the config is marked retired (its history stays readable) and gets its
old id back if it reappears; a sync is one transaction; re-syncing the same config
changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from core.clock import to_datetime
from core.plant import ModbusDevice, OpcUaDevice, OpcUaMode, Plant, Tag
from storage.db import Conn, translate_errors

__all__ = ["SyncCounts", "SyncReport", "active_tag_ids", "sync_registry"]

_LOCK_KEY = 0x48_57_52_47  # "HWRG": one registry sync at a time


@dataclass(slots=True)
class SyncCounts:
    added: int = 0
    updated: int = 0
    retired: int = 0
    revived: int = 0


@dataclass(slots=True)
class SyncReport:
    tag_ids: dict[str, int]  # active tag key -> database id
    counts: dict[str, SyncCounts] = field(default_factory=dict)  # per table

    def summary(self) -> str:
        return "; ".join(
            f"{t}: +{c.added} ~{c.updated} -{c.retired} revived {c.revived}" for t, c in self.counts.items()
        )


Key = tuple[Any, ...]


async def sync_registry(conn: Conn, plant: Plant, *, now_us: int) -> SyncReport:
    """Bring the registry tables in line with ``plant``; return the active tags' ids."""
    now = to_datetime(now_us)
    report = SyncReport(tag_ids={})
    with translate_errors("sync registry"):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
            ent_rows = {
                (e.code,): (e.name, e.county, Jsonb(e.model_dump(mode="json", include=_ENTERPRISE_ATTRS)))
                for e in plant.enterprises
            }
            ent_ids = await _sync(
                conn, report, "enterprise", ("code",), ("name", "county", "attrs"), ent_rows, now
            )

            hs_rows: dict[Key, tuple[Any, ...]] = {}
            for e in plant.enterprises:
                for h in e.hazard_sources:
                    attrs = Jsonb({"substances": [s.model_dump(mode="json") for s in h.substances]})
                    hs_rows[ent_ids[(e.code,)], h.code] = (h.name, h.kind.value, h.grade, attrs)
            hs_ids = await _sync(
                conn, report, "hazard_source", ("enterprise_id", "code"), ("name", "kind", "grade", "attrs"),
                hs_rows, now,
            )  # fmt: skip

            unit_rows: dict[Key, tuple[Any, ...]] = {}
            tag_rows: dict[Key, tuple[Any, ...]] = {}
            for e in plant.enterprises:
                devices = {d.id: d for d in e.devices}
                for h in e.hazard_sources:
                    hs_id = hs_ids[ent_ids[(e.code,)], h.code]
                    for u in h.units:
                        equipment = [q.model_dump(mode="json") for q in u.equipment]
                        unit_rows[hs_id, u.code] = (u.name, Jsonb({"equipment": equipment}))
                    unit_of = {q.code: u.code for u in h.units for q in u.equipment}
                    for t in h.tags:
                        lo, hi = t.range if t.range else (None, None)
                        attrs = Jsonb(
                            {
                                "description": t.description,
                                "resolution": t.resolution,
                                **_sampling(t, devices),
                            }
                        )
                        tag_rows[(t.key,)] = (
                            hs_id, unit_of.get(t.equipment), t.equipment, t.name, t.kind.value, t.unit, lo, hi,
                            t.in_service, attrs,
                        )  # fmt: skip
            unit_ids = await _sync(
                conn, report, "unit", ("hazard_source_id", "code"), ("name", "attrs"), unit_rows, now
            )

            for key, row in tag_rows.items():  # unit code -> unit id, now that units exist
                unit_code = row[1]
                tag_rows[key] = (row[0], unit_ids.get((row[0], unit_code)), *row[2:])
            tag_ids = await _sync(
                conn, report, "tag", ("key",),
                ("hazard_source_id", "unit_id", "equipment", "name", "kind", "eng_unit", "range_lo", "range_hi",
                 "in_service", "attrs"),
                tag_rows, now,
            )  # fmt: skip
    report.tag_ids = {k[0]: v for k, v in tag_ids.items()}
    return report


def _sampling(tag: Tag, devices: dict[str, OpcUaDevice | ModbusDevice]) -> dict[str, Any]:
    """How often the point should report, for readers without the config (Grafana's online
    rate and stale checks, dashboards/sql.py): the device's poll or sampling interval, whether
    silence means "unchanged" (an OPC UA subscription), and the tag's own stale time if set."""
    d = devices.get(tag.source.device)
    out: dict[str, Any] = {"sample_s": 1.0, "changes_only": False}
    if isinstance(d, ModbusDevice):
        out = {"sample_s": d.poll_interval_s, "changes_only": False}
    elif isinstance(d, OpcUaDevice):
        out = {"sample_s": d.interval_s, "changes_only": d.mode == OpcUaMode.SUBSCRIPTION}
    if tag.data_quality is not None and tag.data_quality.stale_s is not None:
        out["stale_s"] = tag.data_quality.stale_s
    return out


_ENTERPRISE_ATTRS = {"city", "industry", "credit_code", "population_500m", "duty_phone"}


async def _sync(
    conn: Conn,
    report: SyncReport,
    table: str,
    key_cols: Sequence[str],
    data_cols: Sequence[str],
    wanted: dict[Key, tuple[Any, ...]],
    now: datetime,
) -> dict[Key, int]:
    """Insert, update, revive and retire rows of one table; return natural key -> id."""
    counts = report.counts.setdefault(table, SyncCounts())
    t = sql.Identifier(table)
    cols = sql.SQL(", ").join(map(sql.Identifier, [*key_cols, *data_cols]))
    existing = await _existing(conn, t, cols, len(key_cols))
    inserts, updates = [], []
    for key, data in wanted.items():
        if key not in existing:
            inserts.append([*key, *data, now, now])
            counts.added += 1
            continue
        row_id, retired, current = existing[key]
        if retired or current != tuple(_plain(v) for v in data):
            updates.append([*data, now, row_id])
            counts.revived += retired
            counts.updated += not retired
    gone = [row_id for key, (row_id, retired, _) in existing.items() if key not in wanted and not retired]
    counts.retired += len(gone)
    async with conn.cursor() as cur:
        if inserts:
            marks = sql.SQL(", ").join(sql.Placeholder() * len(inserts[0]))
            await cur.executemany(
                sql.SQL("INSERT INTO {} ({}, created_at, updated_at) VALUES ({})").format(t, cols, marks),
                inserts,
            )
        if updates:
            assign = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in data_cols)
            await cur.executemany(
                sql.SQL("UPDATE {} SET {}, updated_at = %s, retired_at = NULL WHERE id = %s").format(
                    t, assign
                ),
                updates,
            )
        if gone:
            await cur.execute(
                sql.SQL("UPDATE {} SET retired_at = %s, updated_at = %s WHERE id = ANY(%s)").format(t),
                [now, now, gone],
            )
    if inserts:
        existing = await _existing(conn, t, cols, len(key_cols))
    return {key: existing[key][0] for key in wanted}


async def _existing(
    conn: Conn, table: sql.Identifier, cols: sql.Composable, n_keys: int
) -> dict[Key, tuple[int, bool, tuple[Any, ...]]]:
    """Natural key -> (id, retired, data columns) for every row of the table."""
    cur = await conn.execute(sql.SQL("SELECT id, retired_at IS NOT NULL, {} FROM {}").format(cols, table))
    return {tuple(r[2 : 2 + n_keys]): (r[0], r[1], tuple(r[2 + n_keys :])) for r in await cur.fetchall()}


def _plain(v: Any) -> Any:
    """Compare Jsonb wrappers by content, as the database returns them."""
    return v.obj if isinstance(v, Jsonb) else v


async def active_tag_ids(conn: Conn) -> dict[str, int]:
    """Tag key -> id for every tag not retired (what a runtime maps its registry with)."""
    with translate_errors("read tag ids"):
        cur = await conn.execute("SELECT key, id FROM tag WHERE retired_at IS NULL")
        return {k: int(i) for k, i in await cur.fetchall()}
