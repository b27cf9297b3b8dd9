"""The bypass permit workflow (旁路审批) on table interlock_bypass: request, approve or reject,
restore; an approved permit is active from its start until it expires, by the clock when read.

Invariants: every transition locks its row, stores who and when on it and writes an audit_log
row in the same transaction; nobody approves their own request (four eyes, also a CHECK in
migration 0007); a row outside the caller's scope is "not found", exactly like an unknown id.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from psycopg import sql
from psycopg.rows import dict_row
from pydantic import AwareDatetime, BaseModel, Field, field_validator

from api.audit import record
from api.principal import Permission, Principal, Scope
from storage.db import Conn, translate_errors

__all__ = [
    "OPEN_STATES",
    "Bypass",
    "BypassConflict",
    "BypassForbidden",
    "BypassNotFound",
    "BypassRequest",
    "BypassState",
    "Note",
    "RejectNote",
    "get_bypass",
    "insert_request",
    "list_bypasses",
    "transition",
]


class BypassState(StrEnum):
    REQUESTED = "requested"
    APPROVED = "approved"  # approved, its start still ahead
    ACTIVE = "active"  # approved, start <= now < expires_at
    EXPIRED = "expired"  # approved, now >= expires_at and not restored: overdue
    REJECTED = "rejected"
    RESTORED = "restored"


# what is still open (shown with the interlock): not rejected, not restored
OPEN_STATES = (BypassState.REQUESTED, BypassState.APPROVED, BypassState.ACTIVE, BypassState.EXPIRED)

_TEXT = 2000


def _not_blank(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be blank")
    if "\x00" in v:  # PostgreSQL text cannot hold NUL
        raise ValueError("must not contain NUL characters")
    return v.strip()


def _no_nul(v: str | None) -> str | None:
    if v is not None and "\x00" in v:
        raise ValueError("must not contain NUL characters")
    return v


class BypassRequest(BaseModel):
    """A request to bypass one input of an interlock, or the whole function."""

    interlock: str = Field(min_length=1, max_length=200, description="interlock key HAZARD_SOURCE.CODE")
    input_tag: str | None = Field(
        default=None, max_length=200, description="the input's tag key; omit to bypass the whole function"
    )
    reason: str = Field(min_length=1, max_length=_TEXT, description="why (旁路原因)")
    compensating_measures: str = Field(min_length=1, max_length=_TEXT, description="补偿措施")
    start: AwareDatetime | None = Field(default=None, description="ISO 8601 with offset; omitted: now")
    duration_min: int = Field(
        ge=1, le=720 * 60, description="minutes; at most the interlock's max_bypass_h (default 8 h)"
    )

    model_config = {
        "extra": "forbid",
        "json_schema_extra": {
            "examples": [
                {
                    "interlock": "AA-HS1.IL-101",
                    "input_tag": "AA.V1.PT1A",
                    "reason": "压力变送器PT1A校验",
                    "compensating_measures": "现场专人监护，DCS压力趋势每15分钟确认一次",
                    "start": "2026-11-30T08:00:00+08:00",
                    "duration_min": 120,
                }
            ]
        },
    }

    _blank = field_validator("reason", "compensating_measures")(_not_blank)


class Note(BaseModel):
    note: str | None = Field(default=None, max_length=_TEXT)

    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [{"note": "补偿措施已落实"}]}}

    _nul = field_validator("note")(_no_nul)


class RejectNote(BaseModel):
    note: str = Field(min_length=1, max_length=_TEXT, description="why it is rejected")

    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [{"note": "补偿措施不足"}]}}

    _blank = field_validator("note")(_not_blank)


class Bypass(BaseModel):
    id: uuid.UUID
    interlock: str
    enterprise: str
    county: str
    hazard_source: str
    input_tag: str | None = Field(description="null: the whole function")
    reason: str
    compensating_measures: str
    starts_at: datetime
    expires_at: datetime
    duration_min: float
    state: BypassState = Field(description="active/expired/approved of an approved permit: by the clock now")
    requested_by: str
    requested_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None
    restored_by: str | None
    restored_at: datetime | None
    restore_note: str | None

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "id": "6f1c2a8e-3b7d-4c1e-9a51-2f0d8e7b6c45",
                    "interlock": "AA-HS1.IL-101",
                    "enterprise": "AA",
                    "county": "孝义市",
                    "hazard_source": "AA-HS1",
                    "input_tag": "AA.V1.PT1A",
                    "reason": "压力变送器PT1A校验",
                    "compensating_measures": "现场专人监护",
                    "starts_at": "2026-11-30T00:00:00Z",
                    "expires_at": "2026-11-30T02:00:00Z",
                    "duration_min": 120,
                    "state": "active",
                    "requested_by": "陈静 (eng_aa)",
                    "requested_at": "2026-11-29T23:50:00Z",
                    "decided_by": "杨勇 (approver_aa)",
                    "decided_at": "2026-11-29T23:55:00Z",
                    "decision_note": None,
                    "restored_by": None,
                    "restored_at": None,
                    "restore_note": None,
                }
            ]
        }
    }


class BypassNotFound(Exception):
    pass


class BypassForbidden(Exception):
    pass


class BypassConflict(Exception):
    def __init__(self, message: str, state: BypassState) -> None:
        super().__init__(message)
        self.state = state


def computed_state(stored: str, starts_at: datetime, expires_at: datetime, now: datetime) -> BypassState:
    if stored != "approved":
        return BypassState(stored)
    if now >= expires_at:
        return BypassState.EXPIRED
    return BypassState.ACTIVE if now >= starts_at else BypassState.APPROVED


def _state_filter(state: BypassState, now: datetime) -> tuple[sql.Composable, list[Any]]:
    """The SQL condition of ``computed_state(...) == state`` on alias b."""
    match state:
        case BypassState.APPROVED:
            return sql.SQL("(b.state = 'approved' AND %s < b.starts_at)"), [now]
        case BypassState.ACTIVE:
            return sql.SQL("(b.state = 'approved' AND b.starts_at <= %s AND %s < b.expires_at)"), [now, now]
        case BypassState.EXPIRED:
            return sql.SQL("(b.state = 'approved' AND b.expires_at <= %s)"), [now]
        case _:
            return sql.SQL("b.state = %s"), [state.value]


_COLUMNS = sql.SQL(
    """b.id, b.interlock, b.enterprise, b.county, b.hazard_source, b.input_tag, b.reason,
       b.compensating_measures, b.starts_at, b.expires_at, b.state, b.requested_by, b.requested_by_id,
       b.requested_at, b.decided_by, b.decided_at, b.decision_note, b.restored_by, b.restored_at,
       b.restore_note"""
)


def _bypass(row: dict[str, Any], now: datetime) -> Bypass:
    row = dict(row)
    row.pop("requested_by_id", None)
    row["state"] = computed_state(row["state"], row["starts_at"], row["expires_at"], now)
    row["duration_min"] = (row["expires_at"] - row["starts_at"]).total_seconds() / 60
    return Bypass(**row)


async def list_bypasses(
    conn: Conn,
    scope: Scope,
    now: datetime,
    *,
    states: tuple[BypassState, ...] = (),
    interlock: str | None = None,
    interlocks: list[str] | None = None,
    enterprise: str | None = None,
    hazard_source: str | None = None,
    limit: int = 1000,
) -> list[Bypass]:
    """Permits in ``scope``, newest request first, filtered by any of ``states`` and the rest."""
    where, params = scope.where(sql.SQL("b.enterprise"), sql.SQL("b.county"))
    parts: list[sql.Composable] = [where]
    if states:
        ors = [_state_filter(s, now) for s in states]
        parts.append(sql.SQL("({})").format(sql.SQL(" OR ").join(c for c, _ in ors)))
        params += [p for _, ps in ors for p in ps]
    for column, value in (
        ("interlock", interlock),
        ("enterprise", enterprise),
        ("hazard_source", hazard_source),
    ):
        if value is not None:
            parts.append(sql.SQL("b.{} = %s").format(sql.Identifier(column)))
            params.append(value)
    if interlocks is not None:
        parts.append(sql.SQL("b.interlock = ANY(%s)"))
        params.append(interlocks)
    query = sql.SQL(
        "SELECT {} FROM interlock_bypass b WHERE {} ORDER BY b.requested_at DESC, b.id LIMIT %s"
    ).format(_COLUMNS, sql.SQL(" AND ").join(parts))
    with translate_errors("list bypasses"):
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, [*params, limit])
            return [_bypass(r, now) for r in await cur.fetchall()]


async def _row(conn: Conn, scope: Scope, bypass_id: uuid.UUID, lock: bool) -> dict[str, Any] | None:
    where, params = scope.where(sql.SQL("b.enterprise"), sql.SQL("b.county"))
    query = sql.SQL("SELECT {} FROM interlock_bypass b WHERE b.id = %s AND {}{}").format(
        _COLUMNS, where, sql.SQL(" FOR UPDATE OF b") if lock else sql.SQL("")
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, [bypass_id, *params])
        return await cur.fetchone()


async def get_bypass(conn: Conn, scope: Scope, bypass_id: uuid.UUID, now: datetime) -> Bypass:
    with translate_errors("read bypass"):
        row = await _row(conn, scope, bypass_id, lock=False)
    if row is None:
        raise BypassNotFound
    return _bypass(row, now)


async def insert_request(
    conn: Conn,
    who: Principal,
    *,
    interlock: str,
    enterprise: str,
    county: str,
    hazard_source: str,
    input_tag: str | None,
    reason: str,
    compensating_measures: str,
    starts_at: datetime,
    expires_at: datetime,
    now: datetime,
    address: str,
) -> Bypass:
    """Store a validated request (state requested) and audit it, in one transaction."""
    bypass_id = uuid.uuid4()
    with translate_errors("request bypass"):
        async with conn.transaction():
            await conn.execute(
                """INSERT INTO interlock_bypass (id, interlock, enterprise, county, hazard_source, input_tag,
                       reason, compensating_measures, starts_at, expires_at, state, requested_by,
                       requested_by_id, requested_at)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'requested', %s, %s, %s)""",
                (
                    bypass_id, interlock, enterprise, county, hazard_source, input_tag, reason,
                    compensating_measures, starts_at, expires_at, who.actor, who.user_id, now,
                ),
            )  # fmt: skip
            await record(
                conn,
                who,
                "bypass.request",
                interlock,
                address,
                {
                    "bypass_id": str(bypass_id),
                    "input_tag": input_tag,
                    "starts_at": starts_at.isoformat(),
                    "expires_at": expires_at.isoformat(),
                    "reason": reason,
                    "compensating_measures": compensating_measures,
                },
            )
            row = await _row(conn, who.scope, bypass_id, lock=False)
    assert row is not None  # just written, in the caller's scope (checked before)
    return _bypass(row, now)


Action = Literal["approve", "reject", "restore"]
_DECIDE = """UPDATE interlock_bypass SET state = %s, decided_by = %s, decided_by_id = %s, decided_at = %s,
                 decision_note = %s WHERE id = %s"""
_RESTORE = """UPDATE interlock_bypass SET state = %s, restored_by = %s, restored_by_id = %s, restored_at = %s,
                  restore_note = %s WHERE id = %s"""


async def transition(
    conn: Conn,
    who: Principal,
    bypass_id: uuid.UUID,
    action: Action,
    note: str | None,
    now: datetime,
    address: str,
) -> Bypass:
    """Approve or reject a request, or restore an approved permit (active, not yet started, or
    expired). Raises BypassNotFound (unknown or out of scope), BypassForbidden (role, or four
    eyes), BypassConflict (not allowed from the current state)."""
    with translate_errors(f"{action} bypass"):
        async with conn.transaction():
            row = await _row(conn, who.scope, bypass_id, lock=True)
            if row is None:
                raise BypassNotFound
            state = computed_state(row["state"], row["starts_at"], row["expires_at"], now)
            if action == "restore":
                if not who.may(Permission.BYPASS_REQUEST):
                    raise BypassForbidden(f"role {who.role} may not {Permission.BYPASS_REQUEST}")
                if row["state"] != "approved":
                    raise BypassConflict(f"cannot restore a bypass that is {state}", state)
                new, query = "restored", _RESTORE
            else:
                if not who.may(Permission.BYPASS_APPROVE):
                    raise BypassForbidden(f"role {who.role} may not {Permission.BYPASS_APPROVE}")
                if row["state"] != "requested":
                    raise BypassConflict(f"cannot {action} a bypass that is {state}", state)
                if action == "approve" and row["requested_by_id"] == who.user_id:
                    raise BypassForbidden(
                        "four eyes: a bypass must be approved by someone other than its requester"
                    )
                if action == "approve" and now >= row["expires_at"]:
                    raise BypassConflict("cannot approve: the requested period has already ended", state)
                new, query = ("approved" if action == "approve" else "rejected"), _DECIDE
            await conn.execute(query, (new, who.actor, who.user_id, now, note, bypass_id))
            await record(
                conn,
                who,
                f"bypass.{action}",
                row["interlock"],
                address,
                {
                    "bypass_id": str(bypass_id),
                    "input_tag": row["input_tag"],
                    "from": state.value,
                    "note": note,
                },
            )
            after = await _row(conn, who.scope, bypass_id, lock=False)
    assert after is not None
    return _bypass(after, now)
