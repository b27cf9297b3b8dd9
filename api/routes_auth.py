"""Logging in: the OAuth2 password flow (form fields username, password) issuing a short-lived
access token and a refresh token; refresh; who am I.

Refusals are one 401 whatever the cause (the audit log keeps the cause); a client address over
its login rate gets 429 with Retry-After; the failure that locks an account is journaled.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request, status
from pydantic import BaseModel, Field

from api.audit import record
from api.deps import Caller, Db, State, client_address
from api.security import TokenError, TokenKind, issue_token, read_token
from api.users import login, principal_by_id

__all__ = ["GRAFANA_URL", "router"]

GRAFANA_URL = "grafana_url"  # ApiState.extras: settings.grafana.url without a trailing slash

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


class Tokens(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="seconds until the access token expires")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "access_token": "eyJhbGciOi...",
                    "refresh_token": "eyJhbGciOi...",
                    "token_type": "bearer",
                    "expires_in": 900,
                }
            ]
        }
    }


class Me(BaseModel):
    username: str
    display_name: str
    role: str
    enterprise: str | None
    county: str | None
    via: str = Field(description="token, or key:<prefix> for an API key")
    grafana_url: str = Field(
        description="Grafana's address for the console's links to its boards (settings.grafana.url, "
        "no trailing slash); empty: no Grafana, no links"
    )


class RefreshRequest(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=4096)


def _tokens(state: State, user_id: int, version: int) -> Tokens:
    s = state.settings
    return Tokens(
        access_token=issue_token(state.secret, user_id, version, TokenKind.ACCESS, s.access_token_min * 60),
        refresh_token=issue_token(
            state.secret, user_id, version, TokenKind.REFRESH, s.refresh_token_h * 3600
        ),
        expires_in=round(s.access_token_min * 60),
    )


@router.post(
    "/token",
    response_model=Tokens,
    responses={401: {"description": "wrong credentials"}, 429: {"description": "too many attempts"}},
)
async def token(
    request: Request,
    state: State,
    db: Db,
    username: Annotated[str, Form(min_length=1, max_length=64)],
    password: Annotated[str, Form(min_length=1, max_length=1024)],
) -> Tokens:
    """Log in with a username and password (OAuth2 password flow)."""
    address = client_address(request)
    if not state.login_limit.allow(address):
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many login attempts from this address",
            headers={"Retry-After": str(state.login_limit.retry_after(address))},
        )
    s = state.settings
    result = await login(
        db, username, password, max_failures=s.login_max_failures, lockout=timedelta(minutes=s.lockout_min)
    )
    if result.user is None:
        named = username.replace("\x00", "")  # as typed, minus what PostgreSQL text cannot hold
        detail = {"reason": result.reason}
        await record(db, None, "login refused", f"user:{named}", address, detail, actor=named)
        if result.locked_now:
            await record(
                db, None, "account locked", f"user:{named}", address,
                {"failures": s.login_max_failures, "minutes": s.lockout_min}, actor=named,
            )  # fmt: skip
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "wrong username or password", headers={"WWW-Authenticate": "Bearer"}
        )
    who = result.user.principal("token")
    await record(db, who, "login", f"user:{who.username}", address)
    return _tokens(state, result.user.id, result.user.token_version)


@router.post("/refresh", response_model=Tokens, responses={401: {"description": "invalid refresh token"}})
async def refresh(body: RefreshRequest, state: State, db: Db) -> Tokens:
    """New tokens for a refresh token that is still valid (and whose user is still enabled,
    with an unchanged password)."""
    try:
        claims = read_token(state.secret, body.refresh_token, TokenKind.REFRESH)
    except TokenError:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or expired refresh token") from None
    who = await principal_by_id(db, claims.user_id, claims.version)
    if who is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or expired refresh token")
    return _tokens(state, claims.user_id, claims.version)


@router.get("/me", response_model=Me)
async def me(who: Caller, state: State) -> Me:
    """The caller as the API sees them: role and scope; and Grafana's address, for the console's
    links to its boards (on this authenticated route: an anonymous visitor learns nothing of it)."""
    return Me(
        username=who.username,
        display_name=who.display_name,
        role=who.role.value,
        enterprise=who.enterprise,
        county=who.county,
        via=who.via,
        grafana_url=state.extras.get(GRAFANA_URL, ""),
    )
