"""Open minutes held in memory: written once when they close, exact after a crash, late data,
a second writer, history queries over a still-open minute, and the tag_latest window."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from core.batch import ReadingBatch
from core.clock import to_datetime as _dt
from core.quality import Quality
from storage.db import Conn
from storage.open_minutes import OpenMinutes, advance
from storage.queries import history
from storage.rollup import US_PER_MINUTE, prepare
from storage.writer import LATEST_MAX_LAG_S, BatchWriter, latest_lag
from tests.storage.helpers import DB_IDS, GOOD, Row, S, batch, latest
from tests.storage.test_rollup import ORACLE_SQL, ROLLUP_SQL, same
from tests.support.proxy import TcpProxy

MINUTE0 = 1_790_035_200_000_000  # a minute start (2026-09-22 00:00 UTC)
BAD = int(Quality.BAD)


def scan(second: int, tags: int = 8, offset: float = 0.0) -> list[Row]:
    """One 1 Hz scan: every tag once, at MINUTE0 + second; every 7th reading BAD."""
    return [
        (
            t,
            MINUTE0 + second * S + t * 1000,
            second * 10.0 + t + offset,
            BAD if (second + t) % 7 == 0 else GOOD,
        )
        for t in range(tags)
    ]


async def rollups_match_raw(conn: Conn) -> None:
    """reading_1m equals the aggregate of reading, minute by minute, and tag_latest its newest row."""
    cur = await conn.execute(ORACLE_SQL.encode())
    want = await cur.fetchall()
    cur = await conn.execute(ROLLUP_SQL.encode())
    got = await cur.fetchall()
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert all(same(x, y) for x, y in zip(g, w, strict=True)), (g, w)
    cur = await conn.execute(
        "SELECT DISTINCT ON (tag_id) tag_id, (extract(epoch FROM time) * 1e6)::int8, value, quality"
        " FROM reading ORDER BY tag_id, time DESC"
    )
    newest = {int(t): (int(ts), repr(float(v)), int(q)) for t, ts, v, q in await cur.fetchall()}
    assert {t: (ts, repr(v), q) for t, (ts, v, q) in (await latest(conn)).items()} == newest


async def rollup_rows(conn: Conn) -> int:
    cur = await conn.execute("SELECT count(*) FROM reading_1m")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def crash(conn: Conn) -> None:
    """Kill the writer's server session, as a crashed process or a lost link would (and wait
    until it is gone, so its rollup lock is free)."""
    await conn.execute(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
        " WHERE application_name = 'hazardwatch-writer' AND datname = current_database()"
    )


async def test_a_minute_is_written_once_when_it_closes(backend: str, conn: Conn) -> None:
    writer = await BatchWriter.connect(backend, DB_IDS)
    try:
        assert writer.owner
        for second in range(30):
            await writer.write(batch(scan(second)))
        assert await rollup_rows(conn) == 0  # the open minute lives in memory
        assert writer.open_minutes == 8
        await writer.write(batch(scan(60)))  # each tag's next minute closes its first
        assert await rollup_rows(conn) == 8
        await writer.flush()
        assert writer.open_minutes == 0
        cur = await conn.execute("SELECT count(*) FROM reading_1m_open")
        assert await cur.fetchone() == (0,)
    finally:
        await writer.close()
    await rollups_match_raw(conn)


async def test_rollups_exact_after_a_crash_mid_minute(backend: str, conn: Conn) -> None:
    writer = await BatchWriter.connect(backend, DB_IDS)
    try:
        for second in (*range(55, 60), *range(60, 75)):  # minute 0 closed, minute 1 open
            await writer.write(batch(scan(second)))
        assert writer.open_minutes == 8
        cur = await conn.execute("SELECT count(*) FROM reading_1m_open")
        assert await cur.fetchone() == (1,)
        await crash(conn)
    finally:
        await writer.close()  # cannot flush: the session is gone
    cur = await conn.execute(
        "SELECT count(*) FROM reading_1m WHERE bucket >= %s", [_dt(MINUTE0 + US_PER_MINUTE)]
    )
    assert await cur.fetchone() == (0,)  # really lost from memory
    writer = await BatchWriter.connect(backend, DB_IDS)  # takes over: recomputes the open minute
    try:
        assert writer.owner
        await rollups_match_raw(conn)
        for second in range(75, 130):  # the rest of minute 1, into minute 2
            await writer.write(batch(scan(second)))
        await writer.write(batch(scan(70, offset=0.5)))  # a re-send: changes nothing
    finally:
        await writer.close()
    await rollups_match_raw(conn)


async def test_late_and_resent_data_for_a_closed_minute(backend: str, conn: Conn) -> None:
    writer = await BatchWriter.connect(backend, DB_IDS)
    try:
        for second in range(0, 90, 3):
            await writer.write(batch(scan(second)))
        assert await rollup_rows(conn) == 8  # minute 0 closed and written
        await writer.write(batch(scan(1) + scan(2)))  # late rows for the closed minute
        await writer.write(batch(scan(3, offset=9.0) + scan(4)))  # a re-send and one new second
        await writer.write(batch([(0, MINUTE0 + 100 * S, math.nan, GOOD)]))  # NaN: stored BAD
    finally:
        await writer.close()
    await rollups_match_raw(conn)
    cur = await conn.execute(
        "SELECT quality FROM reading WHERE tag_id = 1 AND time = %s", [_dt(MINUTE0 + 100 * S)]
    )
    assert await cur.fetchone() == (BAD,)


async def test_crash_after_a_clean_stop_and_restart_in_the_same_minute(backend: str, conn: Conn) -> None:
    writer = await BatchWriter.connect(backend, DB_IDS)
    try:
        for second in range(10):
            await writer.write(batch(scan(second)))
    finally:
        await writer.close()  # clean: minute 0 written
    writer = await BatchWriter.connect(backend, DB_IDS)
    try:
        for second in range(10, 20):  # the same minute again, now on top of a written row
            await writer.write(batch(scan(second)))
        await crash(conn)
    finally:
        await writer.close()
    writer = await BatchWriter.connect(backend, DB_IDS)
    try:
        for second in range(20, 65):
            await writer.write(batch(scan(second)))
    finally:
        await writer.close()
    await rollups_match_raw(conn)


async def test_history_covers_a_minute_still_open(backend: str, conn: Conn) -> None:
    writer = await BatchWriter.connect(backend, DB_IDS)
    try:
        for second in range(50, 80):
            await writer.write(batch(scan(second)))
        ids = DB_IDS[:8]
        for width in (60, 300):
            rolled = await history(conn, ids, MINUTE0, MINUTE0 + 5 * US_PER_MINUTE, width)
            raw = await history(conn, ids, MINUTE0, MINUTE0 + 5 * US_PER_MINUTE, width, source="raw")
            assert rolled.source == "reading_1m"
            assert len(rolled) == len(raw) > 0
            assert np.array_equal(rolled.count, raw.count) and np.array_equal(rolled.bad_count, raw.bad_count)
            assert np.allclose(rolled.avg, raw.avg) and np.array_equal(rolled.last, raw.last)
    finally:
        await writer.close()


async def test_second_writer_merges_directly_and_both_stay_exact(backend: str, conn: Conn) -> None:
    first = await BatchWriter.connect(backend, DB_IDS)
    second = await BatchWriter.connect(backend, DB_IDS)
    try:
        assert first.owner and not second.owner
        for s in range(0, 70):
            await (first if s % 2 else second).write(batch(scan(s)))
        assert second.open_minutes == 0
    finally:
        await second.close()
        await first.close()
    await rollups_match_raw(conn)


async def test_owner_lost_to_a_crash_is_taken_over_by_a_direct_writer(backend: str, conn: Conn) -> None:
    first = await BatchWriter.connect(backend, DB_IDS)
    second = await BatchWriter.connect(backend, DB_IDS, owner_retry_s=0.0)
    try:
        for s in range(0, 20):
            await first.write(batch(scan(s)))
        await conn.execute("SELECT pg_terminate_backend(%s, 5000)", [first.server_pid])
        await second.write(batch(scan(20)))  # finds the lock free: recovers, becomes owner
        assert second.owner
        for s in range(21, 70):
            await second.write(batch(scan(s)))
    finally:
        await first.close()
        await second.close()
    await rollups_match_raw(conn)


async def test_latest_held_back_is_written_within_the_interval(backend: str, conn: Conn) -> None:
    writer = await BatchWriter.connect(backend, DB_IDS, latest_immediate_tags=2, latest_interval_s=0.3)
    try:
        await writer.write(batch(scan(0)))  # first write: the interval has passed
        assert len(await latest(conn)) == 8
        await writer.write(batch(scan(1)))  # 8 tags > 2 and within 0.3 s: held back
        assert all(ts < MINUTE0 + S for ts, _, _ in (await latest(conn)).values())
        async with asyncio.timeout(5.0):  # the timer writes them, with no further batch
            while not all(ts >= MINUTE0 + S for ts, _, _ in (await latest(conn)).values()):
                await asyncio.sleep(0.05)
        await writer.write(batch([(0, MINUTE0 + 2 * S, 5.0, GOOD)]))  # one tag behind: written now
        assert (await latest(conn))[1] == (MINUTE0 + 2 * S, 5.0, GOOD)
        await writer.write(batch([(3, MINUTE0 - 5 * S, 1.0, GOOD)]))  # older: never moves back
        assert (await latest(conn))[4][0] == MINUTE0 + S + 3000
    finally:
        await writer.close()
    await rollups_match_raw(conn)


def test_steady_state_folds_in_place_and_closes_on_the_next_minute() -> None:
    heads = OpenMinutes.empty()
    for second in range(3):
        step = advance(heads, prepare(ReadingBatch.from_rows(scan(second)))[1], 60 * S)
        assert step.merge_rows == 0
        heads = step.heads
    assert len(heads) == 8 and heads.count.tolist() == [
        sum(1 for s in range(3) if (s + t) % 7) for t in range(8)
    ]
    step = advance(heads, prepare(ReadingBatch.from_rows(scan(61)))[1], 60 * S)
    assert step.merge_rows == 8 and (step.merge["bucket"] == MINUTE0).all()
    assert (step.heads.bucket == MINUTE0 + US_PER_MINUTE).all()
    # A silent tag's minute closes once other tags' readings are past its end + grace.
    silent = advance(step.heads, prepare(ReadingBatch.from_rows(scan(200, tags=4)))[1], 10 * S)
    assert sorted(silent.heads.tag_id.tolist()) == [0, 1, 2, 3]
    assert silent.merge_rows == 8
    assert sorted(silent.must_write_latest["tag_id"].tolist()) == [4, 5, 6, 7]  # leave the journal now


@pytest.mark.parametrize("bad", [{"latest_interval_s": 0.0}, {"idle_close_s": -1.0}])
async def test_bad_options_are_refused(backend: str, bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="latest_interval_s"):
        await BatchWriter.connect(backend, DB_IDS, **bad)


async def test_close_gives_up_on_a_hung_server_and_the_next_writer_recovers(
    backend: str, conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("storage.writer.CLOSE_FLUSH_TIMEOUT_S", 0.5)
    info = conninfo_to_dict(backend)
    proxy = TcpProxy(int(info.get("port") or 5432))
    port = await proxy.start()
    writer = await BatchWriter.connect(make_conninfo(backend, port=port), DB_IDS)
    try:
        for second in range(20):
            await writer.write(batch(scan(second)))
        proxy.frozen = True  # the server stops answering; the socket stays open
        async with asyncio.timeout(20.0):  # 0.5 s, then psycopg's own cancel attempt (<= 10 s)
            await writer.close()  # gives up instead of hanging a stop
    finally:
        await proxy.stop()
    async with asyncio.timeout(10.0):  # the server notices the reset link and ends the session
        while True:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = 'hazardwatch-writer' AND datname = current_database()"
            )
            if await cur.fetchone() == (0,):
                break
            await asyncio.sleep(0.05)
    writer = await BatchWriter.connect(backend, DB_IDS)
    try:
        assert writer.owner
        for second in range(20, 70):
            await writer.write(batch(scan(second)))
    finally:
        await writer.close()
    await rollups_match_raw(conn)


async def test_a_direct_writer_recovers_a_dead_owner_at_its_clean_stop(backend: str, conn: Conn) -> None:
    first = await BatchWriter.connect(backend, DB_IDS)
    second = await BatchWriter.connect(backend, DB_IDS)  # waits 2 s for the lock, then direct
    try:
        assert not second.owner
        for s in range(0, 20):
            await first.write(batch(scan(s)))
        await second.write(batch(scan(20)))
        await conn.execute("SELECT pg_terminate_backend(%s, 5000)", [first.server_pid])
    finally:
        await first.close()
        await second.close()  # takes the free lock and recomputes what the dead owner held
    await rollups_match_raw(conn)


def test_latest_lag_stretches_with_a_slow_database_but_stays_bounded() -> None:
    assert latest_lag(1.0, 0.01) == 1.0  # a fast database: the interval itself
    assert latest_lag(1.0, 0.1) == pytest.approx(4.0)  # 100 ms per write: at most ~2.5 % of the time
    assert latest_lag(1.0, 3.0) == LATEST_MAX_LAG_S  # never unbounded
    assert latest_lag(10.0, 3.0) == 10.0  # an explicit longer interval wins over the cap


async def test_a_silent_tags_minute_closes_with_its_latest_value_even_if_latest_is_not_due(
    backend: str, conn: Conn
) -> None:
    writer = await BatchWriter.connect(backend, DB_IDS, latest_immediate_tags=0, latest_interval_s=3600.0)
    try:
        await writer.write(batch(scan(0)))  # the first write brings tag_latest up to date
        for second in range(1, 10):
            await writer.write(batch(scan(second)))  # held back: not due for an hour
        for second in range(200, 205):  # only tags 0-3 go on; 4-7's minute closes by watermark
            await writer.write(batch(scan(second, tags=4)))
        await crash(conn)  # minute 0 is no longer listed: nothing would recover 4-7's latest
    finally:
        await writer.close()
    assert {t: ts for t, (ts, _, _) in (await latest(conn)).items() if t > 4} == {
        t + 1: MINUTE0 + 9 * S + t * 1000 for t in range(4, 8)
    }
    writer = await BatchWriter.connect(backend, DB_IDS)
    await writer.close()
    await rollups_match_raw(conn)
