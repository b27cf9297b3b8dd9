"""The dispatcher's SQL: outbox rows to plan, deliveries due, their state changes and evidence.

Every function takes the dispatcher's connection and commits what it writes (one transaction
each); psycopg errors leave as storage errors (storage.db.translate_errors).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from alarms.delivery_plan import Event, Planned, Told
from alarms.notify import DeliveryReport
from alarms.routing_model import Channel, TargetKind
from storage.db import Conn, translate_errors

__all__ = [
    "AlarmNow",
    "Due",
    "alarm_states",
    "awaiting_report",
    "claim",
    "due",
    "events",
    "fail_members",
    "finish",
    "group",
    "hold",
    "journal",
    "lanes",
    "next_due_us",
    "pending_events",
    "postpone",
    "save_plan",
    "set_state",
    "store_report",
    "summary_members",
    "take_over",
    "told_of",
]


def _ts(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1e6, UTC)


def _us(ts: datetime | None) -> int | None:
    return None if ts is None else int(ts.timestamp() * 1_000_000)


def _num(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) else v


async def pending_events(conn: Conn, limit: int) -> list[Event]:
    """Outbox rows not yet planned, in commit order, with their journal row's time and value."""
    with translate_errors("read the notification outbox"):
        async with conn.cursor() as cur:
            await cur.execute(
                """SELECT o.seq, o.n, o.alarm_key, o.event, o.priority, o.labels, o.message_zh, o.message_en,
                          coalesce(j.at, o.created_at), j.value, j."limit"
                   FROM notification o LEFT JOIN alarm_journal j ON j.seq = o.seq AND j.n = o.n
                   WHERE o.state = 'pending' ORDER BY o.seq, o.n LIMIT %s""",
                (limit,),
            )
            rows = await cur.fetchall()
        await conn.commit()
    return [
        Event(r[0], r[1], r[2], r[3], r[4], dict(r[5]), r[6], r[7], _us(r[8]) or 0, _num(r[9]), _num(r[10]))
        for r in rows
    ]


async def told_of(conn: Conn, alarm_keys: Iterable[str]) -> dict[str, list[Told]]:
    """Per alarm: everyone its latest raise (or reraise) reached, for telling them it resolved."""
    keys = list(set(alarm_keys))
    if not keys:
        return {}
    with translate_errors("read who was told"):
        async with conn.cursor() as cur:
            await cur.execute(
                """SELECT d.alarm_key, d.receiver, d.target, d.channel, d.person, d.recipient, d.group_interval_s,
                          d.due_at
                   FROM delivery d JOIN (
                       SELECT alarm_key, max(seq) AS seq FROM delivery
                       WHERE alarm_key = ANY(%s) AND event IN ('raised', 'reraised') GROUP BY alarm_key
                   ) last ON last.alarm_key = d.alarm_key AND last.seq = d.seq
                   WHERE d.state IN ('sent', 'grouped', 'sending', 'unconfirmed')
                      OR (d.step = 0 AND d.state IN ('planned', 'retry'))""",
                (keys,),
            )
            rows = await cur.fetchall()
        await conn.commit()
    out: dict[str, list[Told]] = {}
    for key, receiver, target, channel, person, recipient, interval, due_at in rows:
        out.setdefault(key, []).append(
            Told(
                receiver, TargetKind(target), Channel(channel), person, recipient, interval, _us(due_at) or 0
            )
        )
    return out


async def save_plan(conn: Conn, planned: Sequence[tuple[Event, Sequence[Planned]]], now_us: int) -> None:
    """The deliveries of these events and the events marked planned, in one transaction (a
    delivery already there, by its key, is kept as it is)."""
    rows = [
        (p.key, e.seq, e.n, e.alarm_key, e.event, e.priority, p.step, p.receiver, p.target.value,
         p.channel.value, p.person, p.recipient, p.group_interval_s, _ts(p.due_us), _ts(now_us))
        for e, ps in planned for p in ps
    ]  # fmt: skip
    with translate_errors("store the delivery plan"):
        async with conn.cursor() as cur:
            if rows:
                await cur.executemany(
                    """INSERT INTO delivery (key, seq, n, alarm_key, event, priority, step, receiver, target,
                                             channel, person, recipient, group_interval_s, due_at, state,
                                             updated_at)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'planned', %s)
                       ON CONFLICT (key) DO NOTHING""",
                    rows,
                )
            await cur.execute(
                """UPDATE notification SET state = 'planned'
                   WHERE (seq, n) IN (SELECT * FROM unnest(%s::bigint[], %s::int[]))""",
                ([e.seq for e, _ in planned], [e.n for e, _ in planned]),
            )
        await conn.commit()


@dataclass(frozen=True, slots=True)
class Due:
    id: int
    key: str
    seq: int | None
    n: int | None
    alarm_key: str | None
    event: str
    priority: str
    step: int
    receiver: str
    channel: Channel
    recipient: str
    group_interval_s: int
    due_us: int
    state: str
    attempts: int
    sent_at_us: int | None  # the interrupted attempt's start, for 'sending'
    event_at_us: int | None  # when the announced event happened (None: a summary)
    reason: str | None = None  # why it is held, for a delivery held back (inhibited)
    claimed_by: str | None = None  # the dispatcher run that marked it sending


async def due(
    conn: Conn, now_us: int, limit: int, run_id: str, held: Sequence[tuple[Channel, str]] = ()
) -> list[Due]:
    """Deliveries whose time has come, oldest first: planned, retrying, or left sending by another
    dispatcher run (a crash); none of the ``held`` lanes (channel, recipient)."""
    with translate_errors("read due deliveries"):
        async with conn.cursor() as cur:
            await cur.execute(
                """SELECT d.id, d.key, d.seq, d.n, d.alarm_key, d.event, d.priority, d.step, d.receiver,
                          d.channel, d.recipient, d.group_interval_s, d.due_at, d.state, d.attempts,
                          (SELECT started_at FROM delivery_attempt a WHERE a.delivery_id = d.id
                           ORDER BY attempt DESC LIMIT 1),
                          (SELECT at FROM alarm_journal j WHERE j.seq = d.seq AND j.n = d.n),
                          d.reason, d.claimed_by
                   FROM delivery d
                   WHERE d.due_at <= %s
                     AND (d.state IN ('planned', 'retry')
                          OR (d.state = 'sending' AND d.claimed_by IS DISTINCT FROM %s))
                     AND (d.channel, d.recipient) NOT IN (SELECT * FROM unnest(%s::text[], %s::text[]))
                   ORDER BY d.due_at, d.id LIMIT %s""",
                (_ts(now_us), run_id, [c.value for c, _ in held], [r for _, r in held], limit),
            )
            rows = await cur.fetchall()
        await conn.commit()
    return [
        Due(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], Channel(r[9]), r[10], r[11],
            _us(r[12]) or 0, r[13], r[14], _us(r[15]), _us(r[16]), r[17], r[18])
        for r in rows
    ]  # fmt: skip


async def next_due_us(conn: Conn, now_us: int, run_id: str) -> int | None:
    """When the next delivery not yet due becomes due (None: none)."""
    with translate_errors("read the next due delivery"):
        async with conn.cursor() as cur:
            await cur.execute(
                """SELECT min(due_at) FROM delivery WHERE due_at > %s
                   AND (state IN ('planned', 'retry') OR (state = 'sending' AND claimed_by IS DISTINCT FROM %s))""",
                (_ts(now_us), run_id),
            )
            row = await cur.fetchone()
        await conn.commit()
    return _us(row[0]) if row else None


@dataclass(frozen=True, slots=True)
class AlarmNow:
    status: str
    condition: bool
    acked: bool
    acked_by: str | None
    raised_at_us: int | None
    kind: str
    subject: str


async def alarm_states(conn: Conn, keys: Iterable[str]) -> dict[str, AlarmNow]:
    """The alarms' current state, and that of their subjects' other alarms (for inhibition)."""
    keys = list(set(keys))
    if not keys:
        return {}
    with translate_errors("read alarm state"):
        async with conn.cursor() as cur:
            await cur.execute(
                """SELECT key, status, condition, acked, acked_by, raised_at, kind, subject FROM alarm_state
                   WHERE subject IN (SELECT subject FROM alarm_state WHERE key = ANY(%s))""",
                (keys,),
            )
            rows = await cur.fetchall()
        await conn.commit()
    return {r[0]: AlarmNow(r[1], r[2], r[3], r[4], _us(r[5]), r[6], r[7]) for r in rows}


async def lanes(conn: Conn, since_us: int) -> dict[tuple[Channel, str], int]:
    """When each (channel, recipient) was last sent to, since ``since_us`` (grouping resumes from it)."""
    with translate_errors("read the last sends"):
        async with conn.cursor() as cur:
            await cur.execute(
                """SELECT channel, recipient, max(sent_at) FROM delivery
                   WHERE state = 'sent' AND sent_at >= %s GROUP BY channel, recipient""",
                (_ts(since_us),),
            )
            rows = await cur.fetchall()
        await conn.commit()
    return {(Channel(r[0]), r[1]): _us(r[2]) or 0 for r in rows}


async def set_state(
    conn: Conn,
    changes: Sequence[tuple[int, str, str | None]],
    now_us: int,
    notes: Sequence[tuple[str | None, int | None, int | None, int | None, str, dict[str, Any]]] = (),
) -> None:
    """(id, new state, reason) for each delivery, and journal lines, in one transaction."""
    with translate_errors("update deliveries"):
        async with conn.cursor() as cur:
            if changes:
                await cur.executemany(
                    "UPDATE delivery SET state = %s, reason = %s, updated_at = %s WHERE id = %s",
                    [(s, r, _ts(now_us), i) for i, s, r in changes],
                )
            await _journal(cur, notes, now_us)
        await conn.commit()


async def _journal(cur: Any, notes: Sequence[tuple[Any, ...]], now_us: int) -> None:
    if notes:
        await cur.executemany(
            """INSERT INTO delivery_journal (at, alarm_key, seq, n, step, what, detail)
               VALUES (%s, %s, %s, %s, %s, %s, %s)""",
            [
                (_ts(now_us), k, s, n, st, what, json.dumps(d, ensure_ascii=False))
                for k, s, n, st, what, d in notes
            ],
        )


async def journal(
    conn: Conn,
    notes: Sequence[tuple[str | None, int | None, int | None, int | None, str, dict[str, Any]]],
    now_us: int,
) -> None:
    with translate_errors("journal deliveries"):
        async with conn.cursor() as cur:
            await _journal(cur, notes, now_us)
        await conn.commit()


async def group(conn: Conn, members: Sequence[int], summary: Due, now_us: int) -> int:
    """A summary delivery carrying ``members`` (marked grouped), in one transaction; its id. Its key
    derives from the members, so a crash before the commit plans the same summary again."""
    with translate_errors("store a summary"):
        async with conn.cursor() as cur:
            await cur.execute(
                """INSERT INTO delivery (key, event, priority, step, receiver, target, channel, recipient,
                                         group_interval_s, due_at, state, updated_at)
                   VALUES (%s, 'summary', %s, 0, %s, 'summary', %s, %s, %s, %s, 'planned', %s)
                   ON CONFLICT (key) DO UPDATE SET updated_at = EXCLUDED.updated_at RETURNING id""",
                (summary.key, summary.priority, summary.receiver, summary.channel.value, summary.recipient,
                 summary.group_interval_s, _ts(summary.due_us), _ts(now_us)),
            )  # fmt: skip
            row = await cur.fetchone()
            assert row is not None
            await cur.execute(
                """UPDATE delivery SET state = 'grouped', summary_id = %s, updated_at = %s
                   WHERE id = ANY(%s) AND state IN ('planned', 'retry')""",
                (row[0], _ts(now_us), list(members)),
            )
        await conn.commit()
    return int(row[0])


async def claim(conn: Conn, ids: Sequence[int], now_us: int, run_id: str) -> dict[int, int]:
    """Mark deliveries 'sending' and open an attempt each, committed before any provider is
    called; the attempt number of each (only those still open: a concurrent change wins)."""
    with translate_errors("claim deliveries"):
        async with conn.cursor() as cur:
            await cur.execute(
                """UPDATE delivery SET state = 'sending', attempts = attempts + 1, updated_at = %s, claimed_by = %s
                   WHERE id = ANY(%s) AND state IN ('planned', 'retry') RETURNING id, attempts""",
                (_ts(now_us), run_id, list(ids)),
            )
            got = {int(r[0]): int(r[1]) for r in await cur.fetchall()}
            if got:
                await cur.executemany(
                    "INSERT INTO delivery_attempt (delivery_id, attempt, started_at) VALUES (%s, %s, %s)",
                    [(i, a, _ts(now_us)) for i, a in got.items()],
                )
        await conn.commit()
    return got


async def finish(
    conn: Conn,
    delivery_id: int,
    attempt: int,
    *,
    state: str,
    outcome: str,
    now_us: int,
    code: str | None = None,
    detail: str | None = None,
    provider: str | None = None,
    provider_message_id: str | None = None,
    request_id: str | None = None,
    due_us: int | None = None,
    note: tuple[str | None, int | None, int | None, int | None, str, dict[str, Any]] | None = None,
) -> None:
    """One attempt's outcome and the delivery's new state (sent, retry at ``due_us``, failed,
    unconfirmed), in one transaction."""
    with translate_errors("record a delivery attempt"):
        async with conn.cursor() as cur:
            await cur.execute(
                """UPDATE delivery_attempt SET finished_at = %s, outcome = %s, code = %s, detail = %s,
                          provider_message_id = %s
                   WHERE delivery_id = %s AND attempt = %s""",
                (_ts(now_us), outcome, code, detail, provider_message_id, delivery_id, attempt),
            )
            await cur.execute(
                """UPDATE delivery SET state = %s, updated_at = %s, reason = %s,
                          provider = coalesce(%s, provider),
                          provider_message_id = coalesce(%s, provider_message_id),
                          request_id = coalesce(%s, request_id),
                          sent_at = CASE WHEN %s = 'sent' THEN %s ELSE sent_at END,
                          due_at = coalesce(%s, due_at)
                   WHERE id = %s""",
                (state, _ts(now_us), None if state == "sent" else detail, provider, provider_message_id,
                 request_id, state, _ts(now_us), None if due_us is None else _ts(due_us), delivery_id),
            )  # fmt: skip
            await _journal(cur, [note] if note else [], now_us)
        await conn.commit()


async def awaiting_report(conn: Conn, since_us: int, limit: int) -> list[tuple[Due, str, str]]:
    """Sent deliveries (since ``since_us``) whose receipt is not final yet: (delivery, provider,
    provider message id), oldest first."""
    with translate_errors("read deliveries awaiting a receipt"):
        async with conn.cursor() as cur:
            await cur.execute(
                """SELECT id, key, seq, n, alarm_key, event, priority, step, receiver, channel, recipient,
                          group_interval_s, due_at, state, attempts, sent_at, provider, provider_message_id
                   FROM delivery
                   WHERE state = 'sent' AND sent_at >= %s AND coalesce(report_status, 'PENDING') = 'PENDING'
                     AND channel IN ('sms', 'voice')
                   ORDER BY sent_at LIMIT %s""",
                (_ts(since_us), limit),
            )
            rows = await cur.fetchall()
        await conn.commit()
    return [
        (Due(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], Channel(r[9]), r[10], r[11],
             _us(r[12]) or 0, r[13], r[14], _us(r[15]), None), r[16] or "", r[17] or "")
        for r in rows
    ]  # fmt: skip


async def store_report(conn: Conn, delivery_id: int, report: DeliveryReport, now_us: int) -> None:
    """A delivery receipt as evidence on its delivery."""
    with translate_errors("store a delivery receipt"):
        async with conn.cursor() as cur:
            await cur.execute(
                """UPDATE delivery SET report_status = %s, report_code = %s, report_at = %s, updated_at = %s
                   WHERE id = %s""",
                (report.status, report.code or None,
                 None if report.at_us is None else _ts(report.at_us), _ts(now_us), delivery_id),
            )  # fmt: skip
        await conn.commit()


async def take_over(conn: Conn, delivery_id: int, owner: str | None, run_id: str, now_us: int) -> bool:
    """Make this run the owner of a delivery another run left sending; False when it is no longer
    that run's (finished meanwhile, or taken by a third)."""
    with translate_errors("take over a delivery"):
        async with conn.cursor() as cur:
            await cur.execute(
                """UPDATE delivery SET claimed_by = %s, updated_at = %s
                   WHERE id = %s AND state = 'sending' AND claimed_by IS NOT DISTINCT FROM %s RETURNING id""",
                (run_id, _ts(now_us), delivery_id, owner),
            )
            got = await cur.fetchone()
        await conn.commit()
    return got is not None


async def hold(
    conn: Conn, held: Sequence[tuple[int, int, str]], now_us: int, notes: Sequence[tuple[Any, ...]]
) -> None:
    """(id, due again, reason) for deliveries held back (they stay planned), and journal lines."""
    with translate_errors("hold deliveries"):
        async with conn.cursor() as cur:
            await cur.executemany(
                "UPDATE delivery SET due_at = %s, reason = %s, updated_at = %s WHERE id = %s AND state = 'planned'",
                [(_ts(due), reason, _ts(now_us), i) for i, due, reason in held],
            )
            await _journal(cur, notes, now_us)
        await conn.commit()


async def fail_members(conn: Conn, summary_id: int, reason: str, now_us: int) -> None:
    """The deliveries a failed summary carried failed with it (they were never told)."""
    with translate_errors("fail a summary's members"):
        async with conn.cursor() as cur:
            await cur.execute(
                """UPDATE delivery SET state = 'failed', reason = %s, updated_at = %s
                   WHERE summary_id = %s AND state = 'grouped'""",
                (reason, _ts(now_us), summary_id),
            )
        await conn.commit()


async def postpone(conn: Conn, delivery_id: int, due_us: int, now_us: int) -> None:
    """Ask about an interrupted delivery again at ``due_us`` (it stays 'sending')."""
    with translate_errors("postpone a delivery"):
        async with conn.cursor() as cur:
            await cur.execute(
                "UPDATE delivery SET due_at = %s, updated_at = %s WHERE id = %s",
                (_ts(due_us), _ts(now_us), delivery_id),
            )
        await conn.commit()


async def summary_members(conn: Conn, summary_id: int) -> list[tuple[int, int]]:
    """(seq, n) of the events a summary carries."""
    with translate_errors("read a summary's members"):
        async with conn.cursor() as cur:
            await cur.execute(
                "SELECT seq, n FROM delivery WHERE summary_id = %s AND seq IS NOT NULL ORDER BY seq, n",
                (summary_id,),
            )
            rows = await cur.fetchall()
        await conn.commit()
    return [(int(r[0]), int(r[1])) for r in rows]


async def events(conn: Conn, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], Event]:
    """The outbox rows (seq, n) as Events."""
    pairs = list(set(keys))
    if not pairs:
        return {}
    with translate_errors("read notification events"):
        async with conn.cursor() as cur:
            await cur.execute(
                """SELECT o.seq, o.n, o.alarm_key, o.event, o.priority, o.labels, o.message_zh, o.message_en,
                          coalesce(j.at, o.created_at), j.value, j."limit"
                   FROM notification o LEFT JOIN alarm_journal j ON j.seq = o.seq AND j.n = o.n
                   WHERE (o.seq, o.n) IN (SELECT * FROM unnest(%s::bigint[], %s::int[]))""",
                ([p[0] for p in pairs], [p[1] for p in pairs]),
            )
            rows = await cur.fetchall()
        await conn.commit()
    return {
        (r[0], r[1]): Event(r[0], r[1], r[2], r[3], r[4], dict(r[5]), r[6], r[7], _us(r[8]) or 0,
                            _num(r[9]), _num(r[10]))
        for r in rows
    }  # fmt: skip
