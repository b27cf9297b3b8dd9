"""Alarms: the list (active or historical, filtered, paged), one alarm's detail (state, journal,
rationalization, notification evidence) and operator commands, answered with the engine's outcome.

The API never changes alarm state: it submits ``alarms.commands.Command`` rows that the engine
applies. Order of refusals: out of the caller's scope or unknown -> 404 (one body for both), role
may not -> 403, malformed -> 422; the submission and its audit row commit together, and a
command waiting for the engine's outcome holds no pooled connection (it reads on short ones).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Annotated, Any
from uuid import UUID, uuid4

import orjson
from fastapi import APIRouter, Body, Depends, Header, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field

from alarms.commands import (
    Command,
    CommandKind,
    CommandOutcome,
    CommandStatus,
    InvalidCommand,
    alarm_history,
    outcome,
    submit,
)
from alarms.model import Priority
from alarms.state import Status
from api import deps
from api.alarm_views import (
    JSON_OPTIONS,
    AlarmFilter,
    AlarmItem,
    Delivery,
    Rationalization,
    alarm_owner,
    deliveries,
    list_page,
    one_alarm,
    rationalization,
    utc,
)
from api.audit import record
from api.deps import ApiState, Caller, Db, State, caller, client_address
from api.principal import Permission, Principal, Role
from storage.db import translate_errors

__all__ = ["router"]

router = APIRouter(tags=["alarms"])

_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"  # no control characters (PostgreSQL refuses NUL in text)
_POLL_S = 0.1  # how often a command's outcome is read while waiting for the engine
_NOT_FOUND = "alarm not found"  # the same for an unknown alarm and one outside the scope
_NOT_FOUND_DOC: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "no such alarm in the caller's scope",
        "content": {"application/json": {"example": {"detail": _NOT_FOUND}}},
    }
}
_PERMISSION = {
    CommandKind.ACK: Permission.ALARM_HANDLE,
    CommandKind.RESET: Permission.ALARM_HANDLE,
    CommandKind.SHELVE: Permission.ALARM_HANDLE,
    CommandKind.UNSHELVE: Permission.ALARM_HANDLE,
    CommandKind.COMMENT: Permission.ALARM_HANDLE,  # and bureau duty (_may)
    CommandKind.FEEDBACK: Permission.ALARM_HANDLE,
    CommandKind.RESPOND: Permission.ALARM_HANDLE,
    CommandKind.SUPERVISE: Permission.ALARM_SUPERVISE,
    CommandKind.REMOVE: Permission.ALARM_SERVICE,
    CommandKind.RESTORE: Permission.ALARM_SERVICE,
}


class AlarmPage(BaseModel):
    total: int = Field(description="alarms matching the filters in the caller's scope")
    limit: int
    offset: int
    items: list[AlarmItem]


class JournalEntry(BaseModel):
    """A transition of the alarm, or a note (comment, feedback, supervision, response)."""

    id: str = Field(description="<seq>.<n>, as the live stream's event ids", examples=["1042.0"])
    at: datetime
    action: str = Field(examples=["ACKED"])
    old_status: Status
    new_status: Status
    value: float | None
    limit: float | None
    actor: str = Field(examples=["张伟 (op_aa)"])
    command_id: UUID | None
    detail: dict[str, Any] | None = Field(description="a note's arguments; why it was raised")


class AlarmDetail(BaseModel):
    alarm: AlarmItem
    journal: list[JournalEntry] = Field(description="the newest 100 rows, oldest first")
    rationalization: Rationalization | None = Field(description="None when the plant config lacks it")
    deliveries: list[Delivery] = Field(description="who was told, how, when (recipients masked)")


class CommandResult(BaseModel):
    command_id: UUID
    status: CommandStatus
    alarm_status: Status | None = Field(default=None, description="the alarm's status once applied")
    applied_at: datetime | None = None

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "command_id": "0b6f0f5e-8f7a-4f53-9d8e-2f0d6f7c1a11",
                    "status": "applied",
                    "alarm_status": "acknowledged",
                    "applied_at": "2026-11-30T08:15:02.125000Z",
                }
            ]
        }
    }


class CommandRejected(BaseModel):
    detail: str = Field(description="the engine's reason", examples=["critical alarms cannot be shelved"])
    command_id: UUID


class CommandView(BaseModel):
    command_id: UUID
    alarm: str
    action: CommandKind
    actor: str
    args: dict[str, Any]
    status: CommandStatus
    alarm_status: Status | None
    reason: str | None = Field(description="why the engine rejected it")
    submitted_at: datetime
    applied_at: datetime | None


def _invalid(loc: tuple[str, ...], message: str, value: Any = None) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": message, "input": value}])


def _check_window(start: datetime | None, end: datetime | None, max_days: int) -> None:
    for name, at in (("start", start), ("end", end)):
        if at is not None and at.tzinfo is None:
            raise _invalid(("query", name), "must have a time zone offset (e.g. +08:00 or Z)", str(at))
    if start is not None and end is not None:
        if end <= start:
            raise _invalid(("query", "end"), "must be after start", end.isoformat())
        if end - start > timedelta(days=max_days):
            raise _invalid(("query", "end"), f"the window may be at most {max_days} days", end.isoformat())


@router.get(
    "/api/v1/alarms",
    response_model=AlarmPage,
    summary="List alarms",
)
async def list_alarms(
    state: State,
    db: Db,
    who: Caller,
    active: Annotated[
        bool, Query(description="only alarms an operator sees or will see again (not with state)")
    ] = True,
    enterprise: Annotated[
        str | None, Query(max_length=64, pattern=_PRINTABLE, description="enterprise code")
    ] = None,
    hazard_source: Annotated[
        str | None, Query(max_length=64, pattern=_PRINTABLE, description="hazard source code")
    ] = None,
    priority: Priority | None = None,
    state_: Annotated[
        Status | None, Query(alias="state", description="one status (overrides active)")
    ] = None,
    start: Annotated[datetime | None, Query(description="raised at or after (ISO 8601 with offset)")] = None,
    end: Annotated[datetime | None, Query(description="raised before (ISO 8601 with offset)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    """Alarms in the caller's scope: those awaiting acknowledgement first, then by priority
    (critical first), then the oldest status change. ``active`` (default) keeps the statuses an
    operator must see or will see again (shelved); ``state`` picks one status instead; ``start``
    and ``end`` bound when the alarm was last raised. 422 names a bad filter: a time without its
    offset, ``end`` not after ``start`` or past ``api.max_history_days`` of it, a limit out of range."""
    _check_window(start, end, state.settings.max_history_days)
    f = AlarmFilter(
        active=active, enterprise=enterprise, hazard_source=hazard_source, priority=priority, state=state_,
        start=start, end=end, limit=limit, offset=offset,
    )  # fmt: skip
    total, items = await list_page(db, state, who.scope, f)
    # AlarmPage's JSON, serialized here (response_model documents it): pydantic's validation and
    # serialization of a 1,000-row page cost several times the query
    page = {"total": total, "limit": limit, "offset": offset, "items": items}
    return Response(orjson.dumps(page, option=JSON_OPTIONS), media_type="application/json")


AlarmKey = Annotated[
    str,
    Path(
        min_length=1, max_length=256, pattern=_PRINTABLE, description="alarm key", examples=["AA.V1.LT1:HH"]
    ),
]


@router.get(
    "/api/v1/alarms/{alarm}", response_model=AlarmDetail, summary="One alarm", responses=_NOT_FOUND_DOC
)
async def get_alarm(state: State, db: Db, who: Caller, alarm: AlarmKey) -> AlarmDetail:
    """The alarm's state, its newest 100 journal rows (transitions and notes, with who), its
    rationalization (cause, consequence, 处置措施, allowed response time) and who was notified
    of it, how and when (recipients masked)."""
    item = await one_alarm(db, state, who.scope, alarm)
    if item is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, _NOT_FOUND)
    journal = await alarm_history(db, alarm, limit=100)
    return AlarmDetail(
        alarm=item,
        journal=[
            JournalEntry(
                id=f"{h.seq}.{h.n}",
                at=utc(h.at) or h.at,
                action=h.action,
                old_status=h.old_status,
                new_status=h.new_status,
                value=_finite(h.value),
                limit=_finite(h.limit),
                actor=h.actor,
                command_id=h.command_id,
                detail=h.detail,
            )
            for h in journal
        ],
        rationalization=rationalization(state, item),
        deliveries=await deliveries(db, alarm),
    )


def _finite(v: float | None) -> float | None:
    return None if v is None or v != v else v  # NaN (a note's) is no JSON number


def _may(who: Principal, kind: CommandKind) -> bool:
    return who.may(_PERMISSION[kind]) or (kind is CommandKind.COMMENT and who.role is Role.BUREAU_DUTY)


_ARGS_EXAMPLES = {
    "ack": {"summary": "ack / reset (comment optional)", "value": {"comment": "已通知现场核实"}},
    "shelve": {"summary": "shelve", "value": {"minutes": 30, "reason": "液位计检修"}},
    "comment": {"summary": "comment", "value": {"text": "现场确认为仪表漂移"}},
    "feedback": {
        "summary": "feedback (处置反馈)",
        "value": {
            "cause_category": "instrument_fault",
            "action": "更换变送器",
            "handler": "李强",
            "handled_at": "2026-11-30T16:20:00+08:00",
        },
    },
    "supervise": {
        "summary": "supervise (督办)",
        "value": {"text": "请立即核查并反馈", "due_at": "2026-11-30T18:00:00+08:00"},
    },
    "respond": {"summary": "respond to a supervision", "value": {"text": "已处置完毕"}},
    "remove": {"summary": "remove from service", "value": {"reason": "变送器更换"}},
    "none": {"summary": "unshelve / restore (no arguments)", "value": {}},
}


async def _caller_briefly(
    state: State,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(deps._bearer)],
    key: Annotated[str | None, Depends(deps._key_header)],
) -> Principal:
    # deps.Caller's connection lives as long as the request: a command waiting for a slow or
    # stopped engine would hold it for api.command_wait_s, and pool_size of them starve the rest
    async with state.pool.connection() as conn:
        return await caller(state, conn, bearer, key)


async def _outcome(state: ApiState, command_id: UUID) -> CommandOutcome:
    """The command's outcome, read every ``_POLL_S`` for up to ``api.command_wait_s`` (then
    pending), each read on a connection taken from the pool and returned at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.settings.command_wait_s
    while True:
        async with state.pool.connection() as conn:
            result = await outcome(conn, command_id, timeout_s=0)
        left = deadline - loop.time()
        if result.status is not CommandStatus.PENDING or left <= 0:
            return result
        await asyncio.sleep(min(_POLL_S, left))


@router.post(
    "/api/v1/alarms/{alarm}/{action}",
    response_model=CommandResult,
    summary="Command an alarm",
    responses={
        **_NOT_FOUND_DOC,
        202: {"model": CommandResult, "description": "submitted; the engine has not applied it yet (poll /api/v1/commands/{command_id})"},
        403: {"description": "the caller's role may not do this"},
        409: {"model": CommandRejected, "description": "the engine refused it (its state or the priority's shelving limit)"},
    },
)  # fmt: skip
async def command_alarm(
    request: Request,
    state: State,
    who: Annotated[Principal, Depends(_caller_briefly)],
    alarm: AlarmKey,
    action: Annotated[CommandKind, Path(description="what to do")],
    args: Annotated[dict[str, Any] | None, Body(openapi_examples=_ARGS_EXAMPLES)] = None,
    idempotency_key: Annotated[
        UUID | None,
        Header(alias="Idempotency-Key", description="a UUID: a retry with it is answered, never repeated"),
    ] = None,
) -> Any:
    """Submit a command for the engine and wait up to ``api.command_wait_s`` for its outcome:
    200 applied (with the alarm's new status), 409 rejected (with the engine's reason), or 202
    pending. Arguments: ack/reset ``comment``?; shelve ``minutes`` (> 0, at most the priority's
    maximum) and ``reason``; comment ``text``; feedback ``cause_category``, ``action``,
    ``handler``, ``handled_at``?; supervise ``text``, ``due_at``; respond ``text``; remove
    ``reason``; unshelve and restore none. Times carry their offset. 422 names a malformed
    argument (``loc`` ["body", name]) or an Idempotency-Key already used for another command."""
    async with state.pool.connection() as db:  # returned before the wait for the engine
        owner = await alarm_owner(db, state, alarm)
        if owner is None or not who.scope.allows(*owner):
            raise HTTPException(status.HTTP_404_NOT_FOUND, _NOT_FOUND)
        if not _may(who, action):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {who.role} may not {action} alarms")
        try:
            cmd = Command(
                alarm_key=alarm, kind=action, actor=who.actor, role=who.role, enterprise=who.enterprise,
                args=args or {}, id=idempotency_key or uuid4(),
            )  # fmt: skip
        except InvalidCommand as exc:
            loc = (
                ("body", exc.field.removeprefix("args."))
                if exc.field.startswith("args.")
                else ("path", "alarm")
            )
            value = (args or {}).get(loc[1]) if loc[0] == "body" else alarm
            raise _invalid(loc, str(exc).removeprefix(f"{exc.field}: "), value) from None
        async with db.transaction():
            # one request per key at a time: a concurrent retry waits, then finds this one's row
            await db.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (str(cmd.id),))
            cur = await db.execute(
                "SELECT alarm_key, command, actor, args FROM alarm_command WHERE id = %s", (cmd.id,)
            )
            seen = await cur.fetchone()
            if seen is None:
                await submit(db, cmd)
                detail = {"command_id": str(cmd.id), "args": dict(cmd.args)}
                await record(db, who, f"alarm {action}", alarm, client_address(request), detail)
            elif tuple(seen) != (alarm, action.value, who.actor, dict(cmd.args)):
                raise _invalid(("header", "Idempotency-Key"), "already used for another command", str(cmd.id))
    result = await _outcome(state, cmd.id)
    if result.status is CommandStatus.REJECTED:
        body = CommandRejected(detail=result.reason or "rejected", command_id=cmd.id)
        return JSONResponse(body.model_dump(mode="json"), status.HTTP_409_CONFLICT)
    answer = CommandResult(
        command_id=cmd.id, status=result.status, alarm_status=result.result, applied_at=utc(result.applied_at)
    )
    if result.status is CommandStatus.PENDING:
        return JSONResponse(
            answer.model_dump(mode="json"),
            status.HTTP_202_ACCEPTED,
            headers={"Location": f"/api/v1/commands/{cmd.id}"},
        )
    return answer


@router.get(
    "/api/v1/commands/{command_id}",
    response_model=CommandView,
    summary="A command's outcome",
    responses={404: {"description": "no such command among the caller's own or on alarms in scope"}},
)
async def get_command(state: State, db: Db, who: Caller, command_id: UUID) -> CommandView:
    """A submitted command and what the engine made of it (pending, applied, rejected)."""
    with translate_errors("read alarm command"):
        cur = await db.execute(
            """SELECT alarm_key, command, actor, args, status, result, reason, submitted_at, applied_at
               FROM alarm_command WHERE id = %s""",
            (command_id,),
        )
        row = await cur.fetchone()
    if row is not None and row[2] != who.actor:
        owner = await alarm_owner(db, state, row[0])
        if owner is None or not who.scope.allows(*owner):
            row = None
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "command not found")
    return CommandView(
        command_id=command_id, alarm=row[0], action=CommandKind(row[1]), actor=row[2], args=row[3],
        status=CommandStatus(row[4]), alarm_status=None if row[5] is None else Status(row[5]), reason=row[6],
        submitted_at=utc(row[7]) or row[7], applied_at=utc(row[8]),
    )  # fmt: skip
