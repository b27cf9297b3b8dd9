"""The audit log, for admins: who did what, in which role, from where, newest first.

Rows come from the API (logins, refusals, commands submitted, bypass decisions) and from the
engine (commands applied or rejected, suppression); audit rows are not per enterprise, so only
the ``admin`` role reads them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from psycopg import sql
from psycopg.rows import dict_row
from pydantic import AwareDatetime, BaseModel, Field

from api.deps import Db, require
from api.principal import Permission, Principal
from storage.db import translate_errors

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["audit"])

_NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL: 422, not a database error


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    role: str | None = Field(description="the actor's role; null for the engine and refused logins")
    action: str
    target: str
    address: str | None = Field(description="the client's address; null for the engine's own rows")
    detail: dict[str, Any]

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"id": 17, "at": "2026-11-30T08:15:02.120000Z", "actor": "张伟 (op_aa)",
                 "role": "enterprise_operator", "action": "alarm ack", "target": "AA.V1.LT1:HH",
                 "address": "10.2.3.4", "detail": {"command_id": "6f1c0c3e-3f6e-4f57-9d7c-7a8f0f4a1b2c"}}
            ]
        }
    }  # fmt: skip


@router.get(
    "/audit",
    response_model=list[AuditEntry],
    summary="The audit log (admins)",
    responses={403: {"description": "not an admin"}, 422: {"description": "bad filter"}},
)
async def audit_log(
    db: Db,
    _who: Annotated[Principal, Depends(require(Permission.AUDIT_READ))],
    start: Annotated[
        AwareDatetime | None, Query(description="from (inclusive), ISO 8601 with offset")
    ] = None,
    end: Annotated[AwareDatetime | None, Query(description="until (exclusive)")] = None,
    actor: Annotated[
        str | None, Query(max_length=200, pattern=_NO_NUL, description="rows whose actor contains this")
    ] = None,
    action: Annotated[str | None, Query(max_length=100, pattern=_NO_NUL)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    before_id: Annotated[
        int | None, Query(ge=1, le=2**62, description="page: rows older than this id")
    ] = None,
) -> list[AuditEntry]:
    if start is not None and end is not None and end <= start:
        raise HTTPException(
            422,
            [{"loc": ["query", "end"], "msg": "end must be after start", "type": "value_error"}],
        )
    where: list[sql.Composable] = [sql.SQL("true")]
    params: list[Any] = []
    for clause, value in (
        ("at >= %s", start),
        ("at < %s", end),
        ("strpos(actor, %s) > 0", actor),
        ("action = %s", action),
        ("id < %s", before_id),
    ):
        if value is not None:
            where.append(sql.SQL(clause))
            params.append(value)
    query = sql.SQL(
        "SELECT id, at, actor, role, action, target, address, detail FROM audit_log WHERE {} ORDER BY id DESC LIMIT %s"
    ).format(sql.SQL(" AND ").join(where))
    with translate_errors("read audit log"):
        async with db.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, [*params, limit])
            rows = await cur.fetchall()
    return [AuditEntry(**r) for r in rows]
