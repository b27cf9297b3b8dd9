"""AlarmManager: condition edges, operator commands and timers into alarm commits.

The manager holds every alarm's current state (``alarms``: key -> AlarmRow, the alarm_state
row) and turns each input into one ``Commit`` (alarms/journal.py): it runs ``transition``
(alarms/state.py) per alarm, and writes journal rows for the events, the alarms' new rows,
outbox rows for what people must be told (raised, re-raised, resolved), the outcome of a
command and the rule engine's state of the rules whose condition changed. It does no I/O:
``alarms.service`` logs and stores the commits, in ``seq`` order.

Commands are checked here, in the one writer, against the alarm as it stands: an unknown alarm
(or one of another enterprise: the actor is not told it exists), a role that may not do it,
a shelve past the priority's maximum (settings.alarms), and what ``transition`` rejects. The
comment-like commands (comment, feedback, supervise, respond) change no state: they are
journaled (action COMMENT, FEEDBACK, SUPERVISE, RESPOND) and audited like the others.

An interlock whose safety function can no longer act (``SifChange``, from the composition root
comparing the engine's ``sif_state`` with what it reported before) raises or returns its "SIF
disabled" alarm (``Catalog.sif_disabled``); the journal rows and the raise's messages say why.

A unit whose suppression-by-design condition began or ended (``SuppressionChange``, from the
composition root evaluating each unit's ``suppress_when``) suppresses or unsuppresses every alarm
``Catalog.suppressible`` gives for it, never-raised ones included, in one commit with one audit
row per unit; an alarm already so is skipped, so a restart's first report journals nothing
again, and so is one announced and not yet acknowledged (UNACK, RTN_UNACK: the operator must
still see it). Unsuppressing re-annunciates (RERAISED) the alarms whose condition came on meanwhile. A
restored alarm of a unit still suppressed is suppressed again in the restore's commit, unannounced;
an alarm stored suppressed that no unit hides any more (the config changed) is released at start.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from alarms.changes import SifChange, SuppressionChange
from alarms.journal import AlarmRow, CommandOutcome, Commit, JournalRow, OutboxRow, RuleRow
from alarms.model import AlarmDef, Catalog, Priority, messages
from alarms.state import (
    Ack,
    Action,
    AlarmState,
    ConditionOff,
    ConditionOn,
    Event,
    Expire,
    Rejected,
    Remove,
    Reset,
    Restore,
    Shelve,
    Signal,
    Status,
    Suppress,
    Unshelve,
    Unsuppress,
    transition,
)
from alarms.store import PendingCommand
from core.conditions import ConditionEdges
from core.settings import AlarmSettings

__all__ = ["ENGINE", "AlarmManager"]

# a shutdown never hides an alarm already announced and awaiting an operator's acknowledgement:
# hiding it would take it off the alarm list unacknowledged (it stays as it is, not suppressed,
# until acknowledged; the unit's next suppression then hides it)
_AWAITING_OPERATOR = frozenset({Status.UNACK.value, Status.RTN_UNACK.value})

log = logging.getLogger(__name__)

ENGINE = "engine"  # the actor of what the engine did by itself (conditions, timers)
_US_PER_MIN = 60_000_000
# who may do what; tenancy (an enterprise's people act on their enterprise's alarms) on top
_OPERATORS = frozenset({"enterprise_operator", "enterprise_admin", "engineer", "admin"})
_ALLOWED: dict[str, frozenset[str]] = {
    "ack": _OPERATORS,
    "reset": _OPERATORS,
    "shelve": _OPERATORS,
    "unshelve": _OPERATORS,
    "comment": _OPERATORS | {"bureau_duty"},
    "feedback": _OPERATORS,
    "respond": _OPERATORS,
    "supervise": frozenset({"bureau_duty", "admin"}),
    "remove": frozenset({"enterprise_admin", "engineer", "admin"}),
    "restore": frozenset({"enterprise_admin", "engineer", "admin"}),
}
_NOTES = {"comment": "COMMENT", "feedback": "FEEDBACK", "supervise": "SUPERVISE", "respond": "RESPOND"}
_OUTBOX_EVENTS = {Action.RAISED: "raised", Action.RERAISED: "reraised"}
# an alarm row's fields from its definition: key, enterprise, county, hazard source, unit,
# subject, kind, priority
RowLabels = tuple[str, str, str, str, str | None, str, str, str]
_VALUE: dict[Action | Status, str] = {m: m.value for m in (*Action, *Status)}  # faster than .value


class AlarmManager:
    def __init__(
        self,
        catalog: Catalog,
        settings: AlarmSettings,
        *,
        seq: int = -1,
        alarms: Mapping[str, AlarmRow] | None = None,
    ) -> None:
        """``seq``: the last commit made (stored or logged); ``alarms``: their rows as stored."""
        self.catalog = catalog
        self.settings = settings
        self.seq = seq
        self.alarms: dict[str, AlarmRow] = dict(alarms or {})
        # the shelved ones, which the timer looks at every second (not every alarm ever raised)
        self.shelved: set[str] = {k for k, a in self.alarms.items() if a.status == Status.SHELVED}
        # units suppressed by design as last reported (unit -> the change): a restore re-suppresses;
        # after a restart, those of the stored rows until the first evaluation reports them again
        self.suppressed_units: dict[str, SuppressionChange] = self._stored_suppressions()
        self._labels: dict[str, tuple[AlarmDef, RowLabels]] = {}
        self._max_shelve_us = {
            Priority.CRITICAL: settings.max_shelve_min_critical * _US_PER_MIN,
            Priority.HIGH: settings.max_shelve_min_high * _US_PER_MIN,
            Priority.MEDIUM: settings.max_shelve_min_medium * _US_PER_MIN,
            Priority.LOW: settings.max_shelve_min_low * _US_PER_MIN,
        }

    def _stored_suppressions(self) -> dict[str, SuppressionChange]:
        """The units the stored rows show suppressed by design (an alarm still hidden by its
        unit's ``suppress_when``), so that a restore before the first evaluation re-suppresses."""
        out: dict[str, SuppressionChange] = {}
        for key, row in self.alarms.items():
            if row.status != Status.SUPPRESSED:
                continue
            alarm = self.catalog.by_key(key)
            unit = self.catalog.suppressing_unit(alarm) if alarm is not None else None
            if unit is not None and unit not in out:
                tag, reason = self.catalog.suppress_when_of(unit)
                out[unit] = SuppressionChange(unit, True, row.reason or reason, tag, math.nan)
        return out

    def row_labels(self, alarm: AlarmDef) -> RowLabels:
        """The fields of the alarm's row that come from its definition: key, enterprise, county,
        hazard source, unit, subject, kind, priority (made once per alarm: a flood makes rows
        for thousands of alarms per batch)."""
        made = self._labels.get(alarm.key)
        if made is None or made[0] is not alarm:
            labels = alarm.labels
            fields: RowLabels = (
                alarm.key,
                labels["enterprise"] or "",
                labels["county"] or "",
                labels["hazard_source"] or "",
                labels.get("unit"),
                alarm.subject,
                alarm.kind.name if alarm.kind is not None else "SIF_DISABLED",
                alarm.priority.value,
            )
            made = self._labels[alarm.key] = (alarm, fields)
        return made[1]

    # --- inputs ------------------------------------------------------------------------------

    def edges(self, edges: ConditionEdges, now_us: int) -> Commit | None:
        """The commit of a batch of condition edges (None: no edges)."""
        if len(edges) == 0:
            return None
        b = _Batch(self, now_us)
        rules: dict[str, RuleRow] = {}  # a rule's last edge in the batch is its state
        for r, active, ts, value, limit in zip(
            edges.rule.tolist(), edges.active.tolist(), edges.ts.tolist(), edges.value.tolist(),
            edges.limit.tolist(), strict=True,
        ):  # fmt: skip
            alarm = self.catalog[r]
            signal: Signal = ConditionOn(value, limit) if active else ConditionOff(value)
            b.apply(alarm, signal, ts, ENGINE)
            rules[alarm.key] = RuleRow(alarm.key, active, ts)
        return b.commit(rules=tuple(rules.values()))

    def sif(self, changes: Sequence[SifChange], now_us: int) -> Commit | None:
        """The commit of safety functions that could no longer act or can again, at ``now_us``
        (None: nothing to record). A return for an alarm whose condition is off is skipped here
        without a transition: the composition root reports every interlock's first known state,
        nearly all of them able."""
        b = _Batch(self, now_us)
        for c in changes:
            alarm = self.catalog.sif_disabled(c.interlock)
            if not c.disabled:
                row = b.rows.get(alarm.key) or self.alarms.get(alarm.key)
                if row is None or not row.condition:
                    continue
            signal: Signal = ConditionOn(c.can_vote, c.m) if c.disabled else ConditionOff(c.can_vote)
            b.apply(alarm, signal, now_us, ENGINE, detail=c.detail())
        return b.commit() if b.journal else None

    def suppress(self, changes: Sequence[SuppressionChange], now_us: int) -> Commit | None:
        """The commit of units whose suppression by design began or ended, at ``now_us`` (None:
        nothing to record: every alarm already so, as after a restart)."""
        b = _Batch(self, now_us)
        for c in changes:
            if c.suppressed:
                self.suppressed_units[c.unit] = c
            else:
                self.suppressed_units.pop(c.unit, None)
            signal: Signal = Suppress(c.reason) if c.suppressed else Unsuppress()
            detail, before = c.detail(), len(b.journal)
            for alarm in self.catalog.suppressible(c.unit):
                row = b.rows.get(alarm.key) or self.alarms.get(alarm.key)
                if (row is not None and row.status == Status.SUPPRESSED) is c.suppressed:
                    continue  # already so (an unsuppress of an alarm without a row: never suppressed)
                if c.suppressed and row is not None and row.status in _AWAITING_OPERATOR:
                    continue  # announced, not yet acknowledged: it stays before the operator
                b.apply(alarm, signal, now_us, ENGINE, detail=detail)
            hidden = {j.alarm_key for j in b.journal[before:]}
            if hidden:
                action = "suppress" if c.suppressed else "unsuppress"
                b.audit.append((ENGINE, action, c.unit, {**detail, "alarms": len(hidden)}))
        return b.commit() if b.journal else None

    def release_suppressions(self, now_us: int) -> Commit | None:
        """The commit unsuppressing the stored alarms no unit's suppression hides any more (its
        ``suppress_when`` removed from the config, or its kind no longer suppressible): run once
        the state is loaded. An alarm gone from the config keeps its last state."""
        b = _Batch(self, now_us)
        detail = {"reason": "suppression by design no longer configured", "reason_zh": "设计抑制已不再配置"}
        units: dict[str, int] = {}
        for key in [k for k, a in self.alarms.items() if a.status == Status.SUPPRESSED]:
            alarm = self.catalog.by_key(key)
            if alarm is not None and self.catalog.suppressing_unit(alarm) is None:
                b.apply(alarm, Unsuppress(), now_us, ENGINE, detail=detail)
                unit = f"{alarm.labels['hazard_source']}.{alarm.labels['unit']}"
                units[unit] = units.get(unit, 0) + 1
        for unit, n in units.items():
            b.audit.append((ENGINE, "unsuppress", unit, {**detail, "alarms": n}))
        return b.commit() if b.journal else None

    def command(self, cmd: PendingCommand, now_us: int) -> Commit:
        """The commit of one operator command: applied, or rejected with its reason."""
        b = _Batch(self, now_us)
        alarm = self.catalog.by_key(cmd.alarm_key)
        audit_detail: dict[str, object] = {
            "command_id": cmd.id,
            "command": cmd.command,
            "role": cmd.role,
            "args": cmd.args,
        }
        try:
            if cmd.role.startswith("enterprise_") and cmd.enterprise is None:
                raise Rejected(f"role {cmd.role} needs the actor's enterprise")
            if alarm is None or (cmd.enterprise is not None and alarm.labels["enterprise"] != cmd.enterprise):
                raise Rejected(f"unknown alarm {cmd.alarm_key!r}")
            if not isinstance(cmd.args, dict):
                raise Rejected(f"command arguments must be a mapping, got {type(cmd.args).__name__}")
            if cmd.role not in _ALLOWED.get(cmd.command, frozenset()):
                if cmd.command not in _ALLOWED:
                    raise Rejected(f"unknown command {cmd.command!r}")
                raise Rejected(f"role {cmd.role} may not {cmd.command} alarms")
            if cmd.command in _NOTES:
                row = self.alarms.get(alarm.key)
                status = row.status if row else Status.NORMAL.value
                b.note(alarm, _NOTES[cmd.command], status, cmd)
            else:
                b.apply(alarm, self._signal(alarm, cmd, now_us), now_us, cmd.actor, cmd.id)
                if cmd.command == "restore":
                    self._resuppress(b, alarm, now_us)
        except Exception as exc:  # Rejected, or a bug: never one command blocking all behind it
            reason = (
                exc.reason
                if isinstance(exc, Rejected)
                else f"could not be applied: {type(exc).__name__}: {exc}"
            )
            if not isinstance(exc, Rejected):
                log.exception("alarm command %s on %s failed", cmd.id, cmd.alarm_key)
            b = _Batch(self, now_us)  # nothing of a failed command is kept
            b.outcomes.append(CommandOutcome(cmd.id, "rejected", None, reason))
            b.audit.append(
                (cmd.actor, f"{cmd.command} rejected", cmd.alarm_key, {**audit_detail, "reason": reason})
            )
        else:
            assert alarm is not None
            new = b.rows.get(alarm.key) or self.alarms.get(alarm.key)
            result = new.status if new else Status.NORMAL.value
            b.outcomes.append(CommandOutcome(cmd.id, "applied", result, None))
            b.audit.append((cmd.actor, cmd.command, cmd.alarm_key, audit_detail))
        return b.commit()

    def _resuppress(self, b: _Batch, alarm: AlarmDef, now_us: int) -> None:
        """A restored alarm of a unit suppressed by design goes back to suppressed at once (the
        state machine ends a suppression on removal); its re-raise is not announced."""
        unit = self.catalog.suppressing_unit(alarm)
        change = self.suppressed_units.get(unit) if unit is not None else None
        if change is None:
            return
        b.apply(alarm, Suppress(change.reason), now_us, ENGINE, detail=change.detail())
        b.outbox = [o for o in b.outbox if o.alarm_key != alarm.key]

    def tick(self, now_us: int) -> Commit | None:
        """The commit of the timers due at ``now_us`` (shelving that ran out), None if none."""
        due = [
            a for a in (self.alarms[k] for k in sorted(self.shelved))  # the same order in every process
            if a.shelved_until_us is not None and a.shelved_until_us <= now_us
        ]  # fmt: skip
        if not due:
            return None
        b = _Batch(self, now_us)
        for row in due:
            alarm = self.catalog.by_key(row.key)
            if alarm is not None:  # an alarm gone from the config keeps its last state
                b.apply(alarm, Expire(), now_us, ENGINE)
        return b.commit() if b.journal else None

    def _signal(self, alarm: AlarmDef, cmd: PendingCommand, now_us: int) -> Signal:
        args = cmd.args
        match cmd.command:
            case "ack":
                return Ack(cmd.actor, args.get("comment"))
            case "reset":
                return Reset(cmd.actor, args.get("comment"))
            case "shelve":
                minutes = args.get("minutes")
                if (
                    isinstance(minutes, bool)
                    or not isinstance(minutes, int | float)
                    or not math.isfinite(minutes)
                    or minutes <= 0
                ):
                    raise Rejected(f"shelve needs minutes > 0, got {minutes!r}")
                most = self._max_shelve_us[alarm.priority]
                if minutes * _US_PER_MIN > most:
                    if most == 0:
                        raise Rejected(f"{alarm.priority.value} alarms cannot be shelved")
                    raise Rejected(
                        f"{alarm.priority.value} alarms may be shelved for at most {most / _US_PER_MIN:g} min"
                    )
                return Shelve(cmd.actor, now_us + round(minutes * _US_PER_MIN), str(args.get("reason") or ""))
            case "unshelve":
                return Unshelve(cmd.actor)
            case "remove":
                return Remove(cmd.actor, str(args.get("reason") or ""))
            case "restore":
                return Restore(cmd.actor)
        raise Rejected(f"unknown command {cmd.command!r}")


class _Batch:
    """One commit being made: every alarm it touches is read from it first, then the manager."""

    def __init__(self, manager: AlarmManager, now_us: int) -> None:
        self.m = manager
        self.now_us = now_us
        self.journal: list[JournalRow] = []
        self.rows: dict[str, AlarmRow] = {}
        self.outbox: list[OutboxRow] = []
        self.outcomes: list[CommandOutcome] = []
        self.audit: list[tuple[str, str, str, dict[str, object]]] = []

    def apply(
        self,
        alarm: AlarmDef,
        signal: Signal,
        at_us: int,
        actor: str,
        command_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """``detail``: the journal rows' (a "reason" and "reason_zh" in it go into the messages)."""
        row = self.rows.get(alarm.key) or self.m.alarms.get(alarm.key)
        state = _state(row, alarm)
        new, events = transition(state, signal, at_us)  # Rejected goes to the caller
        if not events:
            return
        value, limit = _value_limit(signal, row)
        for ev in events:
            self._journal(alarm, ev, value, limit, actor, command_id, detail)
        self.rows[alarm.key] = _row(alarm, self.m.row_labels(alarm), new, row, events, value, limit, actor)

    def note(self, alarm: AlarmDef, action: str, status: str, cmd: PendingCommand) -> None:
        row = self.rows.get(alarm.key) or self.m.alarms.get(alarm.key)
        value, limit = (row.value, row.limit) if row else (math.nan, math.nan)
        if row is None:  # its first row, normal: whose alarm it is (tenancy) is read from alarm_state
            self.rows[alarm.key] = AlarmRow(
                *self.m.row_labels(alarm), Status.NORMAL.value, False, True, alarm.latching, self.now_us,
                None, None, None, math.nan, math.nan, None, None, None,
            )  # fmt: skip
        self.journal.append(
            JournalRow(
                alarm.key,
                action,
                status,
                status,
                self.now_us,
                value,
                limit,
                cmd.actor,
                cmd.id,
                dict(cmd.args),
            )
        )

    def _journal(
        self,
        alarm: AlarmDef,
        ev: Event,
        value: float,
        limit: float,
        actor: str,
        command_id: str | None,
        detail: dict[str, Any] | None,
    ) -> None:
        n = len(self.journal)
        self.journal.append(
            JournalRow(
                alarm.key,
                _VALUE[ev.action],
                _VALUE[ev.old],
                _VALUE[ev.new],
                ev.at_us,
                value,
                limit,
                actor,
                command_id,
                detail,
            )
        )
        event = _OUTBOX_EVENTS.get(ev.action, "resolved" if ev.resolved else None)
        if event is not None:
            zh, en = messages(alarm, ev.action, value, limit)
            if detail is not None and detail.get("reason"):
                zh, en = f"{zh}（{detail['reason_zh']}）", f"{en} ({detail['reason']})"
            self.outbox.append(
                OutboxRow(n, alarm.key, event, alarm.priority.value, dict(alarm.labels), zh, en)
            )

    def commit(self, rules: tuple[RuleRow, ...] = ()) -> Commit:
        m = self.m
        m.seq += 1
        m.alarms.update(self.rows)
        for key, row in self.rows.items():
            if row.status == Status.SHELVED:
                m.shelved.add(key)
            else:
                m.shelved.discard(key)
        return Commit(
            m.seq, self.now_us, tuple(self.journal), tuple(self.rows.values()), tuple(self.outbox),
            tuple(self.outcomes), rules, tuple(self.audit),
        )  # fmt: skip


def _state(row: AlarmRow | None, alarm: AlarmDef) -> AlarmState:
    if row is None:
        return AlarmState(latching=alarm.latching)
    return AlarmState(
        status=Status(row.status),
        condition=row.condition,
        acked=row.acked,
        latching=alarm.latching,  # from the config as it is now
        since_us=row.since_us,
        shelved_until_us=row.shelved_until_us,
        by=row.by_whom,
        reason=row.reason,
    )


def _value_limit(signal: Signal, row: AlarmRow | None) -> tuple[float, float]:
    if isinstance(signal, ConditionOn):
        return signal.value, signal.limit
    if isinstance(signal, ConditionOff):
        return signal.value, row.limit if row else math.nan
    return (row.value, row.limit) if row else (math.nan, math.nan)


def _row(
    alarm: AlarmDef,
    labels: RowLabels,
    s: AlarmState,
    old: AlarmRow | None,
    events: tuple[Event, ...],
    value: float,
    limit: float,
    actor: str,
) -> AlarmRow:
    actions = {ev.action for ev in events}
    at = events[-1].at_us
    raised = at if actions & {Action.RAISED, Action.RERAISED} else (old.raised_at_us if old else None)
    acked_at, acked_by = (old.acked_at_us, old.acked_by) if old else (None, None)
    if actions & {Action.ACKED, Action.RESET}:
        acked_at, acked_by = at, actor
    elif actions & {Action.RAISED, Action.RERAISED}:
        acked_at, acked_by = None, None
    return AlarmRow(
        *labels,  # key, enterprise, county, hazard_source, unit, subject, kind, priority
        _VALUE[s.status],
        s.condition,
        s.acked,
        s.latching,
        s.since_us,
        s.shelved_until_us,
        s.by,
        s.reason,
        value,
        limit,
        raised,
        acked_at,
        acked_by,
    )
