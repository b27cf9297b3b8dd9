"""Data online rate (数据在线率) per point, from reading_1m only (never raw readings).

Definition (docs: /tmp/team/registry-docs.md): the share of the window's expected samples that
arrived usable. A polled point (Modbus, OPC UA polling) expects one sample per device interval:
rate = Σ over minutes of min(usable samples, ceil(60 / interval)) / (minutes × 60 / interval),
so a burst in one minute never makes up for a missing one. An OPC UA subscription reports changes
only, so silence means "unchanged": a minute is online when it holds a usable sample, or when the
newest reading before it (looked up before the window too) was usable. Minutes a writer still
holds open (reading_1m_open) are left out of both sides (a subscription's carried span may still
cover one; the rate is capped at 1); the window never reaches past now.
Invariant: a rate is in [0, 1]; None only for a point out of service or a window with no minute.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg import sql

from core.plant import ModbusDevice, OpcUaDevice, OpcUaMode, Plant
from storage.db import Conn, translate_errors

__all__ = ["DEFAULT_INTERVAL_S", "Expectation", "PlantIndex", "mean_rate", "online_rates"]

DEFAULT_INTERVAL_S = 1.0  # a tag the plant does not describe (no plant given, or a retired tag)
_MINUTE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Expectation:
    interval_s: float  # the device's poll or sampling interval
    changes_only: bool  # an OPC UA subscription: silence is "unchanged", not "missing"
    device: str | None

    @property
    def per_minute(self) -> float:
        return 60.0 / self.interval_s

    @property
    def cap(self) -> int:
        """Most samples one minute may count (a late poll can land two in one minute)."""
        return max(1, math.ceil(self.per_minute))


_DEFAULT = Expectation(DEFAULT_INTERVAL_S, False, None)


class PlantIndex:
    """Tag key -> plant tag and expectation, built once per plant (Plant.tag is a linear scan)."""

    def __init__(self, plant: Plant | None) -> None:
        self.plant = plant
        self.tags = {t.key: t for t in plant.tags()} if plant else {}
        self._expect: dict[str, Expectation] = {}
        for e in plant.enterprises if plant else ():
            devices = {d.id: d for d in e.devices}
            for h in e.hazard_sources:
                for t in h.tags:
                    self._expect[t.key] = _expectation(devices.get(t.source.device))

    def expectation(self, key: str) -> Expectation:
        return self._expect.get(key, _DEFAULT)


def _expectation(device: OpcUaDevice | ModbusDevice | None) -> Expectation:
    if isinstance(device, ModbusDevice):
        return Expectation(device.poll_interval_s, False, device.id)
    if isinstance(device, OpcUaDevice):
        return Expectation(device.interval_s, device.mode == OpcUaMode.SUBSCRIPTION, device.id)
    return _DEFAULT


# Per point, index scans of its own rollup rows in bucket order (the primary key's order, so the
# subscription points' lead() needs no sort; one global sort of every point's day spilled to disk
# and a correlated rescan made an earlier form quadratic), plus one probe for the reading before
# the window. Minutes still open in a writer are passed in and skipped.
_QUERY = sql.SQL("""
SELECT p.tag_id,
       CASE WHEN p.carry
            THEN coalesce(c.online, 0)
                 + CASE WHEN b.usable  -- minutes before its first row in the window: as the reading before
                        THEN extract(epoch FROM coalesce(c.first, %(end)s) - %(start)s)::float8 / 60 ELSE 0 END
            ELSE coalesce(q.online, 0) END
FROM unnest(%(ids)s::int[], %(per_min)s::float8[], %(cap)s::int[], %(carry)s::bool[])
    AS p(tag_id, per_min, cap, carry)
LEFT JOIN LATERAL (
    SELECT sum(least(m.count, p.cap))::float8 / p.per_min AS online FROM reading_1m m
    WHERE NOT p.carry AND m.tag_id = p.tag_id AND m.bucket >= %(start)s AND m.bucket < %(end)s
      AND m.bucket <> ALL(%(open)s::timestamptz[])) q ON true
LEFT JOIN LATERAL (
    SELECT sum((w.count > 0)::int
               + CASE WHEN w.last_quality & 64 <> 0
                      THEN extract(epoch FROM w.next - w.bucket)::float8 / 60 - 1 ELSE 0 END) AS online,
           min(w.bucket) AS first
    FROM (SELECT m.bucket, m.count, m.last_quality,
                 lead(m.bucket, 1, %(end)s) OVER (ORDER BY m.bucket) AS next
          FROM reading_1m m
          WHERE p.carry AND m.tag_id = p.tag_id AND m.bucket >= %(start)s AND m.bucket < %(end)s
            AND m.bucket <> ALL(%(open)s::timestamptz[])) w) c ON true
LEFT JOIN LATERAL (
    SELECT r.last_quality & 64 <> 0 AS usable FROM reading_1m r
    WHERE p.carry AND r.tag_id = p.tag_id AND r.bucket < %(start)s ORDER BY r.bucket DESC LIMIT 1) b ON true""")
_OPEN = "SELECT bucket FROM reading_1m_open WHERE bucket >= %s AND bucket < %s"


def _floor_minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


async def online_rates(
    conn: Conn,
    tags: Iterable[tuple[int, Expectation]],
    start: datetime,
    end: datetime,
    now: datetime,
) -> dict[int, float]:
    """Online rate of each (database tag id, expectation) over [start, end), minutes aligned
    (start rounds up, end down, and end is at most now's minute): 0.0 for a point that sent
    nothing. Points in no minute of the window are absent."""
    lo = _floor_minute(start) + (_MINUTE if start != _floor_minute(start) else timedelta(0))
    hi = _floor_minute(min(end, now))
    pairs = list(tags)
    if hi <= lo or not pairs:
        return {}
    params = {
        "ids": [i for i, _ in pairs],
        "per_min": [x.per_minute for _, x in pairs],
        "cap": [x.cap for _, x in pairs],
        "carry": [x.changes_only for _, x in pairs],
        "start": lo,
        "end": hi,
    }
    with translate_errors("online rate"):
        async with conn.transaction():
            # JIT compiling this plan took longer than running it (seconds for 1,000 points)
            await conn.execute("SET LOCAL jit = off")
            cur = await conn.execute(_OPEN, [lo, hi])
            open_minutes = [row[0] for row in await cur.fetchall()]
            cur = await conn.execute(_QUERY, {**params, "open": open_minutes})
            rows = await cur.fetchall()
    expected = (hi - lo) / _MINUTE - len(open_minutes)
    out: dict[int, float] = {}
    for tag_id, online in rows:
        if expected > 0:
            out[int(tag_id)] = max(0.0, min(1.0, float(online) / expected))
    return out


def mean_rate(rates: Sequence[float | None]) -> float | None:
    """An enterprise's or hazard source's rate: the mean of its points' (each point counts once)."""
    known = [r for r in rates if r is not None]
    return sum(known) / len(known) if known else None
