"""The engine's heartbeat in the database (engine_heartbeat), for the API's /readyz and the
console: "is anyone applying commands and raising alarms?", and with it the engine's collector
and historian health (collector_status, historian_status) for Grafana's data-quality board.

One transaction every ``interval_s`` on a connection kept open (reopened after a loss): the
heartbeat, then, when the runtime gives a status snapshot, one statement for all its sources
(arrays unnested, so 1,000 sources cost one round trip), one deleting the rows of sources it no
longer has, and its historian row. Failures are logged on the transition only and never stop the
loop: the local heartbeat file (storage/heartbeat.py) stays the crash detector; this one only
tells other processes.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from operator import attrgetter

from core.clock import Clock
from core.redact import redact
from storage.db import Conn, connect, translate_errors

__all__ = [
    "CollectionGap",
    "CollectorStatus",
    "HistorianStatus",
    "StatusSnapshot",
    "beat_once",
    "engine_beat_loop",
    "write_status",
]

log = logging.getLogger(__name__)

# A client library's message may be long (a traceback's text) or carry a NUL, which a text
# column refuses: either would fail the heartbeat's transaction with it.
LAST_ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class CollectorStatus:
    """One collector_status row (the engine and ``at`` are the beat's); fields in column order."""

    source: str
    enterprise: str | None  # None: its tags belong to several enterprises
    protocol: str  # opcua | modbus
    state: str  # starting | ok | failed (collector.base.RunnerStats)
    up: bool
    devices_up: int
    devices_total: int
    tags: int
    readings: int
    errors: int
    reconnects: int
    restarts: int
    last_ok: datetime | None
    failed_since: datetime | None  # None: not failing
    last_error: str = ""


@dataclass(frozen=True, slots=True)
class HistorianStatus:
    """The historian_status row: the spooling writer's counters (storage/spooling.py) and the
    crash-gap markers this run stamped."""

    db_up: bool
    pending_rows: int
    pending_bytes: int
    written_rows: int
    drained_rows: int
    dropped_rows: int
    quarantined_rows: int
    gap_markers: int


@dataclass(frozen=True, slots=True)
class CollectionGap:
    """A crash of the previous run, as this run's start marked it (a collection_gap row):
    nothing was collected from ``start`` (the dead run's last beat + one interval) to ``end``
    (this run's start); ``points`` BAD|COMM_FAILURE markers were stamped at ``start``."""

    start: datetime
    end: datetime
    points: int


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    """Everything one beat writes beside the heartbeat; taken on the event loop, where the
    runners' stats live, so no row mixes two moments of one runner."""

    collectors: Sequence[CollectorStatus]
    historian: HistorianStatus | None  # None: no historian row for this engine
    # The crash gap this run marked at its start, written with the beats until one commits
    # (idempotent: the gap's start is part of the key), so a start during an outage records it too.
    gap: CollectionGap | None = None


_UPSERT_COLLECTORS = """
    INSERT INTO collector_status (engine, at, source, enterprise, protocol, state, up, devices_up,
        devices_total, tags, readings, errors, reconnects, restarts, last_ok, failed_since, last_error)
    SELECT %s, %s, * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::boolean[],
        %s::integer[], %s::integer[], %s::integer[], %s::bigint[], %s::bigint[], %s::bigint[],
        %s::bigint[], %s::timestamptz[], %s::timestamptz[], %s::text[])
    ON CONFLICT (engine, source) DO UPDATE SET at = excluded.at, enterprise = excluded.enterprise,
        protocol = excluded.protocol, state = excluded.state, up = excluded.up,
        devices_up = excluded.devices_up, devices_total = excluded.devices_total, tags = excluded.tags,
        readings = excluded.readings, errors = excluded.errors, reconnects = excluded.reconnects,
        restarts = excluded.restarts, last_ok = excluded.last_ok, failed_since = excluded.failed_since,
        last_error = excluded.last_error"""
_DELETE_GONE = "DELETE FROM collector_status WHERE engine = %s AND source <> ALL(%s::text[])"
_UPSERT_HISTORIAN = """
    INSERT INTO historian_status (engine, at, db_up, pending_rows, pending_bytes, written_rows,
        drained_rows, dropped_rows, quarantined_rows, gap_markers)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (engine) DO UPDATE SET at = excluded.at, db_up = excluded.db_up,
        pending_rows = excluded.pending_rows, pending_bytes = excluded.pending_bytes,
        written_rows = excluded.written_rows, drained_rows = excluded.drained_rows,
        dropped_rows = excluded.dropped_rows, quarantined_rows = excluded.quarantined_rows,
        gap_markers = excluded.gap_markers"""
# The statements' parameters in the dataclasses' field order.
_collector_row = attrgetter(*(f.name for f in fields(CollectorStatus)))
_historian_row = attrgetter(*(f.name for f in fields(HistorianStatus)))


def _clean(text: str) -> str:
    """An error for a table every Grafana viewer reads: passwords of URLs and DSNs masked (as
    in the logs, core.redact), no NUL, bounded."""
    return redact(text.replace("\x00", "\ufffd"))[:LAST_ERROR_CHARS]


async def beat_once(conn: Conn, name: str, started_at: datetime, now: datetime) -> None:
    with translate_errors("engine heartbeat"):
        await conn.execute(
            """INSERT INTO engine_heartbeat (name, at, started_at, host, pid) VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (name) DO UPDATE SET at = excluded.at, started_at = excluded.started_at,
                   host = excluded.host, pid = excluded.pid""",
            (name, now, started_at, socket.gethostname(), os.getpid()),
        )


async def write_status(conn: Conn, name: str, snapshot: StatusSnapshot, now: datetime) -> None:
    """``name``'s collector and historian rows as ``snapshot`` has them, at ``now``: upserted,
    and the rows of sources it does not have deleted (part of the caller's transaction)."""
    # One row per source: a name twice would fail the upsert, and the heartbeat with it.
    rows = [_collector_row(c) for c in {c.source: c for c in snapshot.collectors}.values()]
    with translate_errors("collector status"):
        if rows:
            columns = [list(column) for column in zip(*rows, strict=True)]
            columns[-1] = [_clean(e) for e in columns[-1]]
            await conn.execute(_UPSERT_COLLECTORS, (name, now, *columns))
        await conn.execute(_DELETE_GONE, (name, [r[0] for r in rows]))
        if snapshot.historian is None:
            await conn.execute("DELETE FROM historian_status WHERE engine = %s", (name,))
        else:
            await conn.execute(_UPSERT_HISTORIAN, (name, now, *_historian_row(snapshot.historian)))
        if snapshot.gap is not None:
            g = snapshot.gap
            await conn.execute(
                """INSERT INTO collection_gap (engine, gap_from, gap_to, points, marked_at)
                   VALUES (%s, %s, %s, %s, %s) ON CONFLICT (engine, gap_from) DO NOTHING""",
                (name, g.start, g.end, g.points, now),
            )


async def engine_beat_loop(
    dsn: str,
    name: str,
    clock: Clock,
    interval_s: float = 5.0,
    status: Callable[[], StatusSnapshot] | None = None,
    written: Callable[[StatusSnapshot], None] | None = None,
) -> None:
    """Beat until cancelled; with ``status``, write its snapshot with every beat, and tell
    ``written`` each snapshot that committed (the runtime then drops the gap it carried)."""
    started_at = datetime.fromtimestamp(clock.now_us() / 1e6, UTC)
    conn: Conn | None = None
    failing = False
    snapshot_failing = False
    try:
        while True:
            snapshot = None
            if status is not None:
                try:
                    snapshot = status()
                    snapshot_failing = False
                except Exception:  # a bug in the snapshot must not silence the heartbeat
                    if not snapshot_failing:
                        log.exception("engine heartbeat: status snapshot failed; beating without it")
                    snapshot_failing = True
            try:
                if conn is None or conn.closed:
                    conn = await connect(dsn, autocommit=True, application_name="hazardwatch-heartbeat")
                now = datetime.fromtimestamp(clock.now_us() / 1e6, UTC)
                async with conn.transaction():
                    await beat_once(conn, name, started_at, now)
                    if snapshot is not None:
                        await write_status(conn, name, snapshot, now)
                if snapshot is not None and written is not None:
                    written(snapshot)
                if failing:
                    log.warning("engine heartbeat: database reachable again")
                failing = False
            except Exception as exc:  # never end the loop
                if not failing:
                    log.warning("engine heartbeat: cannot write (%s: %s); retrying", type(exc).__name__, exc)
                failing = True
                if conn is not None:
                    await conn.close()
                    conn = None
            await clock.sleep(interval_s)
    finally:
        if conn is not None:
            await conn.close()
