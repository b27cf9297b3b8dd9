"""GET /api/v1/stream: Server-Sent Events of alarm transitions and latest values in the caller's
scope, fed by the process's one ``api.live_hub.LiveHub``.

Resuming: a client sending ``Last-Event-ID`` gets every journal row in scope after it, then live
rows, without a gap or a duplicate: it subscribes first (live rows after the hub's position P
queue up), replays (last id, P] from the database, then drains its queue. A request holds no
pooled connection while it streams (the caller is looked up on one that is returned at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable
from typing import Annotated, Any, NamedTuple

from fastapi import APIRouter, Depends, Header, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from starlette.types import Receive, Scope, Send

from api import deps
from api.deps import State, caller, connection
from api.live_hub import (
    LiveHub,
    Position,
    Subscription,
    end_frame,
    format_position,
    hub_for,
    journal_end,
    journal_page,
    parse_position,
)
from api.principal import Principal
from api.security import TokenKind, read_token
from storage.db import Conn

__all__ = ["EventStreamResponse", "event_frames", "router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["stream"])

_OPEN = b": connected\nretry: 3000\n\n"  # retry: how long an EventSource waits to reconnect (ms)
_KEEPALIVE = b": keepalive\n\n"


class _Client(NamedTuple):
    who: Principal
    until: float  # Unix seconds: when its stream ends (its access token's expiry)
    reason: str  # the end event's reason then


async def _stream_caller(
    state: State,
    db: Annotated[Conn, Depends(connection, scope="function")],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(deps._bearer)],
    key: Annotated[str | None, Depends(deps._key_header)],
) -> _Client:
    # deps.Caller's connection lives as long as the response (request scope): a stream would
    # hold a pooled connection for hours, and 200 clients would starve every other request
    who = await caller(state, db, bearer, key)
    credential = key or (bearer.credentials if bearer else "")
    if credential.startswith("hwk_"):  # a key has no expiry: its stream re-authenticates now and then
        return _Client(who, time.time() + hub_for(state).options.key_session_s, "reauthenticate")
    return _Client(
        who, float(read_token(state.secret, credential, TokenKind.ACCESS).expires), "token_expired"
    )


class EventStreamResponse(StreamingResponse):
    """``text/event-stream`` from an iterator of encoded events: ends when the client goes away,
    and cuts a client that takes no bytes for ``send_timeout_s``."""

    media_type = "text/event-stream"

    def __init__(
        self, frames: AsyncGenerator[bytes, None], send_timeout_s: float, on_close: Callable[[], None]
    ) -> None:
        super().__init__(frames, headers={"X-Accel-Buffering": "no"})  # nginx: do not buffer
        self.frames = frames
        self.send_timeout_s = send_timeout_s
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def pump() -> None:
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
            try:
                async for chunk in self.frames:
                    async with asyncio.timeout(self.send_timeout_s):
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except (OSError, TimeoutError):
                raise
            except Exception as exc:  # the database went away mid-replay: end; the client resumes
                log.warning("live stream ended: %s", exc)
                await send({"type": "http.response.body", "body": end_frame("error"), "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        tasks = [asyncio.create_task(pump()), asyncio.create_task(watch())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.on_close()  # also when the iterator never started (its finally never runs)
            with contextlib.suppress(Exception):
                await self.frames.aclose()


async def event_frames(
    state: deps.ApiState,
    hub: LiveHub,
    sub: Subscription,
    start: Position,
    after: Position | None,
    snapshot: bytes,
    until: float | None = None,
    reason: str = "token_expired",
) -> AsyncGenerator[bytes, None]:
    """The stream of one subscription: the value snapshot, the replay (after, start], then live,
    until the Unix time ``until`` (the credential's expiry: a stream is no way around it, nor
    around a disabled user or a revoked key), then ``event: end`` with ``reason``."""
    try:
        yield _OPEN
        if snapshot:
            yield snapshot
        cursor = after
        while cursor is not None and cursor < start:
            async with state.pool.connection() as conn:  # per page: none held while sending
                rows = await journal_page(conn, cursor, start, sub.scope, hub.options.page)
            if rows:
                yield b"".join(r.frame for r in rows)
            cursor = rows[-1].position if len(rows) == hub.options.page else None
        while True:
            wait = hub.options.keepalive_s
            if until is not None:
                wait = min(wait, until - time.time())
                if wait <= 0:
                    yield end_frame(reason)
                    return
            chunk = await sub.next(wait)
            if chunk is not None:
                yield chunk
            elif sub.finished:
                return
            elif until is None or time.time() < until:
                yield _KEEPALIVE
    finally:
        hub.unsubscribe(sub)


def _bad_id(loc: tuple[str, str], text: str, why: str) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": why, "input": text}])


_DESCRIPTION = """
Server-Sent Events (`text/event-stream`) for the caller's scope (an enterprise's users see their
enterprise, a county bureau its county's enterprises). Clients send `Authorization` (use
`fetch()` with a readable body; `EventSource` cannot send headers, and tokens never go in URLs).

Events:

- `event: alarm`, `id: <seq>.<n>` (the alarm journal position), `data`: one transition as JSON:
  `key, enterprise, county, hazard_source, unit, subject, kind, priority, action, old_status,
  new_status, at, value, limit, actor, detail`.
- `event: value` (no id: state, not history): `{"values": [{"tag", "value", "quality",
  "quality_name", "time"}]}`, the latest values of tags in scope. The first one, right after
  connecting, is a snapshot of every tag in scope with a value; then at most one per second with
  the tags that changed.
- `event: end`, `data: {"reason": "slow_client" | "token_expired" | "reauthenticate" | "shutdown"
  | "error"}`: the server ends the stream (a client that fell more than the queue limit behind is
  dropped; a stream opened with an access token ends when the token expires, one opened with an
  API key after an hour); reconnect (with a fresh token) and `Last-Event-ID`.
- Comments (`: keepalive`) every 15 s when nothing else was sent.

Without `Last-Event-ID` the stream starts with what happens from now on (load `GET
/api/v1/alarms` for the current list). With it (header, or `last_event_id` for the first
connection) every transition in scope after that position comes first, in order, then live
ones, with no gap and no duplicate. A malformed id, or one after the end of the journal (a
different or restored database: reload the alarm list and reconnect without it), is 422.
"""

_EXAMPLE = (
    ": connected\nretry: 3000\n\n"
    'event: value\ndata: {"values":[{"tag":"AA.V1.LT1","value":9.5,"quality":192,"quality_name":"GOOD",'
    '"time":"2026-11-30T08:00:00+00:00"}]}\n\n'
    'event: alarm\nid: 42.0\ndata: {"key":"AA.V1.LT1:HH","enterprise":"AA","county":"孝义市",'
    '"hazard_source":"AA-HS1","unit":null,"subject":"AA.V1.LT1","kind":"HH","priority":"high",'
    '"action":"RAISED","old_status":"normal","new_status":"unacknowledged","at":"2026-11-30T08:00:01+00:00",'
    '"value":9.5,"limit":8.6,"actor":"engine","detail":null}\n\n'
)


@router.get(
    "/stream",
    response_class=EventStreamResponse,
    status_code=200,  # FastAPI reads the default from the response class's __init__ otherwise
    summary="Live alarm transitions and latest values (Server-Sent Events)",
    description=_DESCRIPTION,
    responses={
        200: {
            "description": "an endless event stream",
            "content": {"text/event-stream": {"schema": {"type": "string"}, "example": _EXAMPLE}},
        },
        401: {"description": "not authenticated"},
        503: {"description": "the database is unavailable"},
    },
)
async def stream(
    state: State,
    client: Annotated[_Client, Depends(_stream_caller)],
    last_event_id_header: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            max_length=40,
            description="the id of the last event received: `<seq>.<n>`",
            examples=["42.0"],
        ),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Query(max_length=40, description="as Last-Event-ID, for a first connection", examples=["42.0"]),
    ] = None,
) -> Any:
    after = None
    text, loc = (
        (last_event_id_header, ("header", "Last-Event-ID"))
        if last_event_id_header is not None
        else (last_event_id, ("query", "last_event_id"))
    )
    if text is not None:
        after = parse_position(text)
        if after is None:
            raise _bad_id(loc, text, "an event id is <seq>.<n>, as the stream sent it")
        async with state.pool.connection() as conn:
            end = await journal_end(conn)
        if after > end:
            raise _bad_id(
                loc,
                text,
                f"after the end of the alarm journal ({format_position(end)}): reconnect without it",
            )
    hub = hub_for(state)
    sub, start, snapshot = await hub.subscribe(client.who.scope, after)
    frames = event_frames(state, hub, sub, start, after, snapshot, client.until, client.reason)
    return EventStreamResponse(frames, hub.options.send_timeout_s, lambda: hub.unsubscribe(sub))
