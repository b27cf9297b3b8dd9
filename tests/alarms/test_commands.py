"""Submitting operator commands (alarms/commands.py) on PostgreSQL and TimescaleDB: shapes refused
before anything is written, idempotent submission, the NOTIFY the engine listens for, outcomes
read back as the engine leaves them, and the alarm list's order and filters.

The engine's side of the contract (LISTEN ``alarm_command``, then set status, result or reason,
applied_at and seq on the row) is played by ``settle`` on a connection of its own.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from alarms.commands import (
    ACTIVE,
    CauseCategory,
    Command,
    CommandKind,
    CommandStatus,
    InvalidCommand,
    Role,
    UnknownCommand,
    list_alarms,
    outcome,
    submit,
)
from alarms.model import Priority
from alarms.state import Status
from storage.db import Backend, Conn
from tests.support.databases import migrated_db

KEY = "LHJH.G101.LT-101A:LL"


@pytest.fixture(
    scope="module", params=[Backend.POSTGRES, Backend.TIMESCALEDB], ids=["postgres", "timescaledb"]
)
def db(request: pytest.FixtureRequest) -> Iterator[str]:
    with migrated_db(request.param) as dsn:
        yield dsn


@pytest.fixture
async def conn(db: str) -> AsyncIterator[Conn]:
    """An autocommit connection to an empty alarm_command and alarm_state."""
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as c:
        await c.execute("TRUNCATE alarm_command, alarm_state")
        yield c


@pytest.fixture
async def listener(db: str) -> AsyncIterator[Conn]:
    """A connection LISTENing on alarm_command, as the engine's command reader does."""
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as c:
        await c.execute("LISTEN alarm_command")
        yield c


def ack(**changes: Any) -> Command:
    fields: dict[str, Any] = {
        "alarm_key": KEY,
        "kind": CommandKind.ACK,
        "actor": "王工",
        "role": Role.ENGINEER,
    }
    return Command(**{**fields, **changes})


async def settle(dsn: str, listener: Conn, status: str, result: str | None, reason: str | None) -> UUID:
    """The engine: take the next submitted command's id from its NOTIFY and store an outcome."""
    async for note in listener.notifies(timeout=10, stop_after=1):
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as engine:
            await engine.execute(
                """UPDATE alarm_command SET status = %s, result = %s, reason = %s, applied_at = now(), seq = 7
                   WHERE id = %s""",
                (status, result, reason, note.payload),
            )
        return UUID(note.payload)
    raise AssertionError("no NOTIFY on alarm_command within 10 s")


# --- shape ------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 30, 8, tzinfo=timezone(timedelta(hours=8)))
FEEDBACK = {"cause_category": "leak", "action": "关闭阀门 XV-101，堵漏", "handler": "李四"}

# (kind, role, args, the field the error names)
BAD_SHAPES = [
    ("shelve", "engineer", {"minutes": math.nan, "reason": "检修"}, "args.minutes"),
    ("shelve", "engineer", {"minutes": math.inf, "reason": "检修"}, "args.minutes"),
    ("shelve", "engineer", {"minutes": 0, "reason": "检修"}, "args.minutes"),
    ("shelve", "engineer", {"minutes": -5, "reason": "检修"}, "args.minutes"),
    ("shelve", "engineer", {"minutes": 7 * 24 * 60 + 1, "reason": "检修"}, "args.minutes"),
    ("shelve", "engineer", {"minutes": 1e300, "reason": "检修"}, "args.minutes"),
    ("shelve", "engineer", {"minutes": True, "reason": "检修"}, "args.minutes"),
    ("shelve", "engineer", {"minutes": 10**400, "reason": "检修"}, "args.minutes"),  # no float holds it
    ("shelve", "engineer", {"minutes": -(10**400), "reason": "检修"}, "args.minutes"),
    ("shelve", "engineer", {"minutes": "30", "reason": "检修"}, "args.minutes"),
    ("shelve", "engineer", {"reason": "检修"}, "args.minutes"),
    ("shelve", "engineer", {"minutes": 30}, "args.reason"),
    ("shelve", "engineer", {"minutes": 30, "reason": "  "}, "args.reason"),
    ("comment", "engineer", {"text": ""}, "args.text"),
    ("comment", "engineer", {"text": " \n "}, "args.text"),
    ("comment", "engineer", {"text": "长" * 2001}, "args.text"),
    ("comment", "engineer", {"text": 42}, "args.text"),
    ("comment", "engineer", {}, "args.text"),
    ("comment", "engineer", {"text": "已处理\x00"}, "args.text"),
    ("comment", "engineer", {"text": "铃\x07声"}, "args.text"),
    ("comment", "engineer", {"text": "半个\ud800字"}, "args.text"),  # a lone surrogate (category Cs)
    ("comment", "engineer", {"text": "\udfff"}, "args.text"),
    ("shelve", "engineer", {"minutes": 30, "reason": "检修\x1b[31m"}, "args.reason"),
    ("respond", "enterprise_operator", {"text": ""}, "args.text"),
    ("feedback", "enterprise_operator", {**FEEDBACK, "cause_category": "雷击"}, "args.cause_category"),
    ("feedback", "enterprise_operator", {**FEEDBACK, "cause_category": None}, "args.cause_category"),
    ("feedback", "enterprise_operator", {**FEEDBACK, "handler": ""}, "args.handler"),
    ("feedback", "enterprise_operator", {**FEEDBACK, "handled_at": "yesterday"}, "args.handled_at"),
    ("feedback", "enterprise_operator", {**FEEDBACK, "handled_at": "2026-11-30T08:00:00"}, "args.handled_at"),
    # in range where written, out of range in UTC: astimezone overflowed
    (
        "feedback",
        "enterprise_operator",
        {**FEEDBACK, "handled_at": "0001-01-01T00:00:00+05:00"},
        "args.handled_at",
    ),
    ("supervise", "bureau_duty", {"text": "立即处置", "due_at": "9999-12-31T23:00:00-05:00"}, "args.due_at"),
    ("supervise", "bureau_duty", {"text": "立即处置"}, "args.due_at"),
    ("supervise", "bureau_duty", {"text": "立即处置", "due_at": NOW.replace(tzinfo=None)}, "args.due_at"),
    ("remove", "engineer", {}, "args.reason"),
    ("ack", "engineer", {"minutes": 30}, "args.minutes"),  # an args key ack does not take
    ("comment", "engineer", {"text": "ok", "txet": "ok"}, "args.txet"),
    ("restore", "engineer", {"reason": "修好了"}, "args.reason"),
    ("acknowledge", "engineer", {}, "kind"),
    ("ack", "operator", {}, "role"),
]


@pytest.mark.parametrize(("kind", "role", "args", "field"), BAD_SHAPES)
def test_a_bad_shape_is_refused_naming_the_field(
    kind: str, role: str, args: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidCommand) as caught:
        Command(alarm_key=KEY, kind=kind, actor="王工", role=role, args=args)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("field", "value"), [("alarm_key", ""), ("actor", " "), ("enterprise", ""), ("actor", "王\x00工")]
)
def test_who_and_what_must_be_named(field: str, value: str) -> None:
    with pytest.raises(InvalidCommand) as caught:
        ack(**{field: value})
    assert caught.value.field == field


def test_a_good_shape_is_kept_as_checked() -> None:
    c = Command(
        alarm_key=KEY,
        kind="feedback",  # type: ignore[arg-type]
        actor="李四",
        role="enterprise_operator",  # type: ignore[arg-type]
        enterprise="LHJH",
        args={**FEEDBACK, "action": "  关闭阀门  ", "handled_at": NOW},
    )
    assert (c.kind, c.role) == (CommandKind.FEEDBACK, Role.ENTERPRISE_OPERATOR)
    assert dict(c.args) == {**FEEDBACK, "action": "关闭阀门", "handled_at": "2026-11-30T00:00:00+00:00"}
    with pytest.raises(TypeError):
        c.args["handler"] = "someone else"  # type: ignore[index]
    assert CauseCategory("false_alarm").zh == "误报"
    shelve = Command(alarm_key=KEY, kind=CommandKind.SHELVE, actor="王工", role=Role.ENGINEER,
                     args={"minutes": 7 * 24 * 60, "reason": "检修"})  # fmt: skip
    assert shelve.args["minutes"] == 7 * 24 * 60
    assert ack().id != ack().id  # a new id for every command


# --- submit and outcome -----------------------------------------------------------------------


async def test_submit_is_idempotent_by_id(conn: Conn) -> None:
    c = Command(
        alarm_key=KEY,
        kind=CommandKind.SHELVE,
        actor="王工",
        role=Role.ENTERPRISE_OPERATOR,
        enterprise="LHJH",
        args={"minutes": 30, "reason": "仪表检修"},
    )
    assert await submit(conn, c) == c.id
    assert await submit(conn, c) == c.id  # a retry after a lost reply
    cur = await conn.execute(
        "SELECT id, alarm_key, command, actor, role, enterprise, args, status, reason, result FROM alarm_command"
    )
    assert await cur.fetchall() == [
        (c.id, KEY, "shelve", "王工", "enterprise_operator", "LHJH",
         {"minutes": 30, "reason": "仪表检修"}, "pending", None, None),
    ]  # fmt: skip


async def test_submit_in_a_callers_transaction_is_sent_by_its_commit(db: str, conn: Conn) -> None:
    async def submitted() -> list[tuple[UUID]]:
        cur = await conn.execute("SELECT id FROM alarm_command")
        return await cur.fetchall()

    async with await psycopg.AsyncConnection.connect(db) as api:
        async with api.transaction(force_rollback=True):
            await submit(api, ack())
        c = ack()
        async with api.transaction():
            await submit(api, c)
            assert await submitted() == []
        assert await submitted() == [(c.id,)]


async def test_insert_notifies_the_engine_with_the_id(conn: Conn, listener: Conn) -> None:
    c = ack()
    await submit(conn, c)
    payloads = [n.payload async for n in listener.notifies(timeout=5, stop_after=1)]
    assert payloads == [str(c.id)]
    await submit(conn, c)  # nothing inserted: no second notification
    await submit(conn, second := ack())
    assert [n.payload async for n in listener.notifies(timeout=5, stop_after=1)] == [str(second.id)]


async def test_outcome_is_pending_until_the_engine_settles_it(conn: Conn) -> None:
    c = ack()
    await submit(conn, c)
    for timeout_s in (0, 0.25):
        o = await outcome(conn, c.id, timeout_s=timeout_s)
        assert (o.id, o.status, o.result, o.reason, o.applied_at) == (
            c.id,
            CommandStatus.PENDING,
            None,
            None,
            None,
        )


@pytest.mark.parametrize(
    ("status", "result", "reason"),
    [("applied", "acknowledged", None), ("rejected", None, "role approver may not ack alarms")],
)
async def test_outcome_returns_what_the_engine_stored(
    db: str, conn: Conn, listener: Conn, status: str, result: str | None, reason: str | None
) -> None:
    engine = asyncio.create_task(settle(db, listener, status, result, reason))
    c = ack()
    await submit(conn, c)
    o = await outcome(conn, c.id, timeout_s=10)
    assert await engine == c.id
    assert (o.status, o.result, o.reason) == (CommandStatus(status), result and Status(result), reason)
    assert o.applied_at is not None and o.applied_at.tzinfo is not None


async def test_outcome_of_an_id_never_submitted(conn: Conn) -> None:
    with pytest.raises(UnknownCommand):
        await outcome(conn, uuid4(), timeout_s=0)


# --- the alarm list ---------------------------------------------------------------------------

T = datetime(2026, 11, 30, tzinfo=UTC)
# key: (enterprise, hazard source, priority, status, acked, minutes after T it entered its status)
ALARMS = {
    "A.low.unack": ("E1", "HS1", "low", "unacknowledged", False, 0),
    "B.crit.acked": ("E1", "HS1", "critical", "acknowledged", True, 1),
    "C.high.rtn": ("E1", "HS2", "high", "returned_unacknowledged", False, 2),
    "D.high.unack.new": ("E2", "HS9", "high", "unacknowledged", False, 5),
    "E.crit.latched": ("E1", "HS2", "critical", "latched", False, 9),
    "F.med.shelved": ("E1", "HS1", "medium", "shelved", True, -60),
    "G.high.normal": ("E1", "HS1", "high", "normal", True, -90),
    "H.crit.suppressed": ("E2", "HS9", "critical", "suppressed", True, -30),
    "I.crit.oos": ("E1", "HS2", "critical", "out_of_service", True, -20),
    "J.high.latched.acked": ("E1", "HS2", "high", "latched", True, 3),
}


async def _craft(conn: Conn) -> None:
    for key, (enterprise, hs, priority, status, acked, minutes) in ALARMS.items():
        since = T + timedelta(minutes=minutes)
        await conn.execute(
            """INSERT INTO alarm_state (key, enterprise, county, hazard_source, unit, subject, kind, priority,
                   status, condition, acked, latching, since, shelved_until, by_whom, reason, value, "limit",
                   raised_at, seq)
               VALUES (%s, %s, '141102', %s, NULL, %s, 'HH', %s, %s, true, %s, false, %s, %s, %s, %s, 4.5, 4,
                   %s, 1)""",
            (
                key, enterprise, hs, key, priority, status, acked, since,
                since + timedelta(hours=2) if status == "shelved" else None,
                "王工" if status == "shelved" else None, "仪表检修" if status == "shelved" else None, since,
            ),
        )  # fmt: skip


async def keys(conn: Conn, **filters: Any) -> list[str]:
    return [a.key for a in await list_alarms(conn, **filters)]


async def test_list_order_awaiting_acknowledgement_then_priority_then_oldest(conn: Conn) -> None:
    await _craft(conn)
    awaiting = ["E.crit.latched", "C.high.rtn", "D.high.unack.new", "A.low.unack"]
    assert await keys(conn, active_only=True) == [
        *awaiting,
        "B.crit.acked",
        "J.high.latched.acked",
        "F.med.shelved",
    ]
    assert await keys(conn, active_only=False) == [
        *awaiting, "H.crit.suppressed", "I.crit.oos", "B.crit.acked", "G.high.normal", "J.high.latched.acked",
        "F.med.shelved",
    ]  # fmt: skip
    assert {Status.UNACK, Status.ACKED, Status.RTN_UNACK, Status.LATCHED, Status.SHELVED} == ACTIVE


async def test_list_filters_and_limit(conn: Conn) -> None:
    await _craft(conn)
    assert await keys(conn, active_only=True, enterprise="E2") == ["D.high.unack.new"]
    assert await keys(conn, active_only=False, enterprise="E2") == ["D.high.unack.new", "H.crit.suppressed"]
    assert await keys(conn, active_only=True, hazard_source="HS2") == [
        "E.crit.latched", "C.high.rtn", "J.high.latched.acked",
    ]  # fmt: skip
    assert await keys(conn, active_only=True, priority=Priority.CRITICAL) == [
        "E.crit.latched",
        "B.crit.acked",
    ]
    assert await keys(
        conn, active_only=True, enterprise="E1", hazard_source="HS1", priority=Priority.LOW
    ) == ["A.low.unack"]
    assert await keys(conn, active_only=True, limit=2) == ["E.crit.latched", "C.high.rtn"]
    assert await keys(conn, active_only=True, enterprise="E3") == []


async def test_list_rows_carry_the_state(conn: Conn) -> None:
    await _craft(conn)
    [shelved] = await list_alarms(conn, active_only=True, priority=Priority.MEDIUM)
    assert (shelved.priority, shelved.status, shelved.acked) == (Priority.MEDIUM, Status.SHELVED, True)
    assert (shelved.since, shelved.shelved_until) == (T - timedelta(hours=1), T + timedelta(hours=1))
    assert (shelved.by_whom, shelved.reason, shelved.value, shelved.limit) == ("王工", "仪表检修", 4.5, 4.0)
    assert (shelved.enterprise, shelved.county, shelved.hazard_source, shelved.unit) == (
        "E1",
        "141102",
        "HS1",
        None,
    )
