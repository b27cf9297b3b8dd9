"""``hazardwatch alarms ...``: alarm commands for engineers and audits.

``alarms rationalization`` prints the master alarm table (hazardwatch.cli_alarm_table).

``alarms list`` reads alarm_state, ``alarms history KEY`` an alarm's journal; ``alarms
ack|reset|shelve|unshelve|comment|feedback|supervise|respond|remove|restore`` submit through
alarm_command exactly as the API does (alarms.commands) and wait for the engine (``hazardwatch
run``) to apply them. The database is ``--dsn``, else ``$DATABASE_URL``.

Exit codes follow hazardwatch.cli: 0 success (a command applied), 2 invalid configuration or
usage, 1 any other failure (a command rejected, the database unreachable); 3 a command still
pending when the wait ended (is the engine running?).
"""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import json
import math
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from alarms.commands import (
    CauseCategory,
    Command,
    CommandKind,
    CommandOutcome,
    CommandStatus,
    HistoryEntry,
    InvalidCommand,
    ListedAlarm,
    Role,
    alarm_history,
    list_alarms,
    outcome,
    submit,
)
from alarms.kpi import AlarmKpis, alarm_kpis, render
from alarms.model import Priority
from core.clock import to_datetime
from core.errors import DatabaseUnavailable, StorageError
from core.redact import redact
from hazardwatch import cli_deliveries
from hazardwatch.cli_alarm_table import rationalization
from hazardwatch.cli_common import parse_time
from storage.db import Conn, connect
from storage.migrate import require_current_schema

__all__ = ["alarms_app"]

alarms_app = typer.Typer(
    help="Alarms: the alarm list, operator commands, the master alarm table (rationalization).",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True)
T = TypeVar("T")
PENDING_EXIT = 3
alarms_app.command("rationalization")(rationalization)


# --- the alarm list and operator commands (alarms.commands) -----------------------------------

DSN_OPTION = typer.Option(None, "--dsn", help="PostgreSQL URL; default $DATABASE_URL.", show_default=False)
KEY_ARGUMENT = typer.Argument(..., metavar="KEY", help="The alarm's key, as `alarms list` shows it.")
AS_OPTION = typer.Option(
    None, "--as", help="Who acts, as journaled and audited (default: the OS user).", show_default=False
)
ROLE_OPTION = typer.Option(
    Role.ENGINEER, "--role", help="The actor's role; the engine checks what it may do."
)
ENTERPRISE_OPTION = typer.Option(
    None,
    "--enterprise",
    help="The actor's enterprise (its code): enterprise people act on their own enterprise's alarms only.",
    show_default=False,
)
WAIT_OPTION = typer.Option(
    5.0, "--wait", min=0, help="Seconds to wait for the engine to apply it (0: submit and do not wait)."
)


def _dsn(dsn: str | None) -> str:
    resolved = dsn or os.environ.get("DATABASE_URL")
    if not resolved:
        _say(err, "no database given: pass --dsn or set DATABASE_URL (e.g. postgresql://user@host/db)")
        raise typer.Exit(2)
    return resolved


def _run(dsn: str, job: Callable[[Conn], Awaitable[T]]) -> T:
    """Run ``job`` on one autocommit connection to a current schema; storage errors exit 1."""

    async def main() -> T:
        async with await connect(dsn, autocommit=True, application_name="hazardwatch-cli") as conn:
            await require_current_schema(conn)
            return await job(conn)

    try:
        return asyncio.run(main())
    except StorageError as exc:
        what = "cannot reach the database" if isinstance(exc, DatabaseUnavailable) else type(exc).__name__
        _say(err, redact(f"{what}: {exc}"), "red")
        raise typer.Exit(1) from None


def _say(console: Console, text: str, style: str | None = None) -> None:
    """One message as written: keys and reasons are not markup, and a script greps whole lines."""
    console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)


def _utc(at: datetime) -> str:
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


@alarms_app.command("list")
def list_cmd(
    active: bool = typer.Option(
        False,
        "--active",
        help="Only active alarms: awaiting acknowledgement, acknowledged, latched or shelved "
        "(not normal, suppressed by design or out of service).",
    ),
    enterprise: str | None = typer.Option(
        None, "--enterprise", help="Only this enterprise's alarms (its code)."
    ),
    hazard_source: str | None = typer.Option(
        None, "--hazard-source", help="Only this hazard source's alarms (its code)."
    ),
    priority: Priority | None = typer.Option(None, "--priority", help="Only alarms of this priority."),
    limit: int = typer.Option(200, "--limit", min=1, help="At most this many alarms."),
    as_json: bool = typer.Option(
        False, "--json", help="Print a JSON array (times in ISO 8601) instead of a table."
    ),
    dsn: str | None = DSN_OPTION,
) -> None:
    """Alarms as the engine stored them: those awaiting acknowledgement first, then by priority
    (critical first), then the oldest first."""

    async def job(conn: Conn) -> list[ListedAlarm]:
        return await list_alarms(
            conn,
            active_only=active,
            enterprise=enterprise,
            hazard_source=hazard_source,
            priority=priority,
            limit=limit,
        )

    alarms = _run(_dsn(dsn), job)
    if as_json:
        typer.echo(json.dumps([_json(a) for a in alarms], ensure_ascii=False, indent=2, allow_nan=False))
        return
    table = Table(show_edge=False)
    table.add_column("key", no_wrap=True)  # whole, to be copied into a command
    for col in ("priority", "status", "since (UTC)", "value / limit", "enterprise", "hazard source"):
        table.add_column(col)
    for a in alarms:
        cells = (a.key, a.priority, _status(a), _utc(a.since), _reading(a), a.enterprise, a.hazard_source)
        # bold: awaiting acknowledgement, what flashes on a console
        table.add_row(*map(Text, cells), style=None if a.acked else "bold")
    out.print(table)
    out.print(f"{len(alarms)} alarm(s)" + (f" (the first {limit})" if len(alarms) == limit else ""))


@alarms_app.command("history")
def history_cmd(
    key: str = KEY_ARGUMENT,
    limit: int = typer.Option(100, "--limit", min=1, help="The newest this many entries."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array instead of a table."),
    dsn: str | None = DSN_OPTION,
) -> None:
    """An alarm's journal, oldest first: every transition (who or what caused it, value and
    limit) and every note (comment, handling feedback, supervision and the response)."""

    async def job(conn: Conn) -> list[HistoryEntry]:
        return await alarm_history(conn, key, limit=limit)

    entries = _run(_dsn(dsn), job)
    if as_json:
        typer.echo(json.dumps([_json(e) for e in entries], ensure_ascii=False, indent=2, allow_nan=False))
        return
    table = Table(show_edge=False)
    for col in ("at (UTC)", "action", "status", "value / limit", "by", "detail"):
        table.add_column(col)
    for e in entries:
        status = e.new_status.value if e.old_status == e.new_status else f"{e.old_status} → {e.new_status}"
        detail = "; ".join(f"{k}: {v}" for k, v in (e.detail or {}).items())
        table.add_row(*map(Text, (_utc(e.at), e.action, status, _reading(e), e.actor, detail)))
    out.print(table)
    out.print(
        f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
        + (" (the newest)" if len(entries) == limit else "")
    )


def _status(a: ListedAlarm) -> str:
    text = a.status.value if a.shelved_until is None else f"{a.status} until {_utc(a.shelved_until)}"
    note = ": ".join(s for s in (a.by_whom, a.reason) if s)
    return f"{text} ({note})" if note else text


def _reading(a: ListedAlarm | HistoryEntry) -> str:
    return " / ".join("-" if v is None else f"{v:g}" for v in (a.value, a.limit))


def _json(a: ListedAlarm | HistoryEntry) -> dict[str, Any]:
    """JSON-safe: times ISO 8601, ids as text, ±inf (a BAD sample's value) as "inf" / "-inf"
    (JSON has no infinity; ``json.dumps`` would write ``Infinity``, which parsers refuse)."""
    return {k: _json_value(v) for k, v in dataclasses.asdict(a).items()}


def _json_value(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, UUID):
        return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else repr(v)
    return v


def _command(
    kind: CommandKind,
    key: str,
    args: dict[str, Any],
    actor: str | None,
    role: Role,
    enterprise: str | None,
    wait_s: float,
    dsn: str | None,
) -> None:
    """Submit one command and report its outcome as the exit code (see the module docstring)."""
    try:
        command = Command(
            alarm_key=key, kind=kind, actor=actor or _os_user(), role=role, enterprise=enterprise, args=args
        )
    except InvalidCommand as exc:
        _say(err, f"{kind}: {exc}", "red")
        raise typer.Exit(2) from None

    async def job(conn: Conn) -> CommandOutcome | None:
        await submit(conn, command)
        return await outcome(conn, command.id, timeout_s=wait_s) if wait_s > 0 else None

    done = _run(_dsn(dsn), job)
    if done is None:
        _say(out, f"{kind} {key}: submitted as command {command.id}; not waiting for the engine")
        raise typer.Exit(PENDING_EXIT)
    if done.status is CommandStatus.APPLIED:
        _say(out, f"{kind} {key}: applied; the alarm is now {done.result}")
    elif done.status is CommandStatus.REJECTED:
        _say(err, f"{kind} {key}: rejected: {done.reason}", "red")
        raise typer.Exit(1)
    else:
        _say(
            err,
            f"{kind} {key}: still pending after {wait_s:g} s (command {command.id}): the engine "
            "(`hazardwatch run`) may not be running; it applies pending commands when it starts",
            "yellow",
        )
        raise typer.Exit(PENDING_EXIT)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        _say(err, "cannot tell who you are: pass --as NAME")
        raise typer.Exit(2) from None


@alarms_app.command("ack")
def ack_cmd(
    key: str = KEY_ARGUMENT,
    actor: str | None = AS_OPTION,
    role: Role = ROLE_OPTION,
    enterprise: str | None = ENTERPRISE_OPTION,
    wait_s: float = WAIT_OPTION,
    dsn: str | None = DSN_OPTION,
) -> None:
    """Acknowledge an alarm."""
    _command(CommandKind.ACK, key, {}, actor, role, enterprise, wait_s, dsn)


@alarms_app.command("reset")
def reset_cmd(
    key: str = KEY_ARGUMENT,
    actor: str | None = AS_OPTION,
    role: Role = ROLE_OPTION,
    enterprise: str | None = ENTERPRISE_OPTION,
    wait_s: float = WAIT_OPTION,
    dsn: str | None = DSN_OPTION,
) -> None:
    """Reset a latched alarm whose condition has cleared (and acknowledge it)."""
    _command(CommandKind.RESET, key, {}, actor, role, enterprise, wait_s, dsn)


@alarms_app.command("shelve")
def shelve_cmd(
    key: str = KEY_ARGUMENT,
    minutes: float = typer.Option(
        ..., "--minutes", help="For how long; the engine refuses more than the priority allows."
    ),
    reason: str = typer.Option(..., "--reason", help="Why, as journaled and audited."),
    actor: str | None = AS_OPTION,
    role: Role = ROLE_OPTION,
    enterprise: str | None = ENTERPRISE_OPTION,
    wait_s: float = WAIT_OPTION,
    dsn: str | None = DSN_OPTION,
) -> None:
    """Shelve an alarm: hidden for a while, annunciated again when the time runs out if still active."""
    _command(
        CommandKind.SHELVE, key, {"minutes": minutes, "reason": reason}, actor, role, enterprise, wait_s, dsn
    )


@alarms_app.command("unshelve")
def unshelve_cmd(
    key: str = KEY_ARGUMENT,
    actor: str | None = AS_OPTION,
    role: Role = ROLE_OPTION,
    enterprise: str | None = ENTERPRISE_OPTION,
    wait_s: float = WAIT_OPTION,
    dsn: str | None = DSN_OPTION,
) -> None:
    """Unshelve an alarm before its time runs out."""
    _command(CommandKind.UNSHELVE, key, {}, actor, role, enterprise, wait_s, dsn)


@alarms_app.command("comment")
def comment_cmd(
    key: str = KEY_ARGUMENT,
    text: str = typer.Argument(..., metavar="TEXT", help="The comment (at most 2000 characters)."),
    actor: str | None = AS_OPTION,
    role: Role = ROLE_OPTION,
    enterprise: str | None = ENTERPRISE_OPTION,
    wait_s: float = WAIT_OPTION,
    dsn: str | None = DSN_OPTION,
) -> None:
    """Add a comment to an alarm's journal (its state does not change)."""
    _command(CommandKind.COMMENT, key, {"text": text}, actor, role, enterprise, wait_s, dsn)


_CAUSES = ", ".join(f"{c.value} ({c.zh})" for c in CauseCategory)


@alarms_app.command("feedback")
def feedback_cmd(
    key: str = KEY_ARGUMENT,
    cause: CauseCategory = typer.Option(
        ...,
        "--cause",
        help=f"What caused it: {_CAUSES}.",
    ),
    action: str = typer.Option(..., "--action", help="What was done about it (处置措施)."),
    handler: str = typer.Option(..., "--handler", help="Who handled it on site."),
    handled_at: str | None = typer.Option(
        None, "--handled-at", help="When it was handled, ISO 8601 with offset (default: not given)."
    ),
    actor: str | None = AS_OPTION,
    role: Role = ROLE_OPTION,
    enterprise: str | None = ENTERPRISE_OPTION,
    wait_s: float = WAIT_OPTION,
    dsn: str | None = DSN_OPTION,
) -> None:
    """Record how an alarm was handled (处置反馈): cause, action, handler and time; journaled,
    the alarm's state does not change."""
    args: dict[str, Any] = {"cause_category": cause.value, "action": action, "handler": handler}
    if handled_at is not None:
        args["handled_at"] = handled_at
    _command(CommandKind.FEEDBACK, key, args, actor, role, enterprise, wait_s, dsn)


@alarms_app.command("supervise")
def supervise_cmd(
    key: str = KEY_ARGUMENT,
    text: str = typer.Argument(..., metavar="TEXT", help="What the enterprise is asked to do."),
    due_at: str = typer.Option(
        ..., "--due", help="By when, ISO 8601 with offset (e.g. 2026-12-01T10:00+08:00)."
    ),
    actor: str | None = AS_OPTION,
    role: Role = typer.Option(
        Role.BUREAU_DUTY, "--role", help="The actor's role (supervision: bureau duty)."
    ),
    wait_s: float = WAIT_OPTION,
    dsn: str | None = DSN_OPTION,
) -> None:
    """Supervise an alarm (督办): the bureau asks the enterprise to act by a time; journaled."""
    _command(CommandKind.SUPERVISE, key, {"text": text, "due_at": due_at}, actor, role, None, wait_s, dsn)


@alarms_app.command("respond")
def respond_cmd(
    key: str = KEY_ARGUMENT,
    text: str = typer.Argument(..., metavar="TEXT", help="The enterprise's answer to the supervision."),
    actor: str | None = AS_OPTION,
    role: Role = ROLE_OPTION,
    enterprise: str | None = ENTERPRISE_OPTION,
    wait_s: float = WAIT_OPTION,
    dsn: str | None = DSN_OPTION,
) -> None:
    """Answer a supervision (督办回复); journaled."""
    _command(CommandKind.RESPOND, key, {"text": text}, actor, role, enterprise, wait_s, dsn)


@alarms_app.command("remove")
def remove_cmd(
    key: str = KEY_ARGUMENT,
    reason: str = typer.Option(..., "--reason", help="Why it is taken out of service."),
    actor: str | None = AS_OPTION,
    role: Role = ROLE_OPTION,
    enterprise: str | None = ENTERPRISE_OPTION,
    wait_s: float = WAIT_OPTION,
    dsn: str | None = DSN_OPTION,
) -> None:
    """Take an alarm out of service (it is not annunciated until restored)."""
    _command(CommandKind.REMOVE, key, {"reason": reason}, actor, role, enterprise, wait_s, dsn)


@alarms_app.command("restore")
def restore_cmd(
    key: str = KEY_ARGUMENT,
    actor: str | None = AS_OPTION,
    role: Role = ROLE_OPTION,
    enterprise: str | None = ENTERPRISE_OPTION,
    wait_s: float = WAIT_OPTION,
    dsn: str | None = DSN_OPTION,
) -> None:
    """Return an out-of-service alarm to service (annunciated again if its condition is active)."""
    _command(CommandKind.RESTORE, key, {}, actor, role, enterprise, wait_s, dsn)


@alarms_app.command("kpi")
def kpi_cmd(
    start: str | None = typer.Option(
        None, "--start", help="Period start, ISO 8601 with offset (default: 24 h ago)."
    ),
    end: str | None = typer.Option(None, "--end", help="Period end, ISO 8601 with offset (default: now)."),
    enterprise: str | None = typer.Option(None, "--enterprise", help="Only this enterprise (its code)."),
    hazard_source: str | None = typer.Option(
        None, "--hazard-source", help="Only this hazard source (its code)."
    ),
    unit: str | None = typer.Option(None, "--unit", help="Only this unit (operating position)."),
    dsn: str | None = DSN_OPTION,
) -> None:
    """EEMUA 191 / ISA-18.2 alarm KPIs over the journal: rates, floods, chattering and stale
    alarms, top contributors, priority mix, time to acknowledge, each against its target."""
    hi = datetime.now(UTC) if end is None else to_datetime(parse_time(end, "--end"))
    lo = hi - timedelta(days=1) if start is None else to_datetime(parse_time(start, "--start"))
    if lo > hi:
        _say(err, "--start is after --end")
        raise typer.Exit(2)

    async def job(conn: Conn) -> AlarmKpis:
        return await alarm_kpis(
            conn, start=lo, end=hi, enterprise=enterprise, hazard_source=hazard_source, unit=unit
        )

    _say(out, render(_run(_dsn(dsn), job)))


cli_deliveries.register(alarms_app, _run, _dsn, KEY_ARGUMENT, DSN_OPTION)
