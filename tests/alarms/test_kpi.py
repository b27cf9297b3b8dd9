"""Alarm KPIs (alarms/kpi.py) over a hand-made journal, on PostgreSQL and TimescaleDB.

Every expected number below was worked out by hand from JOURNAL and STATES (the comments show
the arithmetic); none is recomputed by the code under test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from alarms.kpi import (
    AlarmKpis,
    Chatter,
    Contributor,
    FloodWindow,
    StaleAlarm,
    Verdict,
    alarm_kpis,
    render,
)
from storage.db import Backend, Conn
from tests.support.databases import migrated_db

T = datetime(2026, 1, 5, tzinfo=UTC)  # a ten-minute boundary
END = T + timedelta(hours=1)  # the main period [T, END): six windows


def at(seconds: float) -> datetime:
    return T + timedelta(seconds=seconds)


CH = "E1.R1.TT101.HI"  # chattering: 3 annunciations in 50 s
NC = "E1.R1.PT102.HI"  # 3 annunciations in 61 s: not chattering
L1 = "E1.R2.GT103.HI"  # latching gas alarm: 5 annunciations 70 s apart, the last one reset after 600 s
K1 = "E1.R2.FT104.LO"  # raised before the period too; acknowledged after 30 s
K2 = "E1.R2.LT105.HI"  # acknowledged after 90 s; raised again exactly at END (outside)
K4 = "E1.R2.ESD1.DEMAND"  # critical, acknowledged only after END
S1 = "E1.R2.TT106.HI"  # stale: raised two days before T, still unacknowledged
NS = "E1.R2.TT107.HI"  # raised 23 h before END: not stale at END
X1 = "E2.U9.PT201.HI"  # another enterprise, chattering
X2 = "E2.U9.PT202.HI"  # another enterprise, stale

U, A, R, N, LA = "unacknowledged", "acknowledged", "returned_unacknowledged", "normal", "latched"

# key: (enterprise, hazard_source, unit, priority, status, raised_at)
STATES = {
    CH: ("E1", "HS1", "R1", "high", R, at(150)),
    NC: ("E1", "HS1", "R1", "medium", R, at(261)),
    L1: ("E1", "HS1", "R2", "low", N, at(580)),
    K1: ("E1", "HS1", "R2", "low", A, at(600)),
    K2: ("E1", "HS1", "R2", "low", U, at(3600)),
    K4: ("E1", "HS1", "R2", "critical", A, at(3000)),
    S1: ("E1", "HS1", "R2", "low", U, at(-2 * 86400)),
    NS: ("E1", "HS1", "R2", "low", A, at(3600 - 23 * 3600)),
    "E1.R2.SH1": ("E1", "HS1", "R2", "low", "shelved", at(-5 * 86400)),  # hidden: never stale
    "E1.R2.SH2": ("E1", "HS1", "R2", "low", "shelved", at(-5 * 86400)),
    "E1.R2.SU1": ("E1", "HS1", "R2", "low", "suppressed", at(-5 * 86400)),
    "E1.R2.OS1": ("E1", "HS1", "R2", "low", "out_of_service", at(-5 * 86400)),
    X1: ("E2", "HS9", None, "low", U, at(40)),
    X2: ("E2", "HS9", None, "low", A, at(-3 * 86400)),
    "E2.U9.SH3": ("E2", "HS9", None, "low", "shelved", at(-5 * 86400)),
}

# (seconds from T, key, action, old status, new status); seq follows this order
JOURNAL = [
    (-3 * 86400, X2, "RAISED", N, U),
    (-3 * 86400 + 60, X2, "ACKED", U, A),
    (-2 * 86400, S1, "RAISED", N, U),
    (3600 - 23 * 3600, NS, "RAISED", N, U),
    (3600 - 23 * 3600 + 5, NS, "ACKED", U, A),
    (-100, K1, "RAISED", N, U),  # before the period
    (-50, K1, "ACKED", U, A),
    (-20, K1, "CLEARED", A, N),
    (10, X1, "RAISED", N, U),
    (12, X1, "RETURNED", U, R),
    (20, X1, "RERAISED", R, U),
    (25, X1, "ACKED", U, A),  # 5 s after the RERAISED; the RAISED at 10 s was never acknowledged
    (30, X1, "CLEARED", A, N),
    (40, X1, "RAISED", N, U),
    (100, CH, "RAISED", N, U),
    (110, CH, "RETURNED", U, R),
    (125, CH, "RERAISED", R, U),
    (135, CH, "RETURNED", U, R),
    (150, CH, "RERAISED", R, U),
    (160, CH, "RETURNED", U, R),
    (200, NC, "RAISED", N, U),
    (210, NC, "RETURNED", U, R),
    (230, NC, "RERAISED", R, U),
    (240, NC, "RETURNED", U, R),
    (261, NC, "RERAISED", R, U),
    (270, NC, "RETURNED", U, R),
    (300, L1, "RAISED", N, U),
    (310, L1, "RETURNED", U, LA),
    (370, L1, "RERAISED", LA, U),
    (380, L1, "RETURNED", U, LA),
    (440, L1, "RERAISED", LA, U),
    (450, L1, "RETURNED", U, LA),
    (510, L1, "RERAISED", LA, U),
    (520, L1, "RETURNED", U, LA),
    (580, L1, "RERAISED", LA, U),
    (590, L1, "RETURNED", U, LA),
    (600, K1, "RAISED", N, U),
    (630, K1, "ACKED", U, A),  # 30 s
    (700, K2, "RAISED", N, U),
    (790, K2, "ACKED", U, A),  # 90 s
    (800, K2, "CLEARED", A, N),
    (1180, L1, "RESET", LA, N),  # 600 s after the RERAISED at 580 s only
    (3000, K4, "RAISED", N, U),
    (3600, K2, "RAISED", N, U),  # at END: outside [T, END)
    (3700, K4, "ACKED", U, A),  # after END: K4 counts as unacknowledged
]


async def load(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        for key, (enterprise, source, unit, priority, status, raised_at) in STATES.items():
            await conn.execute(
                """INSERT INTO alarm_state (key, enterprise, county, hazard_source, unit, subject, kind,
                       priority, status, condition, acked, latching, since, raised_at, seq)
                   VALUES (%s, %s, 'C1', %s, %s, %s, 'HIGH', %s, %s, false, %s, %s, %s, %s, 0)""",
                (
                    key,
                    enterprise,
                    source,
                    unit,
                    key,
                    priority,
                    status,
                    status != U,
                    key == L1,
                    raised_at,
                    raised_at,
                ),
            )
        for seq, (seconds, key, action, old, new) in enumerate(JOURNAL, start=1):
            await conn.execute(
                """INSERT INTO alarm_journal (seq, n, alarm_key, action, old_status, new_status, at, arrival, actor)
                   VALUES (%s, 0, %s, %s, %s, %s, %s, %s, 'engine')""",
                (seq, key, action, old, new, at(seconds), at(seconds)),
            )


@pytest.fixture(
    scope="module", params=[Backend.POSTGRES, Backend.TIMESCALEDB], ids=["postgres", "timescaledb"]
)
def journal(request: pytest.FixtureRequest) -> Iterator[str]:
    """DSN of a migrated database holding STATES and JOURNAL; the tests only read it."""
    with migrated_db(request.param) as dsn:
        asyncio.run(load(dsn))
        yield dsn


@pytest.fixture
async def conn(journal: str) -> AsyncIterator[Conn]:
    async with await psycopg.AsyncConnection.connect(journal, autocommit=True) as c:
        yield c


def verdicts(k: AlarmKpis) -> list[Verdict]:
    return [c.verdict for c in k.checks]


async def test_enterprise_figures(conn: Conn) -> None:
    k = await alarm_kpis(conn, start=T, end=END, enterprise="E1")
    # CH 3 + NC 3 + L1 5 + K1 1 + K2 1 + K4 1 (K1 at -100 s and K2 at END are outside; E2 filtered)
    assert k.annunciations == 14
    assert k.windows == 6
    assert k.per_10min == pytest.approx(14 / 6)  # 2.333
    assert k.per_day == pytest.approx(336.0)  # 14 per hour * 24
    # window [0, 600 s): CH 3 + NC 3 + L1 5 = 11 > 10; [600, 1200): 2; [3000, 3600): 1
    assert k.peak_10min == 11
    assert k.flood_windows == (FloodWindow(T, 11),)
    assert k.flood_pct == pytest.approx(100 / 6)  # 16.67 %
    # CH: 100, 125, 150 s (50 s); NC: 200, 230, 261 s (61 s) has at most 2 in 60 s
    assert k.chattering == (Chatter(CH, 3, 3),)
    # S1 raised 2 days before; NS raised 23 h before END; shelved/suppressed/out of service never stale
    assert k.stale == (StaleAlarm(S1, at(-2 * 86400)),)
    assert [(c.key, c.count, c.share_pct) for c in k.top] == [
        (L1, 5, pytest.approx(100 * 5 / 14)),  # 35.71 %
        (NC, 3, pytest.approx(100 * 3 / 14)),  # 21.43 %; ties by key
        (CH, 3, pytest.approx(100 * 3 / 14)),
        (K4, 1, pytest.approx(100 / 14)),  # 7.14 %
        (K1, 1, pytest.approx(100 / 14)),
        (K2, 1, pytest.approx(100 / 14)),
    ]
    assert [(p.priority, p.count, p.pct) for p in k.priorities] == [
        ("critical", 1, pytest.approx(100 / 14)),  # K4
        ("high", 3, pytest.approx(300 / 14)),  # CH
        ("medium", 3, pytest.approx(300 / 14)),  # NC
        ("low", 7, pytest.approx(50.0)),  # L1 5 + K1 + K2
    ]
    assert (k.shelved, k.suppressed, k.out_of_service) == (2, 1, 1)
    # K1 30 s, K2 90 s, L1's last 600 s; mean (30 + 90 + 600) / 3 = 240;
    # p90: position 0.9 * (3 - 1) = 1.8 -> 90 + 0.8 * (600 - 90) = 498
    assert (k.acked, k.unacked) == (3, 11)  # unacked: CH 3, NC 3, L1's first 4, K4 (acked after END)
    assert k.ack_mean_s == pytest.approx(240.0)
    assert k.ack_p90_s == pytest.approx(498.0)
    assert [c.value for c in k.checks] == pytest.approx(
        [14 / 6, 100 / 6, 1, 1, 400 / 14]
    )  # high+critical 28.6 %
    # rate > 2, flood 16.7 % >= 1 %, one chattering, 1 stale < 5, high+critical 28.6 % > 5 %
    assert verdicts(k) == [Verdict.BAD, Verdict.BAD, Verdict.BAD, Verdict.OK, Verdict.BAD]


async def test_other_enterprise_sees_only_its_own_rows(conn: Conn) -> None:
    for k in (
        await alarm_kpis(conn, start=T, end=END, enterprise="E2"),
        await alarm_kpis(conn, start=T, end=END, hazard_source="HS9"),
    ):
        assert k.annunciations == 3  # X1 at 10, 20, 40 s
        assert (k.per_10min, k.per_day) == pytest.approx((0.5, 72.0))  # 3 / 6, 3 * 24
        assert (k.peak_10min, k.flood_windows, k.flood_pct) == (3, (), 0.0)
        assert k.chattering == (Chatter(X1, 3, 3),)  # 30 s from first to last
        assert k.stale == (StaleAlarm(X2, at(-3 * 86400)),)
        assert k.top == (Contributor(X1, 3, 100.0),)
        assert [p.count for p in k.priorities] == [0, 0, 0, 3]
        assert (k.shelved, k.suppressed, k.out_of_service) == (1, 0, 0)
        # the RERAISED at 20 s acknowledged at 25 s; RAISED at 10 s and 40 s never
        assert (k.acked, k.unacked, k.ack_mean_s, k.ack_p90_s) == (1, 2, 5.0, 5.0)
        assert verdicts(k) == [Verdict.OK, Verdict.OK, Verdict.BAD, Verdict.OK, Verdict.OK]


async def test_unit_is_an_operating_position(conn: Conn) -> None:
    k = await alarm_kpis(conn, start=T, end=END, hazard_source="HS1", unit="R1")
    assert k.annunciations == 6  # CH 3 + NC 3, all in the first window
    assert (k.per_10min, k.peak_10min, k.flood_windows) == (1.0, 6, ())
    assert k.chattering == (Chatter(CH, 3, 3),)
    assert k.stale == ()
    assert [(c.key, c.count, c.share_pct) for c in k.top] == [(NC, 3, 50.0), (CH, 3, 50.0)]
    assert [p.count for p in k.priorities] == [0, 3, 3, 0]
    assert (k.shelved, k.suppressed, k.out_of_service) == (0, 0, 0)
    assert (k.acked, k.unacked, k.ack_mean_s, k.ack_p90_s) == (0, 6, None, None)
    assert k.checks[0].verdict is Verdict.OK  # exactly 1 per 10 min


async def test_stale_is_more_than_24_hours_before_now(conn: Conn) -> None:
    exactly = await alarm_kpis(conn, start=T, end=END, enterprise="E1", now=END + timedelta(hours=1))
    assert [s.key for s in exactly.stale] == [S1]  # NS raised exactly 24 h before
    later = await alarm_kpis(conn, start=T, end=END, enterprise="E1", now=END + timedelta(hours=1, seconds=1))
    assert [s.key for s in later.stale] == [S1, NS]


async def test_empty_period(conn: Conn) -> None:
    k = await alarm_kpis(conn, start=T - timedelta(hours=2), end=T - timedelta(hours=1), enterprise="E1")
    assert (k.annunciations, k.windows, k.per_10min, k.per_day, k.peak_10min) == (0, 6, 0.0, 0.0, 0)
    assert (k.flood_windows, k.flood_pct, k.chattering, k.top) == ((), 0.0, (), ())
    assert [(p.count, p.pct) for p in k.priorities] == [(0, 0.0)] * 4
    assert k.stale == (StaleAlarm(S1, at(-2 * 86400)),)  # now = T - 1 h: NS is only 22 h old then
    assert (k.shelved, k.suppressed, k.out_of_service) == (2, 1, 1)
    assert (k.acked, k.unacked, k.ack_mean_s, k.ack_p90_s) == (0, 0, None, None)
    assert verdicts(k) == [Verdict.OK, Verdict.OK, Verdict.OK, Verdict.OK, Verdict.NO_DATA]

    none = await alarm_kpis(conn, start=T, end=T, enterprise="E1")
    assert (none.annunciations, none.windows, none.per_10min, none.per_day, none.flood_pct) == (
        0,
        0,
        0.0,
        0.0,
        0.0,
    )


async def test_windows_overlapped_by_an_unaligned_period(conn: Conn) -> None:
    k = await alarm_kpis(conn, start=at(300), end=at(900), enterprise="E1")
    assert k.windows == 2  # [0, 600 s) and [600, 1200 s)
    assert (k.annunciations, k.peak_10min, k.flood_windows) == (7, 5, ())  # L1 5 in the first; K1, K2


async def test_render(conn: Conn) -> None:
    text = render(await alarm_kpis(conn, start=T, end=END, enterprise="E1"))
    assert "| average alarms per 10 min | 2.33 | ≤ 1 (2 manageable) | BAD |" in text
    assert "| stale alarms (> 24 h) | 1.00 | < 5 | OK |" in text
    assert f"| {L1} | 5 | 35.7 |" in text
    assert "Acknowledged: 3 (mean 240 s, p90 498 s); unacknowledged: 11" in text
    assert f"Chattering: {CH} (3 in 60 s)" in text
