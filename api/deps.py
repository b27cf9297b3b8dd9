"""What every route depends on: the app's shared state, a pooled connection, the caller.

``caller`` accepts ``Authorization: Bearer <access token>`` or ``Bearer hwk_...`` / ``X-API-Key``
(an API key); anything else is 401 with ``WWW-Authenticate``. ``require(permission)`` answers 403
to a known caller whose role may not; tenancy (404 for what is outside the scope) is the route's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import AsyncConnectionPool

from api.principal import Permission, Principal
from api.ratelimit import SlidingWindow
from api.security import TokenError, TokenKind, read_token
from api.users import principal_by_id, principal_by_key
from core.plant import Plant
from core.settings import ApiSettings
from storage.db import Conn

__all__ = ["ApiState", "Caller", "Db", "State", "caller", "client_address", "connection", "require"]


@dataclass
class ApiState:
    """Shared by every request of one app: built by ``api.app.create_app``."""

    pool: AsyncConnectionPool[Any]
    dsn: str
    settings: ApiSettings
    secret: bytes
    plant: Plant | None  # limits, rationalization and interlock definitions; None: registry only
    login_limit: SlidingWindow = field(init=False)
    extras: dict[str, Any] = field(default_factory=dict)  # per-feature state (the live stream's hub)

    def __post_init__(self) -> None:
        self.login_limit = SlidingWindow(self.settings.login_per_min, 60.0)


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.hw
    return state


State = Annotated[ApiState, Depends(_state)]


async def connection(state: State) -> AsyncIterator[Conn]:
    """A pooled connection for one request (autocommit: each statement its own transaction,
    unless the route opens ``conn.transaction()``)."""
    async with state.pool.connection() as conn:
        yield conn


Db = Annotated[Conn, Depends(connection)]

_bearer = HTTPBearer(auto_error=False, description="An access token from /api/v1/auth/token, or an API key")
_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key (hwk_...)")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


async def caller(
    state: State,
    db: Db,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    key: Annotated[str | None, Depends(_key_header)],
) -> Principal:
    credential = key or (bearer.credentials if bearer else None)
    if not credential:
        raise _unauthorized("not authenticated")
    if credential.startswith("hwk_"):
        who = await principal_by_key(db, credential)
        if who is None:
            raise _unauthorized("invalid or revoked API key")
        return who
    try:
        claims = read_token(state.secret, credential, TokenKind.ACCESS)
    except TokenError:
        raise _unauthorized("invalid or expired token") from None
    who = await principal_by_id(db, claims.user_id, claims.version)
    if who is None:
        raise _unauthorized("invalid or expired token")
    return who


Caller = Annotated[Principal, Depends(caller)]


def require(permission: Permission) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency: the caller, if their role has ``permission``; else 403."""

    async def check(who: Caller) -> Principal:
        if not who.may(permission):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {who.role} may not {permission}")
        return who

    return check


def client_address(request: Request) -> str:
    """The peer's address as the socket saw it (a proxy in front must be trusted explicitly:
    uvicorn's --forwarded-allow-ips), for the audit log and the login rate limit."""
    return request.client.host if request.client else "unknown"
