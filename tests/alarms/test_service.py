"""alarms.service against real PostgreSQL and TimescaleDB: commits reach the database in one
transaction each, commands arrive by NOTIFY and are settled once, a restart stores what the
local log kept, and a database outage (a cut link, not a flag) loses and reorders nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from alarms import store
from alarms.journal import LocalLog
from alarms.model import Catalog
from alarms.service import AlarmService
from core.clock import SystemClock
from core.conditions import ConditionEdges
from core.config import load_plant
from core.errors import StorageError
from core.settings import AlarmSettings
from rules.compile import compile_rules
from storage.db import Backend
from tests.support.databases import fetch_all, migrated_db
from tests.support.proxy import TcpProxy
from tests.support.waiting import eventually

PLANT = Path(__file__).resolve().parents[1] / "core" / "data" / "two_enterprises.yaml"
HH = "AA.V1.LT1:HH"
GAS = "AA.V1.AT1:GAS_L2"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    plant = load_plant(PLANT)
    return Catalog(plant, compile_rules(plant))


@pytest.fixture(params=[Backend.POSTGRES, Backend.TIMESCALEDB], ids=str)
def dsn(request: pytest.FixtureRequest) -> Iterator[str]:
    with migrated_db(request.param) as url:
        yield url


def service(catalog: Catalog, dsn: str, log_dir: Path, **kw: Any) -> AlarmService:
    return AlarmService(catalog, AlarmSettings(command_poll_s=5.0), log_dir, dsn, SystemClock(), **kw)


def edges(catalog: Catalog, *rows: tuple[str, bool, float]) -> ConditionEdges:
    idx = [catalog.by_key(k).rule for k, *_ in rows]  # type: ignore[union-attr]
    n = len(rows)
    ts = SystemClock().now_us()
    return ConditionEdges.of(
        np.array(idx), np.array([r[1] for r in rows]), np.full(n, ts), np.array([r[2] for r in rows]),
        np.full(n, 8.6), np.full(n, 3, np.uint8),
    )  # fmt: skip


async def rows(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    return await fetch_all(dsn, sql)


async def test_edges_and_commands_are_stored_one_commit_per_transaction(
    catalog: Catalog, dsn: str, tmp_path: Path
) -> None:
    svc = service(catalog, dsn, tmp_path)
    assert await svc.recover() == {}
    svc.start()
    try:
        svc.edges(edges(catalog, (HH, True, 9.0), (GAS, True, 200.0)))
        await eventually(lambda: svc.stored_seq == 0, timeout=10)
        assert await rows(dsn, "SELECT key, status, priority, condition FROM alarm_state ORDER BY key") == [
            (GAS, "unacknowledged", "critical", True),
            (HH, "unacknowledged", "high", True),
        ]
        assert await rows(dsn, "SELECT seq, n, alarm_key, action FROM alarm_journal ORDER BY seq, n") == [
            (0, 0, HH, "RAISED"),
            (0, 1, GAS, "RAISED"),
        ]
        assert await rows(dsn, "SELECT alarm_key, event, priority FROM notification ORDER BY n") == [
            (HH, "raised", "high"),
            (GAS, "raised", "critical"),
        ]
        assert await rows(dsn, "SELECT key, active FROM rule_state ORDER BY key") == [(GAS, True), (HH, True)]
        # an operator's command arrives by NOTIFY (the poll is 5 s here): settled well within 1 s
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            started = asyncio.get_running_loop().time()
            await conn.execute(
                "INSERT INTO alarm_command (id, alarm_key, command, actor, role, enterprise, args) "
                "VALUES (gen_random_uuid(), %s, 'ack', '李四', 'enterprise_operator', 'AA', '{}'), "
                "(gen_random_uuid(), %s, 'shelve', '李四', 'enterprise_operator', 'AA', '{\"minutes\": 10}')",
                (HH, GAS),
            )

            async def settled() -> list[tuple[Any, ...]]:
                cur = await conn.execute(
                    "SELECT command, status, result, reason FROM alarm_command ORDER BY command"
                )
                return await cur.fetchall()

            while any(r[1] == "pending" for r in await settled()):
                await asyncio.sleep(0.02)
            assert asyncio.get_running_loop().time() - started < 1.0
            assert await settled() == [
                ("ack", "applied", "acknowledged", None),
                ("shelve", "rejected", None, "critical alarms cannot be shelved"),
            ]
        assert await rows(
            dsn, "SELECT alarm_key, action, actor FROM alarm_journal WHERE command_id IS NOT NULL"
        ) == [(HH, "ACKED", "李四")]
        assert sorted(await rows(dsn, "SELECT actor, action, target FROM audit_log")) == [
            ("李四", "ack", HH),
            ("李四", "shelve rejected", GAS),
        ]
    finally:
        assert await svc.close()


async def test_a_commit_stored_twice_changes_nothing(catalog: Catalog, dsn: str, tmp_path: Path) -> None:
    svc = service(catalog, dsn, tmp_path)
    await svc.recover()
    first = svc.manager.edges(edges(catalog, (HH, True, 9.0)), 1)
    second = svc.manager.edges(edges(catalog, (HH, False, 1.0)), 2)
    assert first is not None and second is not None
    with psycopg.connect(dsn) as conn:  # store.write runs on the service's writer thread
        store.write(conn, [first, second])
        before = [
            await rows(dsn, f"SELECT * FROM {t} ORDER BY 1, 2") for t in ("alarm_journal", "notification")
        ]
        store.write(conn, [first])  # a replay of an older commit: no row changes
        store.write(conn, [first, second])
        after = [
            await rows(dsn, f"SELECT * FROM {t} ORDER BY 1, 2") for t in ("alarm_journal", "notification")
        ]
    assert before == after and len(before[0]) == 2
    assert await rows(dsn, "SELECT status, seq FROM alarm_state") == [("returned_unacknowledged", 1)]
    assert await rows(dsn, "SELECT seq FROM alarm_writer") == [(1,)]
    svc.log.close()


async def test_values_keep_their_meaning_in_the_database(catalog: Catalog, dsn: str, tmp_path: Path) -> None:
    """NaN (no value) is NULL, ±inf (a BAD float32 sample) stays infinite, times are exact to the
    microsecond, Chinese text and labels arrive whole: the rows travel by binary COPY."""
    svc = service(catalog, dsn, tmp_path)
    await svc.recover()
    at_us = 1_700_000_000_123_457
    raised = svc.manager.edges(edges(catalog, (HH, True, float("inf"))), at_us)
    cleared = svc.manager.edges(edges(catalog, (HH, False, float("nan"))), at_us + 1)
    assert raised is not None and cleared is not None
    with psycopg.connect(dsn) as conn:
        store.write(conn, [raised, cleared])
    journal = await rows(
        dsn,
        """SELECT value, "limit", arrival = timestamptz '2023-11-14 22:13:20.123457+00'
           FROM alarm_journal ORDER BY seq""",
    )
    assert journal[0] == (float("inf"), 8.6, True)
    assert journal[1][0] is None and journal[1][2] is False  # NaN value; arrived 1 µs later
    [(labels, zh)] = await rows(dsn, "SELECT labels, message_zh FROM notification")
    assert labels["county"] == "孝义市" and labels["priority"] == "high"
    assert zh == "【报警】甲化工 液氨储罐区 液位（AA.V1.LT1）高高报：当前值 inf m，限值 8.6 m"
    assert await rows(dsn, "SELECT value FROM alarm_state") == [(None,)]
    svc.log.close()


async def test_a_restart_stores_what_the_log_kept_and_resumes_from_it(
    catalog: Catalog, dsn: str, tmp_path: Path
) -> None:
    crashed = service(catalog, dsn, tmp_path)
    await crashed.recover()  # never started: its commits reach the log, not the database
    crashed.edges(edges(catalog, (GAS, True, 200.0)))
    crashed.edges(edges(catalog, (GAS, False, 3.0)))
    crashed.log.close()  # the process dies here
    assert await rows(dsn, "SELECT count(*) FROM alarm_journal") == [(0,)]

    svc = service(catalog, dsn, tmp_path)
    stored = await svc.recover()
    assert {k: (r.active, r.since_us > 0) for k, r in stored.items()} == {GAS: (False, True)}
    assert await rows(dsn, "SELECT seq, action FROM alarm_journal ORDER BY seq") == [
        (0, "RAISED"),
        (1, "RETURNED"),
    ]
    assert svc.manager.alarms[GAS].status == "latched" and svc.manager.seq == 1
    assert list(tmp_path.glob("*.log")) == [] or svc.log.pending(1) == []
    svc.start()
    svc.edges(edges(catalog, (GAS, True, 210.0)))  # the latch re-sounds: the next seq
    await eventually(lambda: svc.stored_seq == 2, timeout=10)
    assert await rows(dsn, "SELECT seq, action FROM alarm_journal WHERE seq = 2") == [(2, "RERAISED")]
    assert await svc.close()


async def test_a_database_outage_keeps_every_commit_in_order_until_it_returns(
    catalog: Catalog, dsn: str, tmp_path: Path
) -> None:
    target = conninfo_to_dict(dsn)
    proxy = TcpProxy(int(target.get("port") or 5432))
    port = await proxy.start()
    svc = service(catalog, make_conninfo(dsn, host="127.0.0.1", port=port), tmp_path, max_queued=2)
    await svc.recover()
    svc.start()
    try:
        svc.edges(edges(catalog, (HH, True, 9.0)))
        await eventually(lambda: svc.stored_seq == 0, timeout=10)
        await proxy.cut()  # the link goes; the server stays up
        values = [8.0, 9.5, 8.1, 9.7, 8.0]  # off, on, off, on, off: more than max_queued commits
        for i, v in enumerate(values):
            svc.edges(edges(catalog, (HH, i % 2 == 1, v)))
        await asyncio.sleep(0.5)
        assert svc.stored_seq == 0 and svc.manager.seq == 5
        assert [c.seq for c in svc.log.pending(0)] == [1, 2, 3, 4, 5]  # on disk meanwhile
        await proxy.restore()
        await eventually(lambda: svc.stored_seq == 5, timeout=60)
        journal = await rows(dsn, "SELECT seq, action, value FROM alarm_journal ORDER BY seq, n")
        assert journal == [
            (0, "RAISED", 9.0),
            (1, "RETURNED", 8.0),
            (2, "RERAISED", 9.5),
            (3, "RETURNED", 8.1),
            (4, "RERAISED", 9.7),
            (5, "RETURNED", 8.0),
        ]
        assert await rows(dsn, "SELECT status, seq FROM alarm_state") == [("returned_unacknowledged", 5)]
    finally:
        assert await svc.close()
        await proxy.stop()


async def test_close_wakes_a_write_hung_on_a_silent_link(catalog: Catalog, dsn: str, tmp_path: Path) -> None:
    """A link that forwards nothing but stays open (a frozen middlebox): keepalives never fire.
    close() returns in bounded time, its writer thread ends (the process can exit), the commit
    stays in the log for the next start, and a second close() says the same."""
    proxy = TcpProxy(int(conninfo_to_dict(dsn).get("port") or 5432))
    port = await proxy.start()
    svc = service(catalog, make_conninfo(dsn, host="127.0.0.1", port=port), tmp_path)
    await svc.recover()
    svc.start()
    try:
        svc.edges(edges(catalog, (HH, True, 9.0)))
        await eventually(lambda: svc.stored_seq == 0, timeout=10)  # the writer's connection is up
        proxy.frozen = True
        svc.edges(edges(catalog, (HH, False, 8.0)))
        await asyncio.sleep(0.5)  # the write is on the wire, unanswered
        started = asyncio.get_running_loop().time()
        assert await svc.close(timeout_s=1.0) is False
        assert asyncio.get_running_loop().time() - started < 10
        await eventually(lambda: not any(t.name.startswith("alarms-writer") for t in threading.enumerate()))
        assert await svc.close() is False  # idempotent
    finally:
        await proxy.stop()
    assert [c.seq for c in LocalLog(tmp_path).pending(0)] == [1]  # kept for the next start


async def test_a_commit_the_database_refuses_is_counted_and_holds_the_later_ones(
    catalog: Catalog, dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Not an outage: the database is there and refuses the commit (here a time beyond what it
    can hold). It is retried, counted and logged as an error naming the commits; nothing after
    it is stored out of order."""
    svc = service(catalog, dsn, tmp_path)
    await svc.recover()
    bad = svc.manager.edges(edges(catalog, (HH, True, 9.0)), 1)
    assert bad is not None
    svc._keep(dataclasses.replace(bad, arrival_us=2**63 - 1))
    svc.edges(edges(catalog, (HH, False, 8.0)))
    svc.start()
    try:
        await eventually(lambda: svc.store_errors._value.get() >= 1, timeout=10)
        assert svc.stored_seq == -1
        assert any(
            r.levelname == "ERROR" and "commits 0..1 could not be stored" in r.getMessage()
            for r in caplog.records
        )
        assert await rows(dsn, "SELECT count(*) FROM alarm_journal") == [(0,)]
    finally:
        assert await svc.close(timeout_s=0.5) is False


def test_a_failed_first_write_leaves_the_connection_usable(
    catalog: Catalog, dsn: str, tmp_path: Path
) -> None:
    """The staging tables are made in a transaction of their own: a first write that fails does
    not take them with it."""
    svc = service(catalog, dsn, tmp_path)
    first = svc.manager.edges(edges(catalog, (HH, True, 9.0)), 1)
    assert first is not None
    bad = dataclasses.replace(first, arrival_us=2**63 - 1)  # beyond what the database can hold
    with psycopg.connect(dsn) as conn:
        with pytest.raises(StorageError):
            store.write(conn, [bad])
        store.write(conn, [first])
    svc.log.close()
