"""Interlocks (SIS functions) with their live effective voting and demand history, and the bypass
permit workflow (request -> approve | reject; approved -> active -> expired | restored).

Interlock definitions come from the plant (``State.plant``; none without one); values from
tag_latest; demand history from alarm_journal (keys HAZARD_SOURCE.CODE:TRIP_DEMAND and
:NO_ACTION). Tenancy: an interlock or permit outside the caller's scope is answered as unknown
(404; a request naming one: 422 on ``interlock``, as for an unknown key).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field

from api.bypass import (
    OPEN_STATES,
    Bypass,
    BypassConflict,
    BypassForbidden,
    BypassNotFound,
    BypassRequest,
    BypassState,
    Note,
    RejectNote,
    get_bypass,
    insert_request,
    list_bypasses,
    transition,
)
from api.deps import Caller, Db, State, client_address, require
from api.interlock_views import Defined, InterlockView, Latest, defined_interlocks, interlock_view, tag_keys
from api.principal import Permission, Principal
from storage.db import Conn, translate_errors

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["interlocks"])

DEMAND_KINDS = ("TRIP_DEMAND", "NO_ACTION")  # core.conditions.RuleKind names: the alarm key suffixes
MAX_START_AHEAD = timedelta(days=30)
_NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL


class Problem(BaseModel):
    detail: str


class ConflictDetail(BaseModel):
    message: str
    state: BypassState = Field(description="the permit's state now")


class Conflict(BaseModel):
    detail: ConflictDetail

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"detail": {"message": "cannot approve a bypass that is rejected", "state": "rejected"}}
            ]
        }
    }


_UNAUTHORIZED: dict[int | str, dict[str, Any]] = {401: {"model": Problem, "description": "not authenticated"}}
_MALFORMED: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "a body that is not UTF-8 JSON"}
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "unknown, or outside the caller's scope"}
}
_FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: {"model": Problem, "description": "the caller's role may not; or four eyes"}
}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": Conflict, "description": "not allowed from the permit's current state"}
}
_INVALID: dict[int | str, dict[str, Any]] = {422: {"description": "invalid input, naming the field"}}


class InterlockNow(InterlockView):
    bypasses: list[Bypass] = Field(
        description="open permits: requested, approved (start ahead), active, expired and not restored"
    )
    unpermitted_bypasses: list[str] = Field(
        description="inputs whose bypass switch is on without an active permit covering them"
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "key": "AA-HS1.IL-101",
                    "code": "IL-101",
                    "name": "液氨储罐压力高高联锁切断进料",
                    "voting": "2oo3",
                    "effective_voting": "2oo2",
                    "can_trip": True,
                    "degraded": True,
                    "bypassed_inputs": ["AA.V1.PT1A"],
                }
            ]
        }
    )


class DemandEvent(BaseModel):
    """One alarm_journal row of the interlock's trip demand or demand-without-action alarm."""

    seq: int
    n: int
    alarm_key: str
    kind: str = Field(description="TRIP_DEMAND or NO_ACTION")
    action: str
    old_status: str
    new_status: str
    at: datetime
    value: float | None
    limit: float | None
    actor: str
    detail: dict[str, Any] | None


class InterlockDetail(InterlockNow):
    demand_history: list[DemandEvent] = Field(description="newest first")


def _now() -> datetime:
    return datetime.now(UTC)


def _in_scope(state: State, who: Principal) -> list[Defined]:
    return [
        d for d in defined_interlocks(state.plant) if who.scope.allows(d.enterprise.code, d.enterprise.county)
    ]


def _find(state: State, who: Principal, key: str) -> Defined | None:
    return next((d for d in _in_scope(state, who) if d.key == key), None)


async def _latest(conn: Conn, keys: set[str]) -> tuple[dict[str, Latest], dict[str, str]]:
    """Latest readings and names of the tags ``keys`` (a tag that never reported: no reading)."""
    with translate_errors("read latest values"):
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                """SELECT t.key, t.name, l.value, l.quality, l.time
                   FROM tag t LEFT JOIN tag_latest l ON l.tag_id = t.id WHERE t.key = ANY(%s)""",
                (sorted(keys),),
            )
            rows = await cur.fetchall()
    latest = {
        r["key"]: Latest(r["value"], r["quality"], r["time"].astimezone(UTC))
        for r in rows
        if r["time"] is not None
    }
    return latest, {r["key"]: r["name"] for r in rows}


def _covered(b: Bypass, tag: str) -> bool:
    return b.state == BypassState.ACTIVE and (b.input_tag is None or b.input_tag == tag)


async def _views(conn: Conn, who: Principal, found: list[Defined], now: datetime) -> list[InterlockNow]:
    if not found:
        return []
    keys = set().union(*(tag_keys(d) for d in found))
    latest, names = await _latest(conn, keys)
    permits = await list_bypasses(conn, who.scope, now, states=OPEN_STATES, interlocks=[d.key for d in found])
    out = []
    for d in found:
        view = interlock_view(d, latest, names)
        mine = [b for b in permits if b.interlock == d.key]
        out.append(
            InterlockNow(
                **view.model_dump(),
                bypasses=mine,
                unpermitted_bypasses=[
                    t for t in view.bypassed_inputs if not any(_covered(b, t) for b in mine)
                ],
            )
        )
    return out


@router.get(
    "/interlocks",
    response_model=list[InterlockNow],
    responses={**_UNAUTHORIZED, **_INVALID},
    summary="Interlocks with their effective voting now",
    description=(
        "Every safety instrumented function in the caller's scope: configured voting (MooN), each "
        "input's latest value and quality, whether it trips, is bypassed (its switch >= 0.5) or "
        "failed (BAD or never reported); the effective voting with those inputs out (a 2oo3 with "
        "one bypass votes 2oo2), whether it can still trip, the final element's state and the open "
        "bypass permits. Filters outside the scope match nothing."
    ),
)
async def interlocks(
    state: State,
    db: Db,
    who: Caller,
    enterprise: Annotated[str | None, Query(max_length=64, description="enterprise code")] = None,
    hazard_source: Annotated[str | None, Query(max_length=64, description="hazard source code")] = None,
) -> list[InterlockNow]:
    found = [
        d
        for d in _in_scope(state, who)
        if (enterprise is None or d.enterprise.code == enterprise)
        and (hazard_source is None or d.hazard_source.code == hazard_source)
    ]
    return await _views(db, who, found, _now())


@router.get(
    "/interlocks/{interlock}",
    response_model=InterlockDetail,
    summary="One interlock now, with its demand history",
    description=(
        "As in the list, plus the alarm journal of its trip demand (`:TRIP_DEMAND`) and demand "
        "without action (`:NO_ACTION`) alarms, newest first."
    ),
    responses={**_UNAUTHORIZED, **_NOT_FOUND, **_INVALID},
)
async def interlock(
    state: State,
    db: Db,
    who: Caller,
    interlock: Annotated[str, Path(max_length=200, description="interlock key HAZARD_SOURCE.CODE")],
    limit: Annotated[int, Query(ge=1, le=1000, description="journal rows at most")] = 100,
) -> InterlockDetail:
    d = _find(state, who, interlock)
    if d is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "interlock not found")
    (now,) = await _views(db, who, [d], _now())
    with translate_errors("read demand history"):
        async with db.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                """SELECT seq, n, alarm_key, action, old_status, new_status, at, value, "limit", actor,
                          detail
                   FROM alarm_journal WHERE alarm_key = ANY(%s)
                   ORDER BY seq DESC, n DESC LIMIT %s""",
                ([f"{d.key}:{k}" for k in DEMAND_KINDS], limit),
            )
            rows = await cur.fetchall()
    history = [
        DemandEvent(**{**r, "at": r["at"].astimezone(UTC), "kind": r["alarm_key"].rpartition(":")[2]})
        for r in rows
    ]
    return InterlockDetail(**now.model_dump(), demand_history=history)


# --- bypass permits -----------------------------------------------------------------------


def _invalid(field: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", field), "msg": message, "type": "value_error"}])


@router.get(
    "/bypasses",
    response_model=list[Bypass],
    responses={**_UNAUTHORIZED, **_INVALID},
    summary="Bypass permits",
    description="Permits in the caller's scope, newest request first. `state` is computed by the clock now.",
)
async def bypasses(
    db: Db,
    who: Caller,
    state: Annotated[list[BypassState] | None, Query(description="any of these states")] = None,
    interlock: Annotated[str | None, Query(max_length=200, pattern=_NO_NUL)] = None,
    enterprise: Annotated[str | None, Query(max_length=64, pattern=_NO_NUL)] = None,
    hazard_source: Annotated[str | None, Query(max_length=64, pattern=_NO_NUL)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[Bypass]:
    return await list_bypasses(
        db,
        who.scope,
        _now(),
        states=tuple(state or ()),
        interlock=interlock,
        enterprise=enterprise,
        hazard_source=hazard_source,
        limit=limit,
    )


@router.get(
    "/bypasses/{bypass_id}",
    response_model=Bypass,
    summary="One bypass permit",
    responses={**_UNAUTHORIZED, **_NOT_FOUND, **_INVALID},
)
async def bypass(db: Db, who: Caller, bypass_id: uuid.UUID) -> Bypass:
    try:
        return await get_bypass(db, who.scope, bypass_id, _now())
    except BypassNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "bypass not found") from None


@router.post(
    "/bypasses",
    response_model=Bypass,
    status_code=status.HTTP_201_CREATED,
    summary="Request a bypass (旁路申请)",
    description=(
        "Engineers, enterprise admins and admins request a bypass of one input (`input_tag`) or "
        "the whole function, with reason and compensating measures (补偿措施), from `start` (default "
        "now) for `duration_min` minutes, at most the interlock's `max_bypass_h`. The permit "
        "waits for approval by someone else (`approve`)."
    ),
    responses={**_MALFORMED, **_UNAUTHORIZED, **_FORBIDDEN, **_INVALID},
)
async def request_bypass(
    request: Request,
    state: State,
    db: Db,
    who: Annotated[Principal, Depends(require(Permission.BYPASS_REQUEST))],
    body: BypassRequest,
) -> Bypass:
    d = _find(state, who, body.interlock)
    if d is None:
        raise _invalid("interlock", f"unknown interlock {body.interlock!r}")
    if body.input_tag is not None and body.input_tag not in d.input_keys:
        raise _invalid("input_tag", f"not an input of {d.key} (inputs: {', '.join(d.input_keys)})")
    limit_min = round(d.interlock.max_bypass_h * 60)
    if body.duration_min > limit_min:
        raise _invalid(
            "duration_min", f"at most {limit_min} min (max_bypass_h {d.interlock.max_bypass_h:g} of {d.key})"
        )
    now = _now()
    start = body.start or now
    if start > now + MAX_START_AHEAD:
        raise _invalid("start", f"at most {MAX_START_AHEAD.days} days ahead")
    if start + timedelta(minutes=body.duration_min) <= now:  # compared before converting: no overflow
        raise _invalid("start", "the bypass would have ended already")
    start = start.astimezone(UTC)
    expires = start + timedelta(minutes=body.duration_min)
    return await insert_request(
        db,
        who,
        interlock=d.key,
        enterprise=d.enterprise.code,
        county=d.enterprise.county,
        hazard_source=d.hazard_source.code,
        input_tag=body.input_tag,
        reason=body.reason,
        compensating_measures=body.compensating_measures,
        starts_at=start,
        expires_at=expires,
        now=now,
        address=client_address(request),
    )


async def _transition(
    request: Request, db: Db, who: Principal, bypass_id: uuid.UUID, action: Any, note: str | None
) -> Bypass:
    try:
        return await transition(db, who, bypass_id, action, note, _now(), client_address(request))
    except BypassNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "bypass not found") from None
    except BypassForbidden as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    except BypassConflict as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT, {"message": str(exc), "state": exc.state.value}
        ) from None


_TRANSITION_ERRORS: dict[int | str, dict[str, Any]] = {
    **_MALFORMED, **_UNAUTHORIZED, **_NOT_FOUND, **_FORBIDDEN, **_CONFLICT, **_INVALID,
}  # fmt: skip


@router.post(
    "/bypasses/{bypass_id}/approve",
    response_model=Bypass,
    summary="Approve a requested bypass",
    description="Approvers and admins, never the requester (four eyes). Active from its start until it expires.",
    responses=_TRANSITION_ERRORS,
)
async def approve(
    request: Request, db: Db, who: Caller, bypass_id: uuid.UUID, body: Annotated[Note | None, Body()] = None
) -> Bypass:
    return await _transition(request, db, who, bypass_id, "approve", body.note if body else None)


@router.post(
    "/bypasses/{bypass_id}/reject",
    response_model=Bypass,
    summary="Reject a requested bypass",
    description="Approvers and admins; the note says why.",
    responses=_TRANSITION_ERRORS,
)
async def reject(request: Request, db: Db, who: Caller, bypass_id: uuid.UUID, body: RejectNote) -> Bypass:
    return await _transition(request, db, who, bypass_id, "reject", body.note)


@router.post(
    "/bypasses/{bypass_id}/restore",
    response_model=Bypass,
    summary="Restore an approved bypass (恢复联锁)",
    description=(
        "Engineers, enterprise admins and admins record that the interlock is back in service: "
        "from approved (start ahead: withdrawn), active, or expired (overdue)."
    ),
    responses=_TRANSITION_ERRORS,
)
async def restore(
    request: Request, db: Db, who: Caller, bypass_id: uuid.UUID, body: Annotated[Note | None, Body()] = None
) -> Bypass:
    return await _transition(request, db, who, bypass_id, "restore", body.note if body else None)
