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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from alarms.journal import AlarmRow, Commit, RuleRow
from storage.db import Conn, translate_errors

__all__ = ["PendingCommand", "StoredState", "load", "pending_commands", "write"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ts(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


def _us(ts: datetime | None) -> int | None:
    return None if ts is None else (ts - _EPOCH) // timedelta(microseconds=1)


def _num(v: float) -> float | None:
    return None if math.isnan(v) else v


_JOURNAL = """
INSERT INTO alarm_journal (seq, n, alarm_key, action, old_status, new_status, at, arrival, value, "limit",
                           actor, command_id, detail)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (seq, n) DO NOTHING
"""
_STATE = """
INSERT INTO alarm_state (key, enterprise, county, hazard_source, unit, subject, kind, priority, status,
                         condition, acked, latching, since, shelved_until, by_whom, reason, value, "limit",
                         raised_at, acked_at, acked_by, seq)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (key) DO UPDATE SET
    enterprise = excluded.enterprise, county = excluded.county, hazard_source = excluded.hazard_source,
    unit = excluded.unit, subject = excluded.subject, kind = excluded.kind, priority = excluded.priority,
    status = excluded.status, condition = excluded.condition, acked = excluded.acked,
    latching = excluded.latching, since = excluded.since, shelved_until = excluded.shelved_until,
    by_whom = excluded.by_whom, reason = excluded.reason, value = excluded.value, "limit" = excluded."limit",
    raised_at = excluded.raised_at, acked_at = excluded.acked_at, acked_by = excluded.acked_by,
    seq = excluded.seq
WHERE alarm_state.seq < excluded.seq
"""
_OUTBOX = """
INSERT INTO notification (seq, n, alarm_key, event, priority, labels, message_zh, message_en, created_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (seq, n) DO NOTHING
"""
_COMMAND = """
UPDATE alarm_command SET status = %s, result = %s, reason = %s, applied_at = %s, seq = %s
WHERE id = %s AND status = 'pending'
"""
_RULE = """
INSERT INTO rule_state (key, active, since, seq) VALUES (%s, %s, %s, %s)
ON CONFLICT (key) DO UPDATE SET active = excluded.active, since = excluded.since, seq = excluded.seq
WHERE rule_state.seq < excluded.seq
"""
_AUDIT = """
INSERT INTO audit_log (at, actor, action, target, detail, seq) VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (seq, target, action) WHERE seq IS NOT NULL DO NOTHING
"""
_WRITER = """
INSERT INTO alarm_writer (id, seq, updated_at) VALUES (1, %s, %s)
ON CONFLICT (id) DO UPDATE SET seq = greatest(alarm_writer.seq, excluded.seq), updated_at = excluded.updated_at
"""


async def write(conn: Conn, commits: Sequence[Commit]) -> None:
    """Store ``commits`` (in seq order) in one transaction."""
    if not commits:
        return
    journal, state, outbox, commands, rules, audit = [], [], [], [], [], []
    for c in commits:
        arrival = _ts(c.arrival_us)
        journal += [
            (c.seq, n, j.alarm_key, j.action, j.old_status, j.new_status, _ts(j.at_us), arrival, _num(j.value),
             _num(j.limit), j.actor, j.command_id, None if j.detail is None else json.dumps(j.detail, ensure_ascii=False))
            for n, j in enumerate(c.journal)
        ]  # fmt: skip
        state += [
            (a.key, a.enterprise, a.county, a.hazard_source, a.unit, a.subject, a.kind, a.priority, a.status,
             a.condition, a.acked, a.latching, _ts(a.since_us), _ts(a.shelved_until_us), a.by_whom, a.reason,
             _num(a.value), _num(a.limit), _ts(a.raised_at_us), _ts(a.acked_at_us), a.acked_by, c.seq)
            for a in c.alarms
        ]  # fmt: skip
        outbox += [
            (c.seq, o.n, o.alarm_key, o.event, o.priority, json.dumps(o.labels, ensure_ascii=False), o.message_zh,
             o.message_en, arrival)
            for o in c.outbox
        ]  # fmt: skip
        commands += [(o.status, o.result, o.reason, arrival, c.seq, o.id) for o in c.commands]
        rules += [(r.key, r.active, r.since_us, c.seq) for r in c.rules]
        audit += [
            (arrival, actor, action, target, json.dumps(detail, ensure_ascii=False), c.seq)
            for actor, action, target, detail in c.audit
        ]
    last = commits[-1]
    with translate_errors("store alarm commits"):
        async with conn.transaction(), conn.cursor() as cur:
            for sql, rows in (
                (_JOURNAL, journal), (_STATE, state), (_OUTBOX, outbox), (_COMMAND, commands),
                (_RULE, rules), (_AUDIT, audit),
            ):  # fmt: skip
                if rows:
                    await cur.executemany(sql, rows)
            await cur.execute(_WRITER, (last.seq, _ts(last.arrival_us)))


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
