"""Registry reads for the API (enterprises, hazard sources, tags, active alarm counts), in SQL.

Tenancy invariant: every query takes the caller's ``Scope`` and filters by it in SQL, so a row
outside the scope is never fetched (absent from lists and counts, ``None`` for a lookup, exactly
as a row that does not exist). Retired registry rows are left out of lists; history stays
readable through ``tags_by_key`` (a retired tag's key still resolves).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from alarms.commands import ACTIVE
from alarms.model import Priority
from api.principal import Scope
from storage.db import Conn, translate_errors

__all__ = [
    "PRIORITIES",
    "AlarmCounts",
    "EnterpriseRow",
    "HazardSourceRow",
    "TagRow",
    "active_alarms_of",
    "alarm_counts",
    "enterprises",
    "hazard_sources",
    "tags",
    "tags_by_key",
]

PRIORITIES = tuple(p.value for p in Priority)  # critical first: "worst" is the lowest index
_ACTIVE = sorted(s.value for s in ACTIVE)
_E_SCOPE = (sql.Identifier("e", "code"), sql.Identifier("e", "county"))


@dataclass(slots=True)
class AlarmCounts:
    by_priority: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PRIORITIES, 0))
    unacknowledged: int = 0

    @property
    def total(self) -> int:
        return sum(self.by_priority.values())

    @property
    def worst(self) -> str:
        """The highest priority with an active alarm, or "normal"."""
        return next((p for p in PRIORITIES if self.by_priority[p]), "normal")

    def add(self, priority: str, n: int, unacked: int) -> None:
        self.by_priority[priority] = self.by_priority.get(priority, 0) + n
        self.unacknowledged += unacked


@dataclass(slots=True)
class EnterpriseRow:
    id: int
    code: str
    name: str
    county: str
    hazard_sources: int
    tags: int


@dataclass(slots=True)
class HazardSourceRow:
    id: int
    enterprise: str
    code: str
    name: str
    kind: str
    grade: int
    attrs: dict[str, Any]
    tags: int


@dataclass(slots=True)
class TagRow:
    id: int
    key: str
    enterprise: str
    hazard_source: str
    equipment: str
    name: str
    kind: str
    unit: str
    range_lo: float | None
    range_hi: float | None
    in_service: bool
    retired: bool
    time: datetime | None  # tag_latest: None when the tag never reported
    value: float | None
    quality: int | None


async def _rows(
    conn: Conn, query: sql.Composed | sql.SQL, params: Sequence[Any], what: str
) -> list[dict[str, Any]]:
    if any(_has_nul(p) for p in params):
        return []  # PostgreSQL text cannot hold NUL: no row can match such a code or key
    with translate_errors(what):
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            return await cur.fetchall()


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    return isinstance(value, list) and any(isinstance(v, str) and "\x00" in v for v in value)


async def enterprises(conn: Conn, scope: Scope, code: str | None = None) -> list[EnterpriseRow]:
    """Active enterprises in ``scope`` (only ``code``'s when given), by code."""
    where, params = scope.where(*_E_SCOPE)
    if code is not None:
        where = sql.SQL("{} AND e.code = %s").format(where)
        params = [*params, code]
    query = sql.SQL("""
        SELECT e.id, e.code, e.name, e.county,
               (SELECT count(*) FROM hazard_source h
                WHERE h.enterprise_id = e.id AND h.retired_at IS NULL)::int AS hazard_sources,
               (SELECT count(*) FROM tag t JOIN hazard_source h ON h.id = t.hazard_source_id
                WHERE h.enterprise_id = e.id AND t.retired_at IS NULL)::int AS tags
        FROM enterprise e WHERE e.retired_at IS NULL AND {} ORDER BY e.code""").format(where)
    return [EnterpriseRow(**r) for r in await _rows(conn, query, params, "list enterprises")]


async def hazard_sources(
    conn: Conn, scope: Scope, *, enterprise: str | None = None, code: str | None = None
) -> list[HazardSourceRow]:
    """Active hazard sources in ``scope``, by enterprise and code."""
    where, params = scope.where(*_E_SCOPE)
    for column, value in (("e", enterprise), ("h", code)):
        if value is not None:
            where = sql.SQL("{} AND {} = %s").format(where, sql.Identifier(column, "code"))
            params = [*params, value]
    query = sql.SQL("""
        SELECT h.id, e.code AS enterprise, h.code, h.name, h.kind, h.grade, h.attrs,
               (SELECT count(*) FROM tag t WHERE t.hazard_source_id = h.id AND t.retired_at IS NULL)::int AS tags
        FROM hazard_source h JOIN enterprise e ON e.id = h.enterprise_id
        WHERE h.retired_at IS NULL AND e.retired_at IS NULL AND {}
        ORDER BY e.code, h.code""").format(where)
    return [HazardSourceRow(**r) for r in await _rows(conn, query, params, "list hazard sources")]


_TAG_COLUMNS = sql.SQL("""
    t.id, t.key, e.code AS enterprise, h.code AS hazard_source, t.equipment, t.name, t.kind,
    t.eng_unit AS unit, t.range_lo, t.range_hi, t.in_service, t.retired_at IS NOT NULL AS retired,
    l.time, l.value, l.quality""")
_TAG_FROM = sql.SQL("""
    tag t JOIN hazard_source h ON h.id = t.hazard_source_id JOIN enterprise e ON e.id = h.enterprise_id
    LEFT JOIN tag_latest l ON l.tag_id = t.id""")


async def tags(
    conn: Conn,
    scope: Scope,
    *,
    enterprise: str | None = None,
    hazard_source: str | None = None,
    kind: str | None = None,
    key: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> tuple[list[TagRow], int]:
    """Active tags in ``scope`` matching the filters, by key, one page; and how many match."""
    where, params = scope.where(*_E_SCOPE)
    for column, value in (
        (sql.Identifier("e", "code"), enterprise),
        (sql.Identifier("h", "code"), hazard_source),
        (sql.Identifier("t", "kind"), kind),
        (sql.Identifier("t", "key"), key),
    ):
        if value is not None:
            where = sql.SQL("{} AND {} = %s").format(where, column)
            params = [*params, value]
    query = sql.SQL("""
        SELECT {}, count(*) OVER () AS total FROM {}
        WHERE t.retired_at IS NULL AND {} ORDER BY t.key LIMIT %s OFFSET %s""").format(
        _TAG_COLUMNS, _TAG_FROM, where
    )
    rows = await _rows(conn, query, [*params, limit, offset], "list tags")
    total = int(rows[0].pop("total")) if rows else 0
    for r in rows[1:]:
        r.pop("total")
    if not rows and offset:  # a page past the end still says how many there are
        count = sql.SQL("SELECT count(*) AS n FROM {} WHERE t.retired_at IS NULL AND {}").format(
            _TAG_FROM, where
        )
        total = int((await _rows(conn, count, params, "count tags"))[0]["n"])
    return [TagRow(**r) for r in rows], total


async def tags_by_key(conn: Conn, scope: Scope, keys: Sequence[str]) -> dict[str, TagRow]:
    """The tags of ``keys`` that exist in ``scope`` (retired ones included: their history stays)."""
    where, params = scope.where(*_E_SCOPE)
    query = sql.SQL("SELECT {} FROM {} WHERE t.key = ANY(%s) AND {}").format(_TAG_COLUMNS, _TAG_FROM, where)
    rows = await _rows(conn, query, [list(keys), *params], "look up tags")
    return {r["key"]: TagRow(**r) for r in rows}


async def alarm_counts(
    conn: Conn, scope: Scope, *, by: str, enterprise: str | None = None
) -> dict[tuple[str, ...], AlarmCounts]:
    """Active alarms (alarms.commands.ACTIVE) in ``scope`` counted per priority, keyed by
    (enterprise,) for ``by="enterprise"`` or (enterprise, hazard_source) for ``by="hazard_source"``."""
    group = ["enterprise"] if by == "enterprise" else ["enterprise", "hazard_source"]
    where, params = scope.where(sql.Identifier("enterprise"), sql.Identifier("county"))
    if enterprise is not None:
        where = sql.SQL("{} AND enterprise = %s").format(where)
        params = [*params, enterprise]
    cols = sql.SQL(", ").join(map(sql.Identifier, group))
    query = sql.SQL("""
        SELECT {cols}, priority, count(*)::int AS n, (count(*) FILTER (WHERE NOT acked))::int AS unacked
        FROM alarm_state WHERE status = ANY(%s) AND {where} GROUP BY {cols}, priority""").format(
        cols=cols, where=where
    )
    out: dict[tuple[str, ...], AlarmCounts] = {}
    for r in await _rows(conn, query, [_ACTIVE, *params], "count active alarms"):
        out.setdefault(tuple(r[g] for g in group), AlarmCounts()).add(r["priority"], r["n"], r["unacked"])
    return out


async def active_alarms_of(conn: Conn, subject: str) -> list[dict[str, Any]]:
    """The active alarms of one tag (its key is alarm_state.subject); the caller checked scope."""
    query = sql.SQL("""
        SELECT key, kind, priority, status, acked, since FROM alarm_state
        WHERE subject = %s AND status = ANY(%s)
        ORDER BY array_position(%s::text[], priority), key""")
    return await _rows(conn, query, [subject, _ACTIVE, list(PRIORITIES)], "active alarms of a tag")
