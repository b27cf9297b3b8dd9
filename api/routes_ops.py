"""Liveness and readiness for load balancers and supervisors (no authentication, no data).

``/healthz``: the process answers. ``/readyz``: the database answers and an engine's heartbeat
(engine_heartbeat, written by ``hazardwatch run``) is younger than ``api.engine_stale_s``; 503
naming what is wrong otherwise, so a balancer takes the replica out and an operator sees why.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.deps import State

__all__ = ["router"]

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str  # ready | not ready
    database: str  # ok | unavailable
    engine: str  # ok | stale | none
    engine_age_s: float | None = None


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Ready, responses={503: {"model": Ready, "description": "not ready"}})
async def readyz(state: State) -> JSONResponse:
    age: float | None = None
    try:
        async with state.pool.connection(timeout=3.0) as conn:
            cur = await conn.execute("SELECT max(at) FROM engine_heartbeat")
            row = await cur.fetchone()
        database = "ok"
        last: datetime | None = row[0] if row else None
        if last is None:
            engine = "none"
        else:
            age = max(0.0, (datetime.now(UTC) - last).total_seconds())
            engine = "ok" if age <= state.settings.engine_stale_s else "stale"
    except Exception:  # any failure to read (pool timeout, lost server, missing table) is "not ready"
        database, engine = "unavailable", "none"
    ready = database == "ok" and engine == "ok"
    body = Ready(status="ready" if ready else "not ready", database=database, engine=engine, engine_age_s=age)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
