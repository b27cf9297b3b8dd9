"""The live stream's hub: one LISTEN connection per API process, fanning alarm transitions and
latest values out to every connected client (``api.routes_stream``).

Invariants: the hub reads alarm_journal strictly by position ((seq, n), which the one writer
commits in order), so after a lost connection it resumes from the last row it handed out and no
subscriber sees a gap or a duplicate; a row is encoded once and joined once per distinct scope,
whatever the number of clients; each client's queue is bounded, and a client that falls behind
is dropped (told so, counted), never allowed to grow memory or hold the others back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge
from psycopg import sql

from api.principal import Scope
from core.backoff import Backoff
from core.errors import DatabaseUnavailable
from core.quality import name_of
from storage.db import Conn, connect, translate_errors

__all__ = [
    "LiveHub",
    "Position",
    "StreamOptions",
    "Subscription",
    "end_frame",
    "end_streams",
    "format_position",
    "hub_for",
    "journal_end",
    "journal_page",
    "parse_position",
]

log = logging.getLogger(__name__)

Position = tuple[int, int]  # (alarm_journal.seq, n)
BEFORE_ALL: Position = (0, -1)
_POSITION = re.compile(r"^(\d{1,18})\.(\d{1,9})$")
_RECONNECT = Backoff(initial_s=0.5, max_s=30.0, jitter=0.5, spread="below")
_APPLICATION = "hazardwatch-api-stream"  # the hub's connections, as pg_stat_activity names them


@dataclass(frozen=True, slots=True)
class StreamOptions:
    queue_max: int = 1000  # chunks waiting for one client before it is dropped (a chunk: one
    # fetch's rows for its scope, or one value tick), so a 100k-edge flood is ~100 chunks
    value_interval_s: float = 1.0  # at most one value event per client per interval
    keepalive_s: float = 15.0  # a comment when nothing else was sent (proxies cut idle streams)
    send_timeout_s: float = 30.0  # a client that takes no bytes for this long is cut
    page: int = 1000  # journal rows per query (hub and replay)
    key_session_s: float = 3600.0  # a stream opened with an API key ends after this (then the
    # client reconnects and the key is checked again: a revoked key's stream does not live on)
    ready_timeout_s: float = 5.0  # how long a new client waits for a hub that cannot connect
    reconnect: Backoff = _RECONNECT

    @classmethod
    def from_settings(cls, settings: object) -> StreamOptions:
        """Options from ``api.stream_*`` settings where the settings have them (else defaults)."""
        default = cls()
        return cls(
            queue_max=getattr(settings, "stream_queue_max", default.queue_max),
            value_interval_s=getattr(settings, "stream_value_interval_s", default.value_interval_s),
            keepalive_s=getattr(settings, "stream_keepalive_s", default.keepalive_s),
            send_timeout_s=getattr(settings, "stream_send_timeout_s", default.send_timeout_s),
            key_session_s=getattr(settings, "stream_key_session_s", default.key_session_s),
        )


def parse_position(text: str) -> Position | None:
    m = _POSITION.match(text.strip())
    return None if m is None else (int(m[1]), int(m[2]))


def format_position(p: Position) -> str:
    return f"{p[0]}.{p[1]}"


# --- frames ------------------------------------------------------------------------------------


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.astimezone(UTC).isoformat()


def _num(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None  # JSON has no NaN


def _json(data: object) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def end_frame(reason: str) -> bytes:
    """The last event of a stream the server ends (the client reconnects with Last-Event-ID)."""
    return f"event: end\ndata: {_json({'reason': reason})}\n\n".encode()


class AlarmRow(NamedTuple):
    position: Position
    enterprise: str
    county: str
    frame: bytes  # the whole SSE event


_JOURNAL = """
SELECT j.seq, j.n, j.alarm_key, s.enterprise, s.county, s.hazard_source, s.unit, s.subject, s.kind,
       s.priority, j.action, j.old_status, j.new_status, j.at, j.value, j."limit", j.actor, j.detail
FROM alarm_journal j JOIN alarm_state s ON s.key = j.alarm_key
WHERE (j.seq, j.n) > (%s, %s) AND (j.seq, j.n) <= (%s, %s) AND {scope}
ORDER BY j.seq, j.n
LIMIT %s
"""
_FOREVER: Position = (2**62, 2**30)


def _alarm_row(r: tuple[Any, ...]) -> AlarmRow:
    seq, n, key, enterprise, county, hs, unit, subject, kind, priority = r[:10]
    action, old, new, at, value, limit, actor, detail = r[10:]
    data = {
        "key": key, "enterprise": enterprise, "county": county, "hazard_source": hs, "unit": unit,
        "subject": subject, "kind": kind, "priority": priority, "action": action, "old_status": old,
        "new_status": new, "at": _iso(at), "value": _num(value), "limit": _num(limit), "actor": actor,
        "detail": detail,
    }  # fmt: skip
    frame = f"event: alarm\nid: {seq}.{n}\ndata: {_json(data)}\n\n".encode()
    return AlarmRow((seq, n), enterprise, county, frame)


async def journal_page(
    conn: Conn, after: Position, upto: Position | None, scope: Scope, limit: int
) -> list[AlarmRow]:
    """Journal rows in ``scope`` after ``after`` (up to ``upto`` inclusive), in position order."""
    where, params = scope.where(sql.Identifier("s", "enterprise"), sql.Identifier("s", "county"))
    query = sql.SQL(_JOURNAL).format(scope=where)
    hi = upto if upto is not None else _FOREVER
    with translate_errors("read the alarm journal"):
        cur = await conn.execute(query, [after[0], after[1], hi[0], hi[1], *params, limit])
        return [_alarm_row(r) for r in await cur.fetchall()]


async def journal_end(conn: Conn) -> Position:
    """The newest journal position (BEFORE_ALL for an empty journal)."""
    with translate_errors("read the alarm journal's end"):
        cur = await conn.execute("SELECT seq, n FROM alarm_journal ORDER BY seq DESC, n DESC LIMIT 1")
        row = await cur.fetchone()
    return BEFORE_ALL if row is None else (row[0], row[1])


def _alarm_chunk(rows: list[AlarmRow], scope: Scope) -> bytes:
    return b"".join(r.frame for r in rows if scope.allows(r.enterprise, r.county))


# --- subscriptions -----------------------------------------------------------------------------


class Subscription:
    """One client's bounded queue of encoded chunks; ended by the hub (dropped or shut down)."""

    def __init__(self, scope: Scope, limit: int) -> None:
        self.scope = scope
        self._limit = limit
        self._chunks: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self.finished = False

    def offer(self, chunk: bytes) -> bool:
        """Queue ``chunk``; False when the queue is full (the hub then drops this client)."""
        if self.finished:
            return True
        if len(self._chunks) >= self._limit:
            return False
        self._chunks.append(chunk)
        self._wake.set()
        return True

    def finish(self, last: bytes | None) -> None:
        """End: what is queued is discarded (it is what the client could not take), ``last`` sent."""
        self._chunks.clear()
        if last is not None:
            self._chunks.append(last)
        self.finished = True
        self._wake.set()

    async def next(self, timeout: float) -> bytes | None:
        """The next chunk; None after ``timeout`` without one, or once finished and drained."""
        if not self._chunks and not self.finished:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
        return self._chunks.popleft() if self._chunks else None


# --- the hub -----------------------------------------------------------------------------------

_TAGS = """
SELECT t.id, t.key, e.code, e.county
FROM tag t JOIN hazard_source h ON h.id = t.hazard_source_id JOIN enterprise e ON e.id = h.enterprise_id
"""


class _Tag(NamedTuple):
    key: str
    enterprise: str
    county: str


class LiveHub:
    """Alarm transitions and latest values for every subscriber of one API process."""

    def __init__(self, dsn: str, registry: CollectorRegistry | None, options: StreamOptions) -> None:
        self.dsn = dsn
        self.options = options
        self.position: Position = BEFORE_ALL  # the last journal row handed out
        self.connected = False
        self._subs: set[Subscription] = set()
        self._tags: dict[int, _Tag] = {}
        self._latest: dict[int, tuple[Any, ...]] = {}  # tag id -> (time, value, quality)
        self._items: dict[int, str] = {}  # tag id -> its JSON object in a value event
        self._snapshots: dict[Scope, bytes] = {}  # per scope, until the next value change
        self._ready = asyncio.Event()
        self._advanced = asyncio.Event()
        self._alarms_due = asyncio.Event()
        self._values_due = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._clients = Gauge(
            "hazardwatch_api_stream_clients", "Live stream clients connected", registry=registry
        )
        self._dropped = Counter(
            "hazardwatch_api_stream_dropped",
            "Live stream clients dropped for falling behind",
            registry=registry,
        )
        self._events = Counter(
            "hazardwatch_api_stream_rows", "Rows the hub read and fanned out", ["kind"], registry=registry
        )
        self._reconnects = Counter(
            "hazardwatch_api_stream_reconnects",
            "Times the hub lost its database connection",
            registry=registry,
        )

    # --- subscribers ---

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="live-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for sub in list(self._subs):
            self.unsubscribe(sub)
            sub.finish(end_frame("shutdown"))

    async def subscribe(self, scope: Scope, after: Position | None) -> tuple[Subscription, Position, bytes]:
        """A subscription receiving every journal row in ``scope`` after the returned position,
        and the value snapshot of the tags in scope (b"" if none). A client resuming from
        ``after`` replays (after, returned position] itself. DatabaseUnavailable if the hub
        cannot reach the database in time (answered 503 before the stream starts)."""
        self.start()
        try:
            async with asyncio.timeout(self.options.ready_timeout_s):
                await self._ready.wait()
                # a position another replica handed out but this hub has not read yet: catch up
                # first, so the live rows of this subscription all come after it
                while after is not None and after > self.position:
                    self._advanced.clear()
                    self._alarms_due.set()
                    await self._advanced.wait()
        except TimeoutError:
            raise DatabaseUnavailable("the live stream cannot reach the database") from None
        sub = Subscription(scope, self.options.queue_max)
        self._subs.add(sub)
        self._clients.set(len(self._subs))
        return sub, self.position, self._snapshot(scope)

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        self._clients.set(len(self._subs))

    @property
    def subscribers(self) -> frozenset[Subscription]:
        return frozenset(self._subs)

    def offer(self, sub: Subscription, chunk: bytes) -> None:
        """Queue ``chunk`` for ``sub``, dropping the client if its queue is full."""
        if not sub.offer(chunk):
            self.unsubscribe(sub)
            self._dropped.inc()
            sub.finish(end_frame("slow_client"))

    def _fan_out(self, chunk_for: Callable[[Scope], bytes]) -> None:
        chunks: dict[Scope, bytes] = {}
        for sub in list(self._subs):
            chunk = chunks.get(sub.scope)
            if chunk is None:
                chunk = chunks[sub.scope] = chunk_for(sub.scope)
            if chunk:
                self.offer(sub, chunk)

    # --- the connection ---

    async def _run(self) -> None:
        attempt = 0
        while True:
            listen = query = None
            try:
                listen = await connect(self.dsn, autocommit=True, application_name=_APPLICATION)
                query = await connect(self.dsn, autocommit=True, application_name=_APPLICATION)
                with translate_errors("listen"):
                    await listen.execute("LISTEN alarm_journal")
                    await listen.execute("LISTEN tag_latest")
                # listening first, then reading: a change in between is read now or notified
                if not self._ready.is_set():
                    self.position = await journal_end(query)
                await self._read_values(query)
                await self._read_alarms(query)
                self.connected = True
                self._ready.set()
                if attempt:
                    log.warning("live stream: database connection back")
                attempt = 0
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._listen(listen))
                    tg.create_task(self._loop(self._alarms_due, self._read_alarms, query, 0.0))
                    tg.create_task(
                        self._loop(self._values_due, self._read_values, query, self.options.value_interval_s)
                    )
            except Exception as exc:  # psycopg errors surface from notifies() untranslated
                while isinstance(exc, ExceptionGroup):  # from the task group: say what failed
                    exc = exc.exceptions[0]
                if attempt == 0:
                    log.warning("live stream: lost the database (%s); reconnecting", exc)
                self._reconnects.inc()
            finally:
                self.connected = False
                for conn in (listen, query):
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            await conn.close()
            await asyncio.sleep(self.options.reconnect.delay(attempt))
            attempt += 1

    async def _listen(self, listen: Conn) -> None:
        async for note in listen.notifies():
            (self._alarms_due if note.channel == "alarm_journal" else self._values_due).set()

    @staticmethod
    async def _loop(
        due: asyncio.Event, read: Callable[[Conn], Awaitable[None]], conn: Conn, pause: float
    ) -> None:
        while True:
            await due.wait()
            due.clear()
            await read(conn)
            if pause:  # the value throttle: changes meanwhile are folded into the next read
                await asyncio.sleep(pause)

    async def _read_alarms(self, conn: Conn) -> None:
        while True:
            rows = await journal_page(conn, self.position, None, Scope(), self.options.page)
            if not rows:
                break
            self.position = rows[-1].position
            self._events.labels("alarm").inc(len(rows))
            self._fan_out(partial(_alarm_chunk, rows))
            if len(rows) < self.options.page:
                break
        self._advanced.set()

    async def _read_values(self, conn: Conn) -> None:
        with translate_errors("read latest values"):
            cur = await conn.execute("SELECT tag_id, time, value, quality FROM tag_latest")
            rows = await cur.fetchall()
            if any(r[0] not in self._tags for r in rows):  # tags added by a registry sync
                cur = await conn.execute(_TAGS)
                self._tags = {r[0]: _Tag(r[1], r[2], r[3]) for r in await cur.fetchall()}
        changed: list[int] = []
        for tag_id, time, value, quality in rows:
            tag = self._tags.get(tag_id)
            seen = (time, _num(value), quality)  # NaN never equals itself: compared as None
            if tag is None or self._latest.get(tag_id) == seen:
                continue
            self._latest[tag_id] = seen
            item = {
                "tag": tag.key,
                "value": _num(value),
                "quality": quality,
                "quality_name": name_of(quality),
            }
            self._items[tag_id] = _json({**item, "time": _iso(time)})
            changed.append(tag_id)
        if not changed:
            return
        self._snapshots.clear()
        self._events.labels("value").inc(len(changed))
        changed.sort(key=lambda i: self._tags[i].key)
        self._fan_out(lambda scope: self._values_frame(scope, changed))

    def _values_frame(self, scope: Scope, ids: list[int]) -> bytes:
        items = [self._items[i] for i in ids if scope.allows(self._tags[i].enterprise, self._tags[i].county)]
        return f'event: value\ndata: {{"values":[{",".join(items)}]}}\n\n'.encode() if items else b""

    def _snapshot(self, scope: Scope) -> bytes:
        frame = self._snapshots.get(scope)
        if frame is None:
            ids = sorted(self._items, key=lambda i: self._tags[i].key)
            frame = self._snapshots[scope] = self._values_frame(scope, ids)
        return frame


async def end_streams(state: Any) -> None:
    """End every open stream (``event: end``, reason shutdown). For a server's shutdown before it
    waits for its connections: uvicorn waits for open responses before the lifespan's
    shutdown, so without this an open stream keeps a stopping server up for ever."""
    hub: LiveHub | None = state.extras.get("live_hub")
    if hub is not None:
        await hub.stop()


def hub_for(state: Any) -> LiveHub:
    """The app's hub (``state.extras["live_hub"]``), created on first use; its stop is
    registered in ``state.extras["on_shutdown"]``. ``state.extras["stream_options"]`` (a
    StreamOptions) overrides the options taken from the settings."""
    hub: LiveHub | None = state.extras.get("live_hub")
    if hub is None:
        options = state.extras.get("stream_options") or StreamOptions.from_settings(state.settings)
        hub = state.extras["live_hub"] = LiveHub(state.dsn, state.extras.get("metrics_registry"), options)
        state.extras.setdefault("on_shutdown", []).append(hub.stop)
    return hub
