"""The ISA-18.2 / IEC 62682 alarm state machine for one alarm, as a pure function.

``transition(state, signal, now_us)`` returns the next state and the events to journal; it reads
no clock and keeps nothing. The manager stores both in one transaction and writes outbox rows for
the events that ``annunciate``. States are those of ISA-18.2's alarm state transition diagram
(A normal, B unacknowledged, C acknowledged, D returned unacknowledged, E latched, F shelved,
G suppressed by design, H out of service); a latch is held until reset, as gas controllers do (GB 16808, DOMAIN.md).
"on"/"off" are ConditionOn/ConditionOff; "L:" is what an alarm with ``latching`` set does::

    from                     signal              to                           actions
    NORMAL                   on                  UNACK                        RAISED
    UNACK                    ack                 ACKED                        ACKED
    UNACK                    off                 RTN_UNACK, L: LATCHED        RETURNED
    ACKED                    off                 NORMAL, L: LATCHED (acked)   CLEARED, L: RETURNED
    RTN_UNACK                ack                 NORMAL                       ACKED
    RTN_UNACK, LATCHED       on                  UNACK                        RERAISED
    LATCHED (unacked)        ack                 LATCHED (acked)              ACKED
    LATCHED                  reset               NORMAL                       RESET
    NORMAL .. RTN_UNACK,     shelve              SHELVED                      SHELVED
      SHELVED (re-shelve)
    SHELVED                  unshelve            UNACK if on, else NORMAL     UNSHELVED (+ RERAISED)
    SHELVED                  expire, when due    UNACK if on, else NORMAL     SHELVE_EXPIRED (+ RERAISED)
    any but OUT_OF_SERVICE   suppress            SUPPRESSED                   SUPPRESSED
    SUPPRESSED               unsuppress          UNACK if on, else NORMAL     UNSUPPRESSED (+ RERAISED)
    any but OUT_OF_SERVICE   remove              OUT_OF_SERVICE               REMOVED
    OUT_OF_SERVICE           restore             UNACK if on, else NORMAL     RESTORED (+ RERAISED)
    SHELVED, SUPPRESSED,     on, off             the same (condition kept)    CONDITION
      OUT_OF_SERVICE

Any other pair: an operator command (ack, reset, shelve, unshelve, remove, restore) raises
``Rejected``; the process (on, off), design (suppress, unsuppress) and timer (expire) signals
change nothing and return no events. Invariants (tests/alarms/test_state.py): NORMAL has the
condition off and nothing to acknowledge; an alarm becomes UNACK only with a RAISED or RERAISED
event; ``since_us`` moves only when the status does; SHELVED iff ``shelved_until_us`` is set.

Corners decided here:

- Entering SHELVED, SUPPRESSED or OUT_OF_SERVICE settles a pending acknowledgement and drops a
  latch; leaving goes to UNACK (re-annunciated) if the condition is on, else NORMAL: ISA-18.2
  returns from F, G and H to A or B only.
- Shelving a LATCHED alarm is rejected: its condition is off, so it can be reset, and an
  operator clears a latch with a recorded reset, not by shelving it away. Suppression (plant
  state, by design) and removal (with its own disable record) do end a latch.
- Shelving a SUPPRESSED or OUT_OF_SERVICE alarm is rejected: it is not annunciated. Suppression
  and removal outrank shelving and end it; removal ends a suppression too, so after a restore the
  manager suppresses again if the design condition still holds.
- Re-shelving replaces ``shelved_until_us``, ``by`` and ``reason`` and keeps ``since_us``, so
  the manager's maximum shelving time counts from the first shelve.
- A reset implies the acknowledgement: one RESET event.
- Leaving SHELVED, SUPPRESSED or OUT_OF_SERVICE with the condition on gives two events, the
  leaving action then RERAISED, both from the old status to UNACK.
- ``resolved`` marks a return to NORMAL from the alarm list (CLEARED, ACKED of a returned alarm,
  RESET); leaving a hidden status is never "resolved", nor is hiding an alarm.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeAlias, assert_never

from core.errors import HazardWatchError

__all__ = [
    "ANNUNCIATED",
    "Ack",
    "Action",
    "AlarmState",
    "ConditionOff",
    "ConditionOn",
    "Event",
    "Expire",
    "Rejected",
    "Remove",
    "Reset",
    "Restore",
    "Shelve",
    "Signal",
    "Status",
    "Suppress",
    "Unshelve",
    "Unsuppress",
    "transition",
]


class Status(StrEnum):
    """What an operator sees; the values are stored in the database."""

    NORMAL = "normal"
    UNACK = "unacknowledged"
    ACKED = "acknowledged"
    RTN_UNACK = "returned_unacknowledged"
    LATCHED = "latched"
    SHELVED = "shelved"
    SUPPRESSED = "suppressed"
    OUT_OF_SERVICE = "out_of_service"


# the alarm list: statuses an operator is shown and must act on
ANNUNCIATED = frozenset({Status.UNACK, Status.ACKED, Status.RTN_UNACK, Status.LATCHED})
_HIDDEN = frozenset({Status.SHELVED, Status.SUPPRESSED, Status.OUT_OF_SERVICE})


@dataclass(frozen=True, slots=True)
class AlarmState:
    status: Status = Status.NORMAL
    condition: bool = False  # the process condition as last reported, tracked in every status
    acked: bool = True  # False while an activation (or its return) awaits acknowledgement
    latching: bool = False  # gas alarms: stay in alarm after the condition clears, until reset
    since_us: int = 0  # when status last changed
    shelved_until_us: int | None = None
    by: str | None = None  # who shelved / removed (for SHELVED, OUT_OF_SERVICE)
    reason: str | None = None  # suppression condition / removal or shelving reason


@dataclass(frozen=True, slots=True)
class ConditionOn:
    value: float  # value and limit are for the journal; the state machine needs only the edge
    limit: float


@dataclass(frozen=True, slots=True)
class ConditionOff:
    value: float


@dataclass(frozen=True, slots=True)
class Ack:
    by: str
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class Reset:
    by: str
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class Shelve:
    by: str
    until_us: int
    reason: str


@dataclass(frozen=True, slots=True)
class Unshelve:
    by: str


@dataclass(frozen=True, slots=True)
class Suppress:
    reason: str


@dataclass(frozen=True, slots=True)
class Unsuppress:
    pass


@dataclass(frozen=True, slots=True)
class Remove:
    by: str
    reason: str


@dataclass(frozen=True, slots=True)
class Restore:
    by: str


@dataclass(frozen=True, slots=True)
class Expire:
    """The shelving timer ran out (the manager's tick)."""


Signal: TypeAlias = (
    ConditionOn
    | ConditionOff
    | Ack
    | Reset
    | Shelve
    | Unshelve
    | Suppress
    | Unsuppress
    | Remove
    | Restore
    | Expire
)


class Action(StrEnum):
    RAISED = "RAISED"
    RERAISED = "RERAISED"  # condition back while RTN_UNACK/LATCHED, or on when a hidden status ends
    RETURNED = "RETURNED"  # condition off; the alarm stays unacknowledged or latched
    CLEARED = "CLEARED"  # back to NORMAL by the condition
    ACKED = "ACKED"
    RESET = "RESET"
    SHELVED = "SHELVED"
    UNSHELVED = "UNSHELVED"
    SHELVE_EXPIRED = "SHELVE_EXPIRED"
    SUPPRESSED = "SUPPRESSED"
    UNSUPPRESSED = "UNSUPPRESSED"
    REMOVED = "REMOVED"
    RESTORED = "RESTORED"
    CONDITION = "CONDITION"  # condition changed while hidden: journaled, not annunciated


_ANNUNCIATING = frozenset({Action.RAISED, Action.RERAISED})


@dataclass(frozen=True, slots=True)
class Event:
    action: Action
    old: Status
    new: Status
    at_us: int
    annunciate: bool  # people must be told: the manager writes outbox rows for these
    resolved: bool  # back to NORMAL from the alarm list: routing may send "resolved"


class Rejected(HazardWatchError):
    """An operator command that does not apply to the alarm as it stands; ``reason`` (English,
    naming the status) is shown to the operator."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Outcome: TypeAlias = tuple[AlarmState, tuple[Event, ...]]


def transition(state: AlarmState, signal: Signal, now_us: int) -> Outcome:
    """The state after ``signal`` at ``now_us`` and the events it caused (see the module table).

    Raises ``Rejected`` for an operator command that does not apply; process, design and timer
    signals always apply or change nothing."""
    match signal:
        case ConditionOn() | ConditionOff():
            return _condition(state, isinstance(signal, ConditionOn), now_us)
        case Ack():
            return _ack(state, now_us)
        case Reset():
            return _reset(state, now_us)
        case Shelve(by=by, until_us=until_us, reason=reason):
            if state.status is Status.LATCHED:
                raise Rejected("cannot shelve: the alarm is latched; reset it (its condition is off)")
            if state.status in (Status.SUPPRESSED, Status.OUT_OF_SERVICE):
                raise Rejected(f"cannot shelve: the alarm is {_label(state)}")
            if until_us <= now_us:
                raise Rejected(
                    f"cannot shelve: the shelving must end after now (the alarm is {_label(state)})"
                )
            return _hide(state, Status.SHELVED, Action.SHELVED, now_us, by, reason, until_us)
        case Unshelve():
            if state.status is not Status.SHELVED:
                raise Rejected(f"cannot unshelve: the alarm is {_label(state)}")
            return _unhide(state, Action.UNSHELVED, now_us)
        case Expire():
            due = state.shelved_until_us is not None and state.shelved_until_us <= now_us
            return _unhide(state, Action.SHELVE_EXPIRED, now_us) if due else (state, ())
        case Suppress(reason=reason):
            if state.status in (Status.SUPPRESSED, Status.OUT_OF_SERVICE):
                return state, ()
            return _hide(state, Status.SUPPRESSED, Action.SUPPRESSED, now_us, None, reason)
        case Unsuppress():
            if state.status is not Status.SUPPRESSED:
                return state, ()
            return _unhide(state, Action.UNSUPPRESSED, now_us)
        case Remove(by=by, reason=reason):
            if state.status is Status.OUT_OF_SERVICE:
                raise Rejected("cannot remove: the alarm is already out of service")
            return _hide(state, Status.OUT_OF_SERVICE, Action.REMOVED, now_us, by, reason)
        case Restore():
            if state.status is not Status.OUT_OF_SERVICE:
                raise Rejected(f"cannot restore: the alarm is {_label(state)}, not out of service")
            return _unhide(state, Action.RESTORED, now_us)
        case _:
            assert_never(signal)


def _condition(state: AlarmState, on: bool, now_us: int) -> Outcome:
    if on == state.condition:
        return state, ()
    if state.status in _HIDDEN:
        return _move(state, now_us, (Action.CONDITION,), condition=on)
    if on:  # from NORMAL, RTN_UNACK or LATCHED: UNACK and ACKED already have it on
        action = Action.RAISED if state.status is Status.NORMAL else Action.RERAISED
        return _move(state, now_us, (action,), status=Status.UNACK, condition=True, acked=False)
    if state.latching:
        return _move(state, now_us, (Action.RETURNED,), status=Status.LATCHED, condition=False)
    if state.status is Status.UNACK:
        return _move(state, now_us, (Action.RETURNED,), status=Status.RTN_UNACK, condition=False)
    return _move(state, now_us, (Action.CLEARED,), status=Status.NORMAL, condition=False)


def _ack(state: AlarmState, now_us: int) -> Outcome:
    if state.acked:
        if state.status in (Status.ACKED, Status.LATCHED):
            raise Rejected(f"the alarm is {_label(state)}: already acknowledged")
        raise Rejected(f"the alarm is {_label(state)}: nothing to acknowledge")
    if state.status is Status.RTN_UNACK:
        return _move(state, now_us, (Action.ACKED,), status=Status.NORMAL, acked=True)
    if state.status is Status.UNACK:
        return _move(state, now_us, (Action.ACKED,), status=Status.ACKED, acked=True)
    return _move(state, now_us, (Action.ACKED,), acked=True)  # LATCHED stays latched until reset


def _reset(state: AlarmState, now_us: int) -> Outcome:
    if state.status is Status.LATCHED:
        return _move(state, now_us, (Action.RESET,), status=Status.NORMAL, acked=True)
    if state.latching and state.status in (Status.UNACK, Status.ACKED):
        raise Rejected(f"cannot reset: the condition is still active (the alarm is {_label(state)})")
    raise Rejected(f"cannot reset: the alarm is {_label(state)}, not latched")


def _hide(
    state: AlarmState,
    status: Status,
    action: Action,
    now_us: int,
    by: str | None,
    reason: str,
    shelved_until_us: int | None = None,
) -> Outcome:
    return _move(
        state,
        now_us,
        (action,),
        status=status,
        acked=True,
        shelved_until_us=shelved_until_us,
        by=by,
        reason=reason,
    )


def _unhide(state: AlarmState, action: Action, now_us: int) -> Outcome:
    on = state.condition
    return _move(
        state,
        now_us,
        (action, Action.RERAISED) if on else (action,),
        status=Status.UNACK if on else Status.NORMAL,
        acked=not on,
        shelved_until_us=None,
        by=None,
        reason=None,
    )


# what a transition may change (latching comes from the config, since_us with the status)
_MOVABLE = frozenset({"status", "condition", "acked", "shelved_until_us", "by", "reason"})


def _move(state: AlarmState, now_us: int, actions: tuple[Action, ...], **changes: Any) -> Outcome:
    # built field by field: dataclasses.replace costs several µs, and a flood makes thousands
    assert changes.keys() <= _MOVABLE, f"not a field _move sets: {set(changes) - _MOVABLE}"
    status = changes.get("status", state.status)
    new = AlarmState(
        status,
        changes.get("condition", state.condition),
        changes.get("acked", state.acked),
        state.latching,
        now_us if status is not state.status else state.since_us,
        changes.get("shelved_until_us", state.shelved_until_us),
        changes.get("by", state.by),
        changes.get("reason", state.reason),
    )
    resolved = new.status is Status.NORMAL and state.status in ANNUNCIATED
    if len(actions) == 1:  # nearly always: a condition edge
        return new, (Event(actions[0], state.status, status, now_us, actions[0] in _ANNUNCIATING, resolved),)
    return new, tuple(Event(a, state.status, status, now_us, a in _ANNUNCIATING, resolved) for a in actions)


def _label(state: AlarmState) -> str:
    return state.status.value.replace("_", " ")
