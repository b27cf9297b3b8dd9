"""The engine's heartbeat in the database (engine_heartbeat), for the API's /readyz and the
console: "is anyone applying commands and raising alarms?".

One upsert every ``interval_s`` on a connection kept open (reopened after a loss). Failures are
logged on the transition only and never stop the loop: the local heartbeat file
(storage/heartbeat.py) stays the crash detector; this one only tells other processes.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import UTC, datetime

from core.clock import Clock
from storage.db import Conn, connect, translate_errors

__all__ = ["beat_once", "engine_beat_loop"]

log = logging.getLogger(__name__)


async def beat_once(conn: Conn, name: str, started_at: datetime, now: datetime) -> None:
    with translate_errors("engine heartbeat"):
        await conn.execute(
            """INSERT INTO engine_heartbeat (name, at, started_at, host, pid) VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (name) DO UPDATE SET at = excluded.at, started_at = excluded.started_at,
                   host = excluded.host, pid = excluded.pid""",
            (name, now, started_at, socket.gethostname(), os.getpid()),
        )


async def engine_beat_loop(dsn: str, name: str, clock: Clock, interval_s: float = 5.0) -> None:
    """Beat until cancelled."""
    started_at = datetime.fromtimestamp(clock.now_us() / 1e6, UTC)
    conn: Conn | None = None
    failing = False
    try:
        while True:
            try:
                if conn is None or conn.closed:
                    conn = await connect(dsn, autocommit=True, application_name="hazardwatch-heartbeat")
                await beat_once(conn, name, started_at, datetime.fromtimestamp(clock.now_us() / 1e6, UTC))
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
