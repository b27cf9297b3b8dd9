"""The alarm tables (migration 0004) as the single writer uses them.

``write`` stores commits in one transaction: journal, state, outbox, command outcomes, audit,
rule state and ``alarm_writer.seq`` together, so the database never holds half a commit.
Writing a commit again is a no-op: journal, outbox and audit rows are keyed by (seq, n),
state rows only move forward (``seq`` greater than the stored one), a command is settled
only while it is pending. ``load`` reads back what a restarting writer resumes from.
"""

from __future__ import annotations

import json
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from alarms.journal import AlarmRow, Commit, RuleRow
from storage.db import BlockingConn, Conn, translate_errors

__all__ = ["PendingCommand", "StoredState", "load", "pending_commands", "write"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ts(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


def _us(ts: datetime | None) -> int | None:
    return None if ts is None else (ts - _EPOCH) // timedelta(microseconds=1)


# Each table is written by one binary COPY into a temporary staging table and one statement
# from there, not a statement per row: a flood commit holds thousands of rows, and a statement
# per row costs ~50 µs in the client alone. Times travel as microseconds since the epoch
# (exact), NaN becomes NULL.
_AT = "timestamptz 'epoch' + {} * interval '1 microsecond'"


@dataclass(frozen=True, slots=True)
class _Table:
    staging: str  # the temporary table the rows are copied into
    columns: tuple[tuple[str, str], ...]  # its (name, type)
    sql: str  # from the staging table into the real one

    def create(self) -> str:
        cols = ", ".join(f"{name} {kind}" for name, kind in self.columns)
        return f"CREATE TEMPORARY TABLE IF NOT EXISTS {self.staging} ({cols}) ON COMMIT DELETE ROWS"


def _cols(spec: str) -> tuple[tuple[str, str], ...]:
    return tuple((c.split()[0], c.split()[1]) for c in spec.split(","))


_JOURNAL = _Table(
    "pg_temp.hw_journal_in",
    _cols(
        "seq int8, n int4, alarm_key text, action text, old_status text, new_status text, at int8, "
        "arrival int8, value float8, lim float8, actor text, command_id text, detail text"
    ),
    f"""INSERT INTO alarm_journal (seq, n, alarm_key, action, old_status, new_status, at, arrival, value,
                                   "limit", actor, command_id, detail)
        SELECT seq, n, alarm_key, action, old_status, new_status, {_AT.format("at")}, {_AT.format("arrival")},
               nullif(value, 'NaN'), nullif(lim, 'NaN'), actor, command_id::uuid, detail::jsonb
        FROM pg_temp.hw_journal_in
        ON CONFLICT (seq, n) DO NOTHING""",
)
_STATE = _Table(
    "pg_temp.hw_state_in",
    _cols(
        "key text, enterprise text, county text, hazard_source text, unit text, subject text, kind text, "
        "priority text, status text, condition bool, acked bool, latching bool, since int8, "
        "shelved_until int8, by_whom text, reason text, value float8, lim float8, raised_at int8, "
        "acked_at int8, acked_by text, seq int8"
    ),
    f"""INSERT INTO alarm_state (key, enterprise, county, hazard_source, unit, subject, kind, priority, status,
                                 condition, acked, latching, since, shelved_until, by_whom, reason, value,
                                 "limit", raised_at, acked_at, acked_by, seq)
        SELECT key, enterprise, county, hazard_source, unit, subject, kind, priority, status, condition, acked,
               latching, {_AT.format("since")}, {_AT.format("shelved_until")}, by_whom, reason,
               nullif(value, 'NaN'), nullif(lim, 'NaN'), {_AT.format("raised_at")}, {_AT.format("acked_at")},
               acked_by, seq
        FROM pg_temp.hw_state_in
        ON CONFLICT (key) DO UPDATE SET
            enterprise = excluded.enterprise, county = excluded.county, hazard_source = excluded.hazard_source,
            unit = excluded.unit, subject = excluded.subject, kind = excluded.kind, priority = excluded.priority,
            status = excluded.status, condition = excluded.condition, acked = excluded.acked,
            latching = excluded.latching, since = excluded.since, shelved_until = excluded.shelved_until,
            by_whom = excluded.by_whom, reason = excluded.reason, value = excluded.value,
            "limit" = excluded."limit", raised_at = excluded.raised_at, acked_at = excluded.acked_at,
            acked_by = excluded.acked_by, seq = excluded.seq
        WHERE alarm_state.seq < excluded.seq""",
)
_OUTBOX = _Table(
    "pg_temp.hw_outbox_in",
    _cols(
        "seq int8, n int4, alarm_key text, event text, priority text, labels text, message_zh text, "
        "message_en text, created_at int8"
    ),
    f"""INSERT INTO notification (seq, n, alarm_key, event, priority, labels, message_zh, message_en, created_at)
        SELECT seq, n, alarm_key, event, priority, labels::jsonb, message_zh, message_en,
               {_AT.format("created_at")}
        FROM pg_temp.hw_outbox_in
        ON CONFLICT (seq, n) DO NOTHING""",
)
_COMMAND = _Table(
    "pg_temp.hw_command_in",
    _cols("status text, result text, reason text, applied_at int8, seq int8, id text"),
    f"""UPDATE alarm_command c SET status = u.status, result = u.result, reason = u.reason,
                                   applied_at = {_AT.format("u.applied_at")}, seq = u.seq
        FROM pg_temp.hw_command_in u
        WHERE c.id = u.id::uuid AND c.status = 'pending'""",
)
_RULE = _Table(
    "pg_temp.hw_rule_in",
    _cols("key text, active bool, since int8, seq int8"),
    """INSERT INTO rule_state (key, active, since, seq)
       SELECT key, active, since, seq FROM pg_temp.hw_rule_in
       ON CONFLICT (key) DO UPDATE SET active = excluded.active, since = excluded.since, seq = excluded.seq
       WHERE rule_state.seq < excluded.seq""",
)
_AUDIT = _Table(
    "pg_temp.hw_audit_in",
    _cols("at int8, actor text, action text, target text, detail text, seq int8"),
    f"""INSERT INTO audit_log (at, actor, action, target, detail, seq)
        SELECT {_AT.format("at")}, actor, action, target, detail::jsonb, seq FROM pg_temp.hw_audit_in
        ON CONFLICT (seq, target, action) WHERE seq IS NOT NULL DO NOTHING""",
)
_TABLES = (_JOURNAL, _STATE, _OUTBOX, _COMMAND, _RULE, _AUDIT)
_WRITER = """
INSERT INTO alarm_writer (id, seq, updated_at) VALUES (1, %s, %s)
ON CONFLICT (id) DO UPDATE SET seq = greatest(alarm_writer.seq, excluded.seq), updated_at = excluded.updated_at
"""
# connections whose staging tables exist (temporary tables live as long as their connection)
_STAGED: weakref.WeakSet[BlockingConn] = weakref.WeakSet()


def _json(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False)


def write(conn: BlockingConn, commits: Sequence[Commit]) -> None:
    """Store ``commits`` (in seq order) in one transaction. Blocking: the service runs it on
    its writer thread, where waiting on the server never waits for the event loop (a flood
    keeps the loop busy, and a write makes a dozen round trips)."""
    if not commits:
        return
    journal, outbox, audit = [], [], []
    commands: dict[str, tuple[Any, ...]] = {}
    # an alarm or rule touched by several of the commits: its row of the last one (one
    # statement cannot update a row twice, and state rows only move forward anyway)
    state: dict[str, tuple[Any, ...]] = {}
    rules: dict[str, tuple[Any, ...]] = {}
    for c in commits:
        arrival = c.arrival_us
        journal += [
            (c.seq, n, j.alarm_key, j.action, j.old_status, j.new_status, j.at_us, arrival, j.value, j.limit,
             j.actor, j.command_id, None if j.detail is None else _json(j.detail))
            for n, j in enumerate(c.journal)
        ]  # fmt: skip
        for a in c.alarms:
            state[a.key] = (
                a.key, a.enterprise, a.county, a.hazard_source, a.unit, a.subject, a.kind, a.priority, a.status,
                a.condition, a.acked, a.latching, a.since_us, a.shelved_until_us, a.by_whom, a.reason, a.value,
                a.limit, a.raised_at_us, a.acked_at_us, a.acked_by, c.seq,
            )  # fmt: skip
        outbox += [
            (c.seq, o.n, o.alarm_key, o.event, o.priority, _json(o.labels), o.message_zh, o.message_en, arrival)
            for o in c.outbox
        ]  # fmt: skip
        for o in c.commands:  # settled once: the first outcome stands (as the UPDATE's WHERE does)
            commands.setdefault(o.id, (o.status, o.result, o.reason, arrival, c.seq, o.id))
        for r in c.rules:
            rules[r.key] = (r.key, r.active, r.since_us, c.seq)
        audit += [
            (arrival, actor, action, target, _json(detail), c.seq)
            for actor, action, target, detail in c.audit
        ]
    last = commits[-1]
    with translate_errors("store alarm commits"):
        if conn not in _STAGED:  # in a transaction of their own: a failed write keeps them
            with conn.transaction(), conn.cursor() as cur:
                for table in _TABLES:
                    cur.execute(table.create())
            _STAGED.add(conn)
        with conn.transaction(), conn.cursor() as cur:
            for table, rows in (
                (_JOURNAL, journal), (_STATE, state.values()), (_OUTBOX, outbox), (_COMMAND, commands.values()),
                (_RULE, rules.values()), (_AUDIT, audit),
            ):  # fmt: skip
                if rows:
                    names = ", ".join(name for name, _ in table.columns)
                    with cur.copy(f"COPY {table.staging} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
                        copy.set_types([kind for _, kind in table.columns])
                        for row in rows:
                            copy.write_row(row)
                    cur.execute(table.sql)
            cur.execute(_WRITER, (last.seq, _ts(last.arrival_us)))


@dataclass(frozen=True, slots=True)
class StoredState:
    seq: int  # the last commit stored (-1: none yet)
    alarms: dict[str, AlarmRow]
    rules: dict[str, RuleRow]


async def load(conn: Conn) -> StoredState:
    """What the writer resumes from: its last commit, every alarm's state and the rules' state."""
    with translate_errors("load alarm state"):
        async with conn.cursor() as cur:
            await cur.execute("SELECT seq FROM alarm_writer WHERE id = 1")
            row = await cur.fetchone()
            seq = -1 if row is None else int(row[0])
            await cur.execute(
                """SELECT key, enterprise, county, hazard_source, unit, subject, kind, priority, status, condition,
                          acked, latching, since, shelved_until, by_whom, reason, value, "limit", raised_at,
                          acked_at, acked_by
                   FROM alarm_state"""
            )
            alarms = {}
            for r in await cur.fetchall():
                (key, enterprise, county, hs, unit, subject, kind, priority, status, condition, acked, latching,
                 since, shelved, by_whom, reason, value, limit, raised, acked_at, acked_by) = r  # fmt: skip
                alarms[key] = AlarmRow(
                    key, enterprise, county, hs, unit, subject, kind, priority, status, condition, acked, latching,
                    _us(since) or 0, _us(shelved), by_whom, reason, math.nan if value is None else value,
                    math.nan if limit is None else limit, _us(raised), _us(acked_at), acked_by,
                )  # fmt: skip
            await cur.execute("SELECT key, active, since FROM rule_state")
            rules = {r[0]: RuleRow(*r) for r in await cur.fetchall()}
        await conn.commit()
    return StoredState(seq, alarms, rules)


@dataclass(frozen=True, slots=True)
class PendingCommand:
    id: str
    alarm_key: str
    command: str
    actor: str
    role: str
    enterprise: str | None
    args: dict[str, Any]
    submitted_us: int


async def pending_commands(conn: Conn, limit: int = 100) -> list[PendingCommand]:
    """Commands not yet applied, oldest first."""
    with translate_errors("read alarm commands"):
        async with conn.cursor() as cur:
            await cur.execute(
                """SELECT id, alarm_key, command, actor, role, enterprise, args, submitted_at FROM alarm_command
                   WHERE status = 'pending' ORDER BY submitted_at, id LIMIT %s""",
                (limit,),
            )
            rows = await cur.fetchall()
        await conn.commit()
    return [PendingCommand(str(r[0]), r[1], r[2], r[3], r[4], r[5], r[6] or {}, _us(r[7]) or 0) for r in rows]
