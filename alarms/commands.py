"""Operator commands as the API and the CLI submit them, and the alarm list they act on.

A ``Command`` checks only its shape (args each kind needs, their types and bounds) and refuses
to exist otherwise, so nothing malformed reaches ``alarm_command``. Whether it may be done (the
alarm exists and is the actor's enterprise's, the role may, the state allows it, shelving within
the priority's maximum) is decided by the one writer, the engine (``hazardwatch run``,
alarms.manager), which applies pending rows in submitted order and stores the outcome on the
row. ``submit`` is idempotent by command id; ``outcome`` waits for the engine by reading the row,
so without a running engine every command stays pending.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple
from uuid import UUID, uuid4

from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from alarms.model import Priority
from alarms.state import ANNUNCIATED, Status
from core.errors import HazardWatchError
from storage.db import Conn, autocommit, translate_errors

__all__ = [
    "ACTIVE",
    "MAX_SHELVE_MIN",
    "MAX_TEXT",
    "CauseCategory",
    "Command",
    "CommandKind",
    "CommandOutcome",
    "CommandStatus",
    "HistoryEntry",
    "InvalidCommand",
    "ListedAlarm",
    "Role",
    "UnknownCommand",
    "alarm_history",
    "list_alarms",
    "outcome",
    "submit",
]

MAX_SHELVE_MIN = 7 * 24 * 60  # the engine's maximum per priority (settings.alarms) is lower
MAX_TEXT = 2000  # characters of any free text: comments, reasons, actions
# ``list_alarms(active_only=True)``: what an operator must see or will see again by itself.
# Suppressed (by design) and out-of-service alarms are hidden until the plant or a person
# brings them back, so they are not active; a shelved one returns when its time runs out.
ACTIVE = ANNUNCIATED | {Status.SHELVED}


class CommandKind(StrEnum):
    ACK = "ack"
    RESET = "reset"
    SHELVE = "shelve"
    UNSHELVE = "unshelve"
    COMMENT = "comment"
    FEEDBACK = "feedback"  # 处置反馈: what caused it, what was done, by whom, when
    SUPERVISE = "supervise"  # 督办: a bureau user asks the enterprise to act by a time
    RESPOND = "respond"  # the enterprise's answer to a supervision
    REMOVE = "remove"  # out of service, with the reason
    RESTORE = "restore"


class Role(StrEnum):
    """Who acts (issue 13); what each may do is the engine's (alarms.manager)."""

    BUREAU_DUTY = "bureau_duty"
    ENTERPRISE_OPERATOR = "enterprise_operator"
    ENTERPRISE_ADMIN = "enterprise_admin"
    ENGINEER = "engineer"
    APPROVER = "approver"
    ADMIN = "admin"


class CauseCategory(StrEnum):
    """The cause of an alarm in handling feedback; ``zh`` is how the console names it."""

    PROCESS_UPSET = "process_upset"
    INSTRUMENT_FAULT = "instrument_fault"
    FALSE_ALARM = "false_alarm"
    MAINTENANCE = "maintenance"
    LEAK = "leak"
    OTHER = "other"

    @property
    def zh(self) -> str:
        return _CAUSE_ZH[self]


_CAUSE_ZH = {
    CauseCategory.PROCESS_UPSET: "工艺波动",
    CauseCategory.INSTRUMENT_FAULT: "仪表故障",
    CauseCategory.FALSE_ALARM: "误报",
    CauseCategory.MAINTENANCE: "检维修",
    CauseCategory.LEAK: "泄漏",
    CauseCategory.OTHER: "其他",
}


class CommandStatus(StrEnum):
    PENDING = "pending"
    APPLIED = "applied"
    REJECTED = "rejected"


class InvalidCommand(HazardWatchError, ValueError):
    """A command of the wrong shape; ``field`` names what is wrong (``args.minutes``, ``role``)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class UnknownCommand(HazardWatchError, LookupError):
    """No command with this id was submitted."""


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")  # category Cs: half a character, not encodable as UTF-8


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidCommand(name, f"must be non-empty text, got {value!r}")
    text = value.strip()
    bad = _CONTROL.search(text)
    if bad is not None:  # NUL cannot be stored; the others garble the journal, SMS and CSV
        raise InvalidCommand(name, f"must not contain control character U+{ord(bad.group()):04X}")
    odd = _SURROGATE.search(text)
    if odd is not None:  # from a "\\ud800" JSON escape: no database, SMS or log can encode it
        raise InvalidCommand(name, f"must be valid Unicode, not lone surrogate U+{ord(odd.group()):04X}")
    if len(text) > MAX_TEXT:
        raise InvalidCommand(name, f"must be at most {MAX_TEXT} characters, got {len(text)}")
    return text


def _minutes(name: str, value: Any) -> float:
    # bool is an int to Python but never a duration; JSON has no NaN, so refuse it before the insert
    # (a huge int cannot become a float: compare it exactly as an int, never through isfinite)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidCommand(name, f"must be a finite number of minutes, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidCommand(name, f"must be a finite number of minutes, got {value!r}")
    if not 0 < value <= MAX_SHELVE_MIN:
        shown = value if abs(value) < 10**20 else "a number of more than 20 digits"
        raise InvalidCommand(name, f"must be > 0 and at most {MAX_SHELVE_MIN} (7 days), got {shown}")
    return value


def _time(name: str, value: Any) -> str:
    """A time with its zone (datetime, or ISO 8601 text), stored as UTC ISO 8601 text."""
    try:
        at = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise InvalidCommand(name, f"must be an ISO 8601 time, got {value!r}") from None
    if at.tzinfo is None:
        raise InvalidCommand(name, f"must have a time zone (e.g. +08:00), got {value!r}")
    try:
        return at.astimezone(UTC).isoformat()
    except OverflowError:  # 0001-01-01T00:00+05:00 or 9999-12-31T23:00-05:00: no such UTC time
        raise InvalidCommand(
            name, f"must be a time between the years 1 and 9999 in UTC, got {value!r}"
        ) from None


def _cause(name: str, value: Any) -> str:
    try:
        return CauseCategory(value).value
    except ValueError:
        known = ", ".join(f"{c.value} ({c.zh})" for c in CauseCategory)
        raise InvalidCommand(name, f"unknown cause category {value!r} (known: {known})") from None


class _Arg(NamedTuple):
    check: Callable[[str, Any], Any]  # the value as stored, or InvalidCommand
    required: bool = True


_COMMENT = {"comment": _Arg(_text, required=False)}
# the args of each kind, by the names alarms.manager reads
_ARGS: Mapping[CommandKind, Mapping[str, _Arg]] = {
    CommandKind.ACK: _COMMENT,
    CommandKind.RESET: _COMMENT,
    CommandKind.SHELVE: {"minutes": _Arg(_minutes), "reason": _Arg(_text)},
    CommandKind.UNSHELVE: {},
    CommandKind.COMMENT: {"text": _Arg(_text)},
    CommandKind.FEEDBACK: {
        "cause_category": _Arg(_cause),
        "action": _Arg(_text),
        "handler": _Arg(_text),
        "handled_at": _Arg(_time, required=False),
    },
    CommandKind.SUPERVISE: {"text": _Arg(_text), "due_at": _Arg(_time)},
    CommandKind.RESPOND: {"text": _Arg(_text)},
    CommandKind.REMOVE: {"reason": _Arg(_text)},
    CommandKind.RESTORE: {},
}


def _member(name: str, enum: type[StrEnum], value: Any) -> Any:
    try:
        return enum(value)
    except ValueError:
        raise InvalidCommand(name, f"unknown {name} {value!r} (known: {', '.join(enum)})") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """One operator command; building it checks its shape (``InvalidCommand`` naming the field).
    ``kind`` and ``role`` may be given as their text; ``args`` are kept as checked (text
    stripped, times as UTC ISO 8601) and read-only."""

    alarm_key: str
    kind: CommandKind
    actor: str
    role: Role
    enterprise: str | None = None  # the actor's enterprise; None for bureau users and engineers
    args: Mapping[str, Any] = field(default_factory=dict)
    id: UUID = field(default_factory=uuid4)  # the API's idempotency key

    def __post_init__(self) -> None:
        for name in ("alarm_key", "actor"):
            _text(name, getattr(self, name))
        if self.enterprise is not None:
            _text("enterprise", self.enterprise)
        kind = _member("kind", CommandKind, self.kind)
        spec = _ARGS[kind]
        unknown = sorted(set(self.args) - set(spec))
        if unknown:
            allowed = ", ".join(spec) or "none"
            raise InvalidCommand(f"args.{unknown[0]}", f"{kind} takes no such argument (allowed: {allowed})")
        args: dict[str, Any] = {}
        for name, arg in spec.items():
            if name in self.args:
                args[name] = arg.check(f"args.{name}", self.args[name])
            elif arg.required:
                raise InvalidCommand(f"args.{name}", f"{kind} needs it")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "role", _member("role", Role, self.role))
        object.__setattr__(self, "args", MappingProxyType(args))


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """A command as the engine left it; PENDING: not applied yet (or the engine is not running)."""

    id: UUID
    status: CommandStatus
    result: Status | None  # the alarm's status once applied
    reason: str | None  # why it was rejected
    applied_at: datetime | None


@dataclass(frozen=True, slots=True)
class ListedAlarm:
    """A row of alarm_state, as the alarm list shows it."""

    key: str
    enterprise: str
    county: str
    hazard_source: str
    unit: str | None
    subject: str
    kind: str
    priority: Priority
    status: Status
    acked: bool
    latching: bool
    since: datetime
    shelved_until: datetime | None
    by_whom: str | None
    reason: str | None
    value: float | None  # at the last condition edge
    limit: float | None
    raised_at: datetime | None
    acked_at: datetime | None
    acked_by: str | None


async def submit(conn: Conn, command: Command) -> UUID:
    """Insert ``command`` as pending (its trigger NOTIFYs the engine on commit) and return its id.

    Submitting an id again is a no-op, so a client may retry after a lost reply. Runs in a
    transaction of its own, or a savepoint of the caller's (then the caller's commit sends it).
    """
    with translate_errors("submit alarm command"):
        async with conn.transaction():
            await conn.execute(
                """INSERT INTO alarm_command (id, alarm_key, command, actor, role, enterprise, args)
                   VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING""",
                (
                    command.id,
                    command.alarm_key,
                    command.kind.value,
                    command.actor,
                    command.role.value,
                    command.enterprise,
                    Jsonb(dict(command.args)),
                ),
            )
    return command.id


async def outcome(conn: Conn, id: UUID, *, timeout_s: float, poll_s: float = 0.1) -> CommandOutcome:
    """The command's outcome once the engine settled it, or PENDING after ``timeout_s`` (0: read
    once). The engine only NOTIFYs new commands, not outcomes, so this reads the row every
    ``poll_s``, in autocommit (``conn`` must not be inside a transaction). UnknownCommand when
    ``id`` was never submitted."""
    if not (math.isfinite(timeout_s) and timeout_s >= 0):
        raise ValueError(f"timeout_s must be >= 0, got {timeout_s!r}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with autocommit(conn):
        while True:
            with translate_errors("read alarm command"):
                cur = await conn.execute(
                    "SELECT status, result, reason, applied_at FROM alarm_command WHERE id = %s", (id,)
                )
                row = await cur.fetchone()
            if row is None:
                raise UnknownCommand(f"no alarm command {id}")
            status = CommandStatus(row[0])
            left = deadline - loop.time()
            if status is not CommandStatus.PENDING or left <= 0:
                return CommandOutcome(id, status, None if row[1] is None else Status(row[1]), row[2], row[3])
            await asyncio.sleep(min(poll_s, left))


_PRIORITY_ORDER = [p.value for p in Priority]  # critical first


async def list_alarms(
    conn: Conn,
    *,
    active_only: bool,
    enterprise: str | None = None,
    hazard_source: str | None = None,
    priority: Priority | None = None,
    limit: int = 200,
) -> list[ListedAlarm]:
    """Alarms from alarm_state (``active_only``: the ``ACTIVE`` statuses), those awaiting
    acknowledgement first (flashing on a console), then by priority, then oldest ``since``."""
    where: list[sql.Composable] = [sql.SQL("true")]
    params: list[Any] = []
    if active_only:
        where.append(sql.SQL("status = ANY(%s)"))
        params.append(sorted(s.value for s in ACTIVE))
    for column, value in (
        ("enterprise", enterprise),
        ("hazard_source", hazard_source),
        ("priority", priority),
    ):
        if value is not None:
            where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(str(value))
    query = sql.SQL(
        """SELECT key, enterprise, county, hazard_source, unit, subject, kind, priority, status, acked,
                  latching, since, shelved_until, by_whom, reason, value, "limit", raised_at, acked_at,
                  acked_by
           FROM alarm_state WHERE {}
           ORDER BY acked, array_position(%s::text[], priority), since, key LIMIT %s"""
    ).format(sql.SQL(" AND ").join(where))
    with translate_errors("list alarms"):
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, [*params, _PRIORITY_ORDER, limit])
            rows = await cur.fetchall()
    return [
        ListedAlarm(**{**r, "priority": Priority(r["priority"]), "status": Status(r["status"])}) for r in rows
    ]


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """A row of alarm_journal: a transition, or a note (comment, feedback, supervision, response)."""

    seq: int
    n: int
    at: datetime  # when it happened (a condition edge: its source time)
    action: str  # alarms.state.Action value, or COMMENT / FEEDBACK / SUPERVISE / RESPOND
    old_status: Status
    new_status: Status
    value: float | None
    limit: float | None
    actor: str
    command_id: UUID | None
    detail: dict[str, Any] | None  # a note's arguments; why a SIF-disabled alarm was raised


async def alarm_history(
    conn: Conn, key: str, *, enterprise: str | None = None, limit: int = 100
) -> list[HistoryEntry]:
    """The newest ``limit`` journal rows of alarm ``key``, oldest first. ``enterprise``: only
    if the alarm is that enterprise's (another enterprise's alarm reads as having no history,
    as an unknown one does)."""
    query = """
        SELECT j.seq, j.n, j.at, j.action, j.old_status, j.new_status, j.value, j."limit", j.actor,
               j.command_id, j.detail
        FROM alarm_journal j
        WHERE j.alarm_key = %s
          AND (%s::text IS NULL OR EXISTS (
                SELECT 1 FROM alarm_state s WHERE s.key = j.alarm_key AND s.enterprise = %s))
        ORDER BY j.seq DESC, j.n DESC LIMIT %s"""
    with translate_errors("read alarm history"):
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, (key, enterprise, enterprise, limit))
            rows = await cur.fetchall()
    return [
        HistoryEntry(**{**r, "old_status": Status(r["old_status"]), "new_status": Status(r["new_status"])})
        for r in reversed(rows)
    ]
