"""Alarm-system KPIs (EEMUA 191, ISA-18.2 monitoring; targets in DOMAIN.md) over a period, in SQL.

Figures count annunciations (RAISED or RERAISED journal rows) in [start, end), labelled by
alarm_state (enterprise, hazard source, unit, priority as the alarm last changed); a filter
applies to every figure. EEMUA 191 measures per operating position, one operator's workload:
here a position is a ``unit``, or the ``hazard_source`` when the config names no units, so a
caller asks for ``unit=`` (with its hazard source if unit names repeat) or ``hazard_source=``.
Wider scopes (an enterprise, everything) add positions up and read worse than any one of them.

Decided here:

- Ten-minute windows are aligned to the epoch (date_bin); the period has every window it
  overlaps, empty ones included, so a partial window at either end counts as a whole one.
- Chattering: ≥ 3 annunciations of one alarm with at most 60 s from the first to the last,
  inside the period.
- Time to acknowledge: from an annunciation to the first ACKED or RESET of the same alarm
  after it (journal order) and before its next annunciation, at < end. One acknowledged later,
  or never (shelved, or re-annunciated first), counts as unacknowledged.
- Stale, shelved, suppressed and out of service read alarm_state as it is when queried (it
  keeps no history); ``now`` (default ``end``) only sets the 24 h age for stale.
- Priority mix: critical counts as high. "≈ 80/15/5" is read as: the top priority is not
  overused (high ≤ 5 %) and most annunciations are low (≥ 80 %).
- Each figure is its own statement: a period still being written may move between them.
Index use: alarm_journal (at) for the period, alarm_state's key for labels, alarm_journal
(alarm_key, seq) for each annunciation's acknowledgement.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from psycopg import sql

from alarms.state import ANNUNCIATED, Action, Status
from storage.db import Conn, translate_errors

__all__ = [
    "AlarmKpis",
    "Chatter",
    "Check",
    "Contributor",
    "FloodWindow",
    "PriorityShare",
    "StaleAlarm",
    "Verdict",
    "alarm_kpis",
    "render",
]

WINDOW = timedelta(minutes=10)
FLOOD_ABOVE = 10  # annunciations in one window (EEMUA 191)
CHATTER_AT_LEAST = 3  # annunciations of one alarm within CHATTER_SPAN
CHATTER_SPAN = timedelta(seconds=60)
STALE_AFTER = timedelta(hours=24)
TOP = 10
PRIORITIES = ("critical", "high", "medium", "low")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY = timedelta(days=1)


class Verdict(StrEnum):
    OK = "OK"
    WARN = "WARN"  # above target, within the manageable maximum
    BAD = "BAD"
    NO_DATA = "NO_DATA"  # nothing annunciated to judge by


@dataclass(frozen=True, slots=True)
class FloodWindow:
    start: datetime
    count: int


@dataclass(frozen=True, slots=True)
class Chatter:
    key: str
    annunciations: int  # in the period
    most_in_60s: int


@dataclass(frozen=True, slots=True)
class StaleAlarm:
    key: str
    raised_at: datetime


@dataclass(frozen=True, slots=True)
class Contributor:
    key: str
    count: int
    share_pct: float


@dataclass(frozen=True, slots=True)
class PriorityShare:
    priority: str
    count: int
    pct: float


@dataclass(frozen=True, slots=True)
class Check:
    """One KPI against its target, for a caller to colour."""

    name: str
    value: float
    target: str
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class AlarmKpis:
    start: datetime
    end: datetime
    now: datetime
    annunciations: int
    windows: int  # ten-minute windows the period overlaps
    per_10min: float  # average over the period
    per_day: float
    peak_10min: int
    flood_windows: tuple[FloodWindow, ...]
    flood_pct: float  # of windows
    chattering: tuple[Chatter, ...]
    stale: tuple[StaleAlarm, ...]
    top: tuple[Contributor, ...]
    priorities: tuple[PriorityShare, ...]  # PRIORITIES order
    shelved: int
    suppressed: int
    out_of_service: int
    acked: int
    unacked: int
    ack_mean_s: float | None  # None when nothing was acknowledged
    ack_p90_s: float | None
    checks: tuple[Check, ...]


_ANN = sql.SQL("""
    ann AS (
        SELECT j.alarm_key, j.seq, j.n, j.at, s.priority
        FROM alarm_journal j JOIN alarm_state s ON s.key = j.alarm_key
        WHERE j.action = ANY(%(announce)s) AND j.at >= %(start)s AND j.at < %(end)s {labels})""")
_BINS = sql.SQL("""
    WITH {ann}, bins AS (
        SELECT date_bin(%(window)s, at, %(epoch)s) AS w, count(*) AS n FROM ann GROUP BY 1)
    SELECT coalesce(max(n), 0), array_agg(w ORDER BY w) FILTER (WHERE n > %(flood)s),
           array_agg(n ORDER BY w) FILTER (WHERE n > %(flood)s)
    FROM bins""")
_PRIORITIES = sql.SQL("WITH {ann} SELECT priority, count(*) FROM ann GROUP BY 1")
_TOP = sql.SQL("WITH {ann} SELECT alarm_key, count(*) FROM ann GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT %(top)s")
_CHATTER = sql.SQL("""
    WITH {ann}, spans AS (
        SELECT alarm_key, count(*) OVER (
            PARTITION BY alarm_key ORDER BY at RANGE BETWEEN %(span)s PRECEDING AND CURRENT ROW) AS n
        FROM ann)
    SELECT alarm_key, count(*), max(n) FROM spans
    GROUP BY 1 HAVING max(n) >= %(chatter)s ORDER BY 3 DESC, 1""")
# The row after each annunciation that ends its wait: an acknowledgement, or the next
# annunciation of the same alarm (then this one was never acknowledged).
_ACK = sql.SQL("""
    WITH {ann}, waits AS (
        SELECT extract(epoch FROM nxt.at - ann.at)::float8 AS s
        FROM ann LEFT JOIN LATERAL (
            SELECT e.at FROM (
                SELECT j.action, j.at FROM alarm_journal j
                WHERE j.alarm_key = ann.alarm_key AND j.seq >= ann.seq AND (j.seq, j.n) > (ann.seq, ann.n)
                  AND j.action = ANY(%(announce)s || %(acks)s)
                ORDER BY j.seq, j.n LIMIT 1) e
            WHERE e.action = ANY(%(acks)s) AND e.at < %(end)s) nxt ON true)
    SELECT count(s), count(*) - count(s), avg(s), percentile_cont(0.9) WITHIN GROUP (ORDER BY s)
    FROM waits""")
_STATE = sql.SQL("""
    SELECT count(*) FILTER (WHERE status = %(shelved)s), count(*) FILTER (WHERE status = %(suppressed)s),
           count(*) FILTER (WHERE status = %(oos)s)
    FROM alarm_state s WHERE true {labels}""")
_STALE = sql.SQL("""
    SELECT key, raised_at FROM alarm_state s
    WHERE status = ANY(%(annunciated)s) AND raised_at < %(stale_before)s {labels}
    ORDER BY raised_at, key""")


async def alarm_kpis(
    conn: Conn,
    *,
    start: datetime,
    end: datetime,
    enterprise: str | None = None,
    hazard_source: str | None = None,
    unit: str | None = None,
    county: str | None = None,
    now: datetime | None = None,
) -> AlarmKpis:
    """The KPIs of annunciations in [start, end) for the alarms matching every filter given
    (``county``: a county bureau's jurisdiction, alarm_state.county)."""
    now = end if now is None else now
    labels = {"enterprise": enterprise, "hazard_source": hazard_source, "unit": unit, "county": county}
    # only the filters given, so the planner sees plain equalities; "" is a value (it matches
    # nothing), never "no filter": a blank scope must not widen to everything
    where = sql.SQL(" ").join(
        sql.SQL("AND s.{} = {}").format(sql.Identifier(k), sql.Placeholder(k))
        for k, v in labels.items()
        if v is not None
    )
    ann = _ANN.format(labels=where)
    params: dict[str, Any] = {
        **labels,
        "start": start,
        "end": end,
        "announce": [Action.RAISED.value, Action.RERAISED.value],
        "acks": [Action.ACKED.value, Action.RESET.value],
        "window": WINDOW,
        "epoch": _EPOCH,
        "flood": FLOOD_ABOVE,
        "top": TOP,
        "span": CHATTER_SPAN,
        "chatter": CHATTER_AT_LEAST,
        "shelved": Status.SHELVED.value,
        "suppressed": Status.SUPPRESSED.value,
        "oos": Status.OUT_OF_SERVICE.value,
        "annunciated": sorted(s.value for s in ANNUNCIATED),
        "stale_before": now - STALE_AFTER,
    }

    async def rows(query: sql.SQL) -> list[tuple[Any, ...]]:
        cur = await conn.execute(query.format(ann=ann, labels=where), params)
        return await cur.fetchall()

    with translate_errors("alarm KPIs"):
        [(peak, flood_starts, flood_counts)] = await rows(_BINS)
        by_priority = dict(await rows(_PRIORITIES))
        top = await rows(_TOP)
        chatter = await rows(_CHATTER)
        [(acked, unacked, ack_mean, ack_p90)] = await rows(_ACK)
        [(shelved, suppressed, oos)] = await rows(_STATE)
        stale = await rows(_STALE)

    total = sum(by_priority.values())
    windows = _windows(start, end)
    length = max(end - start, timedelta(0))
    per_10min = total / (length / WINDOW) if length else 0.0
    floods = tuple(FloodWindow(w, n) for w, n in zip(flood_starts or (), flood_counts or (), strict=True))
    priorities = tuple(
        PriorityShare(p, by_priority.get(p, 0), _pct(by_priority.get(p, 0), total)) for p in PRIORITIES
    )
    chattering = tuple(Chatter(k, n, most) for k, n, most in chatter)
    stale_alarms = tuple(StaleAlarm(k, at) for k, at in stale)
    return AlarmKpis(
        start=start,
        end=end,
        now=now,
        annunciations=total,
        windows=windows,
        per_10min=per_10min,
        per_day=total / (length / _DAY) if length else 0.0,
        peak_10min=peak,
        flood_windows=floods,
        flood_pct=_pct(len(floods), windows),
        chattering=chattering,
        stale=stale_alarms,
        top=tuple(Contributor(k, n, _pct(n, total)) for k, n in top),
        priorities=priorities,
        shelved=shelved,
        suppressed=suppressed,
        out_of_service=oos,
        acked=acked,
        unacked=unacked,
        ack_mean_s=ack_mean,
        ack_p90_s=ack_p90,
        checks=_checks(per_10min, _pct(len(floods), windows), len(chattering), len(stale_alarms), priorities),
    )


def _windows(start: datetime, end: datetime) -> int:
    """Epoch-aligned ten-minute windows that overlap [start, end)."""
    if end <= start:
        return 0
    return -((_EPOCH - end) // WINDOW) - (start - _EPOCH) // WINDOW


def _pct(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def _checks(
    per_10min: float, flood_pct: float, chattering: int, stale: int, priorities: tuple[PriorityShare, ...]
) -> tuple[Check, ...]:
    share = {p.priority: p.pct for p in priorities}
    high = share["critical"] + share["high"]
    if not any(p.count for p in priorities):
        mix = Verdict.NO_DATA
    else:
        mix = Verdict.OK if high <= 5 and share["low"] >= 80 else Verdict.BAD
    rate = Verdict.OK if per_10min <= 1 else Verdict.WARN if per_10min <= 2 else Verdict.BAD
    return (
        Check("average alarms per 10 min", per_10min, "≤ 1 (2 manageable)", rate),
        Check("time in flood %", flood_pct, "< 1", Verdict.OK if flood_pct < 1 else Verdict.BAD),
        Check("chattering alarms", chattering, "0", Verdict.OK if not chattering else Verdict.BAD),
        Check("stale alarms (> 24 h)", stale, "< 5", Verdict.OK if stale < 5 else Verdict.BAD),
        Check("high + critical %", high, "≤ 5, low ≥ 80 (mix ≈ 80/15/5 low/medium/high)", mix),
    )


def render(kpis: AlarmKpis) -> str:
    """The KPIs as markdown tables (a terminal shows them as they are)."""
    k = kpis
    out = [
        f"Alarm KPIs {k.start.isoformat()} – {k.end.isoformat()}: {k.annunciations} annunciations, "
        f"{k.per_day:.1f}/day, peak {k.peak_10min} in 10 min",
        "",
        "| KPI | value | target | verdict |",
        "|---|---:|---|---|",
        *(f"| {c.name} | {c.value:.2f} | {c.target} | {c.verdict} |" for c in k.checks),
        "",
        "| priority | annunciations | % |",
        "|---|---:|---:|",
        *(f"| {p.priority} | {p.count} | {p.pct:.1f} |" for p in k.priorities),
        "",
        "| top contributor | annunciations | % |",
        "|---|---:|---:|",
        *(f"| {c.key} | {c.count} | {c.share_pct:.1f} |" for c in k.top),
    ]
    if k.flood_windows:
        out += [
            "",
            "Flood windows: " + ", ".join(f"{w.start.isoformat()} ({w.count})" for w in k.flood_windows),
        ]
    if k.chattering:
        out += ["", "Chattering: " + ", ".join(f"{c.key} ({c.most_in_60s} in 60 s)" for c in k.chattering)]
    if k.stale:
        out += ["", "Stale: " + ", ".join(f"{s.key} (raised {s.raised_at.isoformat()})" for s in k.stale)]
    ack = (
        f"mean {k.ack_mean_s:.0f} s, p90 {k.ack_p90_s:.0f} s"
        if k.ack_mean_s is not None and k.ack_p90_s is not None
        else "none"
    )
    out += [
        "",
        f"Acknowledged: {k.acked} ({ack}); unacknowledged: {k.unacked}",
        f"Now: {k.shelved} shelved, {k.suppressed} suppressed, {k.out_of_service} out of service",
    ]
    return "\n".join(out)
