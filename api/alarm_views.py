"""What the alarm endpoints read: the alarm list, one alarm's state, journal, rationalization and
notification evidence, and whose an alarm key is — every query filtered by the caller's scope.

Invariant: an alarm outside the scope is never read past ``alarm_owner`` (the routes answer it as
unknown); recipients leave here masked (alarms.dispatch_send.mask_recipient).
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from psycopg import sql
from psycopg.rows import dict_row
from pydantic import BaseModel, Field

from alarms.commands import ACTIVE
from alarms.delivery_evidence import evidence_of
from alarms.model import Catalog, Priority
from alarms.rationale import SIF_DISABLED, RationaleDefaults
from alarms.state import Status
from api.deps import ApiState
from api.principal import Scope
from core.conditions import LABELS, RuleKind
from storage.db import Conn, translate_errors

__all__ = [
    "JSON_OPTIONS",
    "RATIONALE_DEFAULTS",
    "AlarmFilter",
    "AlarmItem",
    "Delivery",
    "Rationalization",
    "alarm_owner",
    "deliveries",
    "list_page",
    "one_alarm",
    "rationalization",
]

# ApiState.extras key: the plant's rationalization defaults (alarms.rationale.defaults_for),
# set by whoever knows the config's path; without it only the plant's own overrides show.
RATIONALE_DEFAULTS = "rationale_defaults"
_SIF_SUFFIX = ".sif_disabled"  # alarms.model: an interlock's SIF-disabled alarm key
# how the plant's alarm lists name each condition (the SIF one is alarms.model's label)
CONDITION_ZH: dict[str, str] = {**{k.name: v for k, v in LABELS.items()}, SIF_DISABLED: "安全仪表功能失效"}
_PRIORITY_ORDER = [p.value for p in Priority]  # critical first


class AlarmItem(BaseModel):
    """One alarm as the console lists it (a row of alarm_state with its labels)."""

    key: str = Field(examples=["AA.V1.LT1:HH"])
    enterprise: str
    county: str
    hazard_source: str
    unit: str | None = Field(description="process unit code; None for interlock alarms")
    subject: str = Field(description="the tag key (ENT.EQUIP.CODE) or interlock key (HS.CODE)")
    subject_name: str | None = Field(description="the tag's or interlock's name from the plant")
    kind: str = Field(description="core.conditions.RuleKind name, or SIF_DISABLED", examples=["HH"])
    condition: str = Field(description="the condition as alarm lists name it", examples=["高高报"])
    priority: Priority
    status: Status
    acked: bool
    latching: bool
    since: datetime = Field(description="when the status last changed")
    raised_at: datetime | None
    value: float | None = Field(description="at the last condition edge")
    limit: float | None
    shelved_until: datetime | None
    by_whom: str | None = Field(description="who shelved or removed it")
    reason: str | None = Field(description="why shelved, removed or suppressed")
    acked_by: str | None
    acked_at: datetime | None


class AlarmFilter(BaseModel):
    active: bool = True
    enterprise: str | None = None
    hazard_source: str | None = None
    priority: Priority | None = None
    state: Status | None = None
    start: datetime | None = None
    end: datetime | None = None
    limit: int = 200
    offset: int = 0


class Rationalization(BaseModel):
    """The master alarm table's entry (ISA-18.2 §10): cause, consequence, what to do and how fast."""

    cause: str
    consequence: str
    action: str = Field(description="处置措施")
    response_s: float | None = Field(description="allowed response time, seconds")
    source: str = Field(description="where it came from: a default for the kind, or the plant's override")


class Delivery(BaseModel):
    """One notification of the alarm to one recipient on one channel (the dispatcher's evidence)."""

    seq: int | None = Field(description="the alarm commit it announces")
    event: str = Field(examples=["raised"])
    step: int = Field(description="escalation step (0: at once)")
    receiver: str
    person: str | None = Field(description="the roster's person key")
    channel: str
    recipient: str = Field(description="masked: 138****1234, w***@example.com, a webhook's origin")
    state: str = Field(description="planned, sent, failed, ... ('grouped → sent': in a flood summary)")
    reason: str | None
    attempts: int
    provider: str | None
    provider_message_id: str | None
    due_at: datetime
    sent_at: datetime | None
    report: str | None = Field(description="the provider's delivery receipt: DELIVERED / FAILED / PENDING")
    report_at: datetime | None


def utc(at: datetime | None) -> datetime | None:
    return None if at is None else at.astimezone(UTC)


def _number(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) else v  # a note's row holds NaN: JSON has no NaN


def _names(state: ApiState) -> dict[str, tuple[str, str, str]]:
    """Subject key -> (name, enterprise, county) of every tag and interlock of the plant (kept)."""
    names: dict[str, tuple[str, str, str]] | None = state.extras.get("alarm_subjects")
    if names is None:
        names = {}
        for ent in state.plant.enterprises if state.plant else ():
            for hs in ent.hazard_sources:
                names.update((t.key, (t.name, ent.code, ent.county)) for t in hs.tags)
                names.update(
                    (f"{hs.code}.{il.code}", (il.name, ent.code, ent.county)) for il in hs.interlocks
                )
        state.extras["alarm_subjects"] = names
    return names


def _item(row: dict[str, Any], state: ApiState) -> AlarmItem:
    named = _names(state).get(row["subject"])
    return AlarmItem(
        **{
            **row,
            "value": _number(row["value"]),
            "limit": _number(row["limit"]),
            **{k: utc(row[k]) for k in ("since", "raised_at", "shelved_until", "acked_at")},
        },
        subject_name=named[0] if named else None,
        condition=CONDITION_ZH.get(row["kind"], row["kind"]),
    )


_COLUMNS = sql.SQL(
    """key, enterprise, county, hazard_source, unit, subject, kind, priority, status, acked, latching,
       since, raised_at, value, "limit", shelved_until, by_whom, reason, acked_by, acked_at"""
)


def _where(scope: Scope, f: AlarmFilter) -> tuple[sql.Composable, list[Any]]:
    where, params = scope.where(sql.Identifier("enterprise"), sql.Identifier("county"))
    parts: list[sql.Composable] = [where]
    if f.state is not None:  # an explicit status: whatever ``active`` says
        parts.append(sql.SQL("status = %s"))
        params.append(f.state.value)
    elif f.active:
        parts.append(sql.SQL("status = ANY(%s)"))
        params.append(sorted(s.value for s in ACTIVE))
    for column, value in (("enterprise", f.enterprise), ("hazard_source", f.hazard_source)):
        if value is not None:
            parts.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    if f.priority is not None:
        parts.append(sql.SQL("priority = %s"))
        params.append(f.priority.value)
    # the window is on when it was last raised (a note's or a removal's row: its status change)
    if f.start is not None:
        parts.append(sql.SQL("coalesce(raised_at, since) >= %s"))
        params.append(f.start)
    if f.end is not None:
        parts.append(sql.SQL("coalesce(raised_at, since) < %s"))
        params.append(f.end)
    return sql.SQL(" AND ").join(parts), params


# The list's columns in AlarmItem's field order, times as UTC wall clock (orjson writes "...Z",
# as pydantic does); subject_name and condition are the plant's, filled in per row.
_LIST_COLUMNS = sql.SQL(
    """key, enterprise, county, hazard_source, unit, subject, kind, priority, status, acked, latching,
       since AT TIME ZONE 'UTC', raised_at AT TIME ZONE 'UTC', value, "limit",
       shelved_until AT TIME ZONE 'UTC', by_whom, reason, acked_by, acked_at AT TIME ZONE 'UTC'"""
)
JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC  # naive: UTC; NaN and infinity: null


async def list_page(
    conn: Conn, state: ApiState, scope: Scope, f: AlarmFilter
) -> tuple[int, list[dict[str, Any]]]:
    """The total matching and one page of it: awaiting acknowledgement first, then by priority
    (critical first), then the oldest status change. Items are AlarmItem's JSON (same keys, same
    order) as plain dicts for orjson: a page of 1,000 through pydantic cost more than the query."""
    where, params = _where(scope, f)
    query = sql.SQL(
        """SELECT {}, count(*) OVER () AS total FROM alarm_state WHERE {}
           ORDER BY acked, array_position(%s::text[], priority), since, key LIMIT %s OFFSET %s"""
    ).format(_LIST_COLUMNS, where)
    with translate_errors("list alarms"):
        cur = await conn.execute(query, [*params, _PRIORITY_ORDER, f.limit, f.offset])
        rows = await cur.fetchall()
        if rows:
            total = int(rows[0][-1])
        elif f.offset:  # past the end: the window function saw no row, count apart
            cur2 = await conn.execute(
                sql.SQL("SELECT count(*) FROM alarm_state WHERE {}").format(where), params
            )
            total = int((await cur2.fetchone() or (0,))[0])
        else:
            total = 0
    names = _names(state)
    return total, [
        {
            "key": r[0],
            "enterprise": r[1],
            "county": r[2],
            "hazard_source": r[3],
            "unit": r[4],
            "subject": r[5],
            "subject_name": named[0] if (named := names.get(r[5])) else None,
            "kind": r[6],
            "condition": CONDITION_ZH.get(r[6], r[6]),
            "priority": r[7],
            "status": r[8],
            "acked": r[9],
            "latching": r[10],
            "since": r[11],
            "raised_at": r[12],
            "value": r[13],
            "limit": r[14],
            "shelved_until": r[15],
            "by_whom": r[16],
            "reason": r[17],
            "acked_by": r[18],
            "acked_at": r[19],
        }
        for r in rows
    ]


async def alarm_owner(conn: Conn, state: ApiState, key: str) -> tuple[str, str] | None:
    """(enterprise, county) of an alarm key: its alarm_state row's, or for an alarm never raised,
    its subject's in the plant; None when neither knows it."""
    with translate_errors("read alarm"):
        cur = await conn.execute("SELECT enterprise, county FROM alarm_state WHERE key = %s", (key,))
        row = await cur.fetchone()
    if row is not None:
        return row[0], row[1]
    subject, colon, kind = key.rpartition(":")
    if not colon:
        subject = key.removesuffix(_SIF_SUFFIX) if key.endswith(_SIF_SUFFIX) else ""
    elif kind not in RuleKind.__members__:
        return None
    named = _names(state).get(subject)
    return (named[1], named[2]) if named else None


async def one_alarm(conn: Conn, state: ApiState, scope: Scope, key: str) -> AlarmItem | None:
    where, params = scope.where(sql.Identifier("enterprise"), sql.Identifier("county"))
    query = sql.SQL("SELECT {} FROM alarm_state WHERE key = %s AND {}").format(_COLUMNS, where)
    with translate_errors("read alarm"):
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, [key, *params])
            row = await cur.fetchone()
    return None if row is None else _item(row, state)


class _OneRule:
    """alarms.model.RuleColumns of one rule, so the catalog's own rationale logic (defaults by
    kind and detector, the plant's overrides) answers for one alarm without compiling rules."""

    def __init__(self, alarm: AlarmItem) -> None:
        kind = RuleKind[alarm.kind]
        self.keys = (alarm.key,)
        self.subjects = (alarm.subject,)
        self.kind = np.array([int(kind)])
        self.severity = np.array([int(alarm.priority.severity)])
        self.latched = np.array([alarm.latching])

    def __len__(self) -> int:
        return 1


def rationalization(state: ApiState, alarm: AlarmItem) -> Rationalization | None:
    """The alarm's rationalization; None without a plant or when the plant no longer has it.
    (The catalog indexes the plant's tags once per call: fine per detail request.)"""
    defaults: RationaleDefaults | None = state.extras.get(RATIONALE_DEFAULTS)
    if state.plant is None or alarm.subject not in _names(state):
        return None
    try:
        if alarm.kind == SIF_DISABLED:
            found = Catalog(state.plant, _NoRules(), defaults).by_key(alarm.key)
        elif alarm.kind in RuleKind.__members__:
            found = Catalog(state.plant, _OneRule(alarm), defaults)[0]
        else:
            found = None
    except KeyError:  # a tag's kind on an interlock or the reverse: the config changed
        found = None
    if found is None:
        return None
    r = found.rationale
    return Rationalization(
        cause=r.cause, consequence=r.consequence, action=r.action, response_s=r.response_s, source=r.source
    )


class _NoRules:
    keys: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    kind = np.array([], dtype=np.int64)
    severity = np.array([], dtype=np.int64)
    latched = np.array([], dtype=bool)

    def __len__(self) -> int:
        return 0


async def deliveries(conn: Conn, key: str, limit: int = 200) -> list[Delivery]:
    """The alarm's newest ``limit`` deliveries (and the flood summaries that carried them),
    oldest first, recipients masked (alarms.delivery_evidence, as the CLI shows them)."""
    return [Delivery(**dataclasses.asdict(e)) for e in await evidence_of(conn, key, limit)]
