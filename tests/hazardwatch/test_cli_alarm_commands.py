"""``hazardwatch alarms list`` and the operator commands (ack, reset, shelve, unshelve, comment,
remove, restore) against a real PostgreSQL: what each submits to alarm_command, and its exit code
for each outcome (0 applied, 1 rejected, 3 pending, 2 bad usage).

``engine`` plays the engine's side of the contract in a thread: it LISTENs on alarm_command and
stores an outcome on the command it is told about.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner, Result

from alarms.commands import alarm_history
from hazardwatch import cli_alarms
from hazardwatch.cli import app
from storage.db import Backend
from tests.support.databases import create_scratch_db, drop_scratch_db, migrated_db

KEY = "LHJH.G101.LT-101A:LL"
GAS = "LHJH.G101.AT-101:GAS_L2"
runner = CliRunner()


@pytest.fixture(scope="module")
def db() -> Iterator[str]:
    with migrated_db(Backend.POSTGRES) as dsn:
        yield dsn


@pytest.fixture
def dsn(db: str) -> str:
    """The module's database with no commands and no alarms."""
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("TRUNCATE alarm_command, alarm_state, alarm_journal")
    return db


def invoke(dsn: str, *args: str) -> Result:
    return runner.invoke(app, ["alarms", *args], env={"DATABASE_URL": dsn})


def commands(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT alarm_key, command, actor, role, enterprise, args, status FROM alarm_command"
        ).fetchall()


@contextlib.contextmanager
def engine(dsn: str, status: str, result: str | None = None, reason: str | None = None) -> Iterator[None]:
    """Settle the next command submitted while the block runs as ``status``."""
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("LISTEN alarm_command")

    def settle() -> None:
        ids = [n.payload for n in conn.notifies(timeout=10, stop_after=1)]
        conn.execute(
            "UPDATE alarm_command SET status = %s, result = %s, reason = %s, applied_at = now(), seq = 1 "
            "WHERE id = ANY(%s::uuid[])",
            (status, result, reason, ids),
        )

    thread = threading.Thread(target=settle)
    thread.start()
    try:
        yield
    finally:
        thread.join()
        conn.close()


# --- list -------------------------------------------------------------------------------------

T = datetime(2026, 11, 30, tzinfo=UTC)
# key, enterprise, hazard source, priority, status, acked, minutes after T
ALARMS = [
    (GAS, "LHJH", "LHJH-H01", "critical", "latched", False, 5),
    (KEY, "LHJH", "LHJH-H01", "high", "unacknowledged", False, 0),
    ("LHJH.T201.TT-201:H", "LHJH", "LHJH-H02", "critical", "acknowledged", True, -10),
    ("LHJH.T201.PT-202:H", "LHJH", "LHJH-H02", "medium", "shelved", True, -30),
    ("JXHG.R301.TT-301:HH", "JXHG", "JXHG-H01", "high", "normal", True, -90),
]


def craft(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        for key, enterprise, hs, priority, status, acked, minutes in ALARMS:
            since = T + timedelta(minutes=minutes)
            shelved = status == "shelved"
            conn.execute(
                """INSERT INTO alarm_state (key, enterprise, county, hazard_source, subject, kind, priority,
                       status, condition, acked, latching, since, shelved_until, by_whom, reason, value,
                       "limit", seq)
                   VALUES (%s, %s, '141102', %s, %s, 'H', %s, %s, true, %s, false, %s, %s, %s, %s, 3.25, 4, 1)""",
                (
                    key, enterprise, hs, key, priority, status, acked, since,
                    since + timedelta(hours=1) if shelved else None,
                    "王工" if shelved else None, "仪表检修，待更换变送器" if shelved else None,
                ),
            )  # fmt: skip


def test_list_shows_the_active_alarms_in_order(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_alarms.out, "width", 200)  # a wide terminal: one line per alarm
    craft(dsn)
    result = invoke(dsn, "list", "--active")
    assert result.exit_code == 0, result.output
    rows = [[c.strip() for c in line.split("│")] for line in result.stdout.splitlines() if "│ LHJH" in line]
    assert [r[0] for r in rows] == [GAS, KEY, "LHJH.T201.TT-201:H", "LHJH.T201.PT-202:H"]
    assert rows[0] == [
        "LHJH.G101.AT-101:GAS_L2",
        "critical",
        "latched",
        "2026-11-30 00:05:00",
        "3.25 / 4",
        "LHJH",
        "LHJH-H01",
    ]
    assert rows[3][2] == "shelved until 2026-11-30 00:30:00 (王工: 仪表检修，待更换变送器)"
    assert "4 alarm(s)" in result.stdout


@pytest.mark.parametrize(
    ("args", "keys"),
    [
        ([], [GAS, KEY, "LHJH.T201.TT-201:H", "JXHG.R301.TT-301:HH", "LHJH.T201.PT-202:H"]),
        (["--active"], [GAS, KEY, "LHJH.T201.TT-201:H", "LHJH.T201.PT-202:H"]),
        (["--enterprise", "JXHG"], ["JXHG.R301.TT-301:HH"]),
        (["--hazard-source", "LHJH-H02", "--priority", "critical"], ["LHJH.T201.TT-201:H"]),
        (["--priority", "high"], [KEY, "JXHG.R301.TT-301:HH"]),
        (["--active", "--limit", "1"], [GAS]),
        (["--enterprise", "NONE"], []),
    ],
)
def test_list_json_with_filters(dsn: str, args: list[str], keys: list[str]) -> None:
    craft(dsn)
    result = invoke(dsn, "list", "--json", *args)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["key"] for r in rows] == keys
    if rows and rows[0]["key"] == GAS:
        assert {
            k: rows[0][k] for k in ("priority", "status", "acked", "since", "value", "limit", "county")
        } == {
            "priority": "critical",
            "status": "latched",
            "acked": False,
            "since": "2026-11-30T00:05:00+00:00",
            "value": 3.25,
            "limit": 4.0,
            "county": "141102",
        }


# --- history ----------------------------------------------------------------------------------


def journal(dsn: str) -> None:
    """KEY raised, acknowledged with feedback, supervised and answered; GAS once."""
    rows = [
        (1, 0, KEY, "RAISED", "normal", "unacknowledged", 0, 3.25, 4.0, "engine", None),
        (2, 0, KEY, "ACKED", "unacknowledged", "acknowledged", 2, 3.25, 4.0, "王工", None),
        (3, 0, KEY, "FEEDBACK", "acknowledged", "acknowledged", 3, 3.25, 4.0, "王工",
         {"cause_category": "process_upset", "action": "减少用气", "handler": "王工"}),
        (4, 0, KEY, "SUPERVISE", "acknowledged", "acknowledged", 4, 3.25, 4.0, "市局值班员",
         {"text": "请核查", "due_at": "2026-12-01T02:00:00+00:00"}),
        (5, 0, GAS, "RAISED", "normal", "unacknowledged", 5, float("inf"), 25.0, "engine", None),  # BAD sample
        (6, 0, KEY, "RESPOND", "acknowledged", "acknowledged", 6, 3.25, 4.0, "王工", {"text": "已处理"}),
    ]  # fmt: skip
    with psycopg.connect(dsn) as conn:
        for seq, n, key, action, old, new, minutes, value, limit, actor, detail in rows:
            conn.execute(
                """INSERT INTO alarm_journal (seq, n, alarm_key, action, old_status, new_status, at, arrival,
                       value, "limit", actor, detail) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                (seq, n, key, action, old, new, T + timedelta(minutes=minutes), T, value, limit, actor,
                 None if detail is None else json.dumps(detail, ensure_ascii=False)),
            )  # fmt: skip


def test_history_shows_an_alarms_transitions_and_notes_oldest_first(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_alarms.out, "width", 220)
    journal(dsn)
    result = invoke(dsn, "history", KEY)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if "2026-11-30" in line]
    assert [line.split("│")[1].strip() for line in lines] == [
        "RAISED",
        "ACKED",
        "FEEDBACK",
        "SUPERVISE",
        "RESPOND",
    ]
    assert "normal → unacknowledged" in lines[0] and "3.25 / 4" in lines[0]
    assert all(
        part in lines[2] for part in ("cause_category: process_upset", "action: 减少用气", "handler: 王工")
    )
    assert "5 entries" in result.stdout
    result = invoke(dsn, "history", KEY, "--limit", "2", "--json")
    assert result.exit_code == 0, result.output
    newest = json.loads(result.stdout)
    assert [(e["seq"], e["action"], e["actor"]) for e in newest] == [
        (4, "SUPERVISE", "市局值班员"),
        (6, "RESPOND", "王工"),
    ]
    assert newest[0]["detail"] == {"text": "请核查", "due_at": "2026-12-01T02:00:00+00:00"}
    assert newest[0]["at"] == "2026-11-30T00:04:00+00:00"
    assert invoke(dsn, "history", "NO.SUCH.TAG:H").stdout.strip().endswith("0 entries")
    gas = json.loads(invoke(dsn, "history", GAS, "--json").stdout)  # strict JSON: no Infinity
    assert [(e["value"], e["limit"]) for e in gas] == [("inf", 25.0)]


async def test_history_keeps_to_the_actors_enterprise(dsn: str) -> None:
    craft(dsn)  # KEY is LHJH's
    journal(dsn)
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        assert len(await alarm_history(conn, KEY, enterprise="LHJH")) == 5
        assert await alarm_history(conn, KEY, enterprise="JXHG") == []
        assert len(await alarm_history(conn, KEY)) == 5


# --- commands ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "command", "submitted"),
    [
        (["ack", KEY], "ack", {}),
        (["reset", KEY], "reset", {}),
        (
            ["shelve", KEY, "--minutes", "30", "--reason", "检修"],
            "shelve",
            {"minutes": 30.0, "reason": "检修"},
        ),
        (["unshelve", KEY], "unshelve", {}),
        (["comment", KEY, "已通知班长 "], "comment", {"text": "已通知班长"}),
        (["remove", KEY, "--reason", "变送器拆除送检"], "remove", {"reason": "变送器拆除送检"}),
        (["restore", KEY], "restore", {}),
        (
            ["feedback", KEY, "--cause", "instrument_fault", "--action", "更换变送器", "--handler", "张三"],
            "feedback",
            {"cause_category": "instrument_fault", "action": "更换变送器", "handler": "张三"},
        ),
        (
            ["feedback", KEY, "--cause", "leak", "--action", "关阀堵漏", "--handler", "张三",
             "--handled-at", "2026-11-30T09:30+08:00"],
            "feedback",
            {"cause_category": "leak", "action": "关阀堵漏", "handler": "张三",
             "handled_at": "2026-11-30T01:30:00+00:00"},
        ),
        (["respond", KEY, "已安排检修，今日16时前完成"], "respond", {"text": "已安排检修，今日16时前完成"}),
    ],
)  # fmt: skip
def test_a_command_not_waited_for_is_submitted_and_pending(
    dsn: str, args: list[str], command: str, submitted: dict[str, Any]
) -> None:
    result = invoke(dsn, *args, "--wait", "0")
    assert result.exit_code == 3, result.output
    assert "not waiting for the engine" in result.stdout
    assert commands(dsn) == [(KEY, command, getpass.getuser(), "engineer", None, submitted, "pending")]


def test_supervise_is_submitted_by_bureau_duty(dsn: str) -> None:
    """督办 is the bureau's: the role defaults to bureau_duty and no enterprise is sent."""
    result = invoke(
        dsn,
        "supervise",
        KEY,
        "请立即核查液位",
        "--due",
        "2026-12-01T10:00+08:00",
        "--as",
        "市局值班员",
        "--wait",
        "0",
    )
    assert result.exit_code == 3, result.output
    assert commands(dsn) == [
        (KEY, "supervise", "市局值班员", "bureau_duty", None,
         {"text": "请立即核查液位", "due_at": "2026-12-01T02:00:00+00:00"}, "pending"),
    ]  # fmt: skip


def test_ack_applied_by_the_engine(dsn: str) -> None:
    with engine(dsn, "applied", "acknowledged"):
        result = invoke(
            dsn, "ack", KEY, "--as", "王工", "--role", "enterprise_operator", "--enterprise", "LHJH"
        )
    assert result.exit_code == 0, result.output
    assert f"ack {KEY}: applied; the alarm is now acknowledged" in result.stdout
    assert commands(dsn) == [(KEY, "ack", "王工", "enterprise_operator", "LHJH", {}, "applied")]


def test_a_rejected_command_prints_the_reason(dsn: str) -> None:
    with engine(dsn, "rejected", reason="high alarms may be shelved for at most 60 min"):
        result = invoke(dsn, "shelve", KEY, "--minutes", "120", "--reason", "检修", "--wait", "10")
    assert result.exit_code == 1, result.output
    assert f"shelve {KEY}: rejected: high alarms may be shelved for at most 60 min" in result.stderr


def test_still_pending_after_the_wait_says_the_engine_may_not_run(dsn: str) -> None:
    result = invoke(dsn, "ack", KEY, "--wait", "0.3")
    assert result.exit_code == 3, result.output
    assert "still pending after 0.3 s" in result.stderr
    assert "may not be running" in result.stderr
    assert [c[-1] for c in commands(dsn)] == ["pending"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["shelve", KEY, "--minutes", "0", "--reason", "检修"], "args.minutes"),
        (["shelve", KEY, "--minutes", "nan", "--reason", "检修"], "args.minutes"),
        (["shelve", KEY, "--minutes", "30", "--reason", " "], "args.reason"),
        (["shelve", KEY, "--minutes", "30"], "--reason"),
        (["comment", KEY, ""], "args.text"),
        (["ack", KEY, "--role", "operator"], "--role"),
        (["ack", KEY, "--wait", "-1"], "--wait"),
        (["ack"], "Missing argument 'KEY'"),
        (["list", "--priority", "urgent"], "--priority"),
        (["feedback", KEY, "--cause", "bad", "--action", "x", "--handler", "y"], "--cause"),
        (["feedback", KEY, "--cause", "leak", "--action", " ", "--handler", "y"], "args.action"),
        (["feedback", KEY, "--cause", "leak", "--action", "x"], "--handler"),
        (
            ["feedback", KEY, "--cause", "leak", "--action", "x", "--handler", "y", "--handled-at", "09:30"],
            "args.handled_at",
        ),
        (["supervise", KEY, "核查", "--due", "2026-12-01T10:00"], "args.due_at"),
        (["supervise", KEY, "核查"], "--due"),
        (["respond", KEY, ""], "args.text"),
    ],
)
def test_bad_usage_exits_2_and_submits_nothing(dsn: str, args: list[str], message: str) -> None:
    result = invoke(dsn, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert commands(dsn) == []


def test_no_database_given_is_bad_usage() -> None:
    result = runner.invoke(app, ["alarms", "ack", KEY], env={"DATABASE_URL": ""})
    assert result.exit_code == 2, result.output
    assert "DATABASE_URL" in result.stderr


def test_an_unreachable_database_is_said_plainly() -> None:
    result = runner.invoke(
        app, ["alarms", "ack", KEY], env={"DATABASE_URL": "postgresql://hw:secret@127.0.0.1:9/hw"}
    )
    assert result.exit_code == 1, result.output
    assert "cannot reach the database" in result.stderr
    assert "secret" not in result.output


def test_a_database_without_the_schema_says_to_upgrade(dsn: str) -> None:
    bare = create_scratch_db(Backend.POSTGRES)
    try:
        result = invoke(bare, "list")
    finally:
        drop_scratch_db(Backend.POSTGRES, bare)
    assert result.exit_code == 1, result.output
    assert "hazardwatch db upgrade" in result.stderr


def test_kpi_prints_the_journals_figures_for_the_period(dsn: str) -> None:
    craft(dsn)  # alarm_state rows give the journal's labels
    key = ALARMS[0][0]
    with psycopg.connect(dsn) as conn:
        conn.execute("TRUNCATE alarm_journal")
        for i in range(3):  # three raises in 50 s: a chattering alarm
            conn.execute(
                """INSERT INTO alarm_journal (seq, n, alarm_key, action, old_status, new_status, at, arrival, actor)
                   VALUES (%s, 0, %s, 'RAISED', 'normal', 'unacknowledged', %s, %s, 'engine')""",
                (i, key, T + timedelta(seconds=25 * i), T + timedelta(seconds=25 * i)),
            )
    start, end = T.isoformat(), (T + timedelta(hours=1)).isoformat()
    result = invoke(dsn, "kpi", "--start", start, "--end", end)
    assert result.exit_code == 0, result.output
    assert "3 annunciations" in result.output and key in result.output
    other = invoke(dsn, "kpi", "--start", start, "--end", end, "--enterprise", "NOBODY")
    assert other.exit_code == 0 and "0 annunciations" in other.output
    assert invoke(dsn, "kpi", "--start", end, "--end", start).exit_code == 2
    assert invoke(dsn, "kpi", "--start", "yesterday").exit_code == 2
