"""The alarm state machine (alarms/state.py): the transition table below is the specification.

Every reachable state (status, condition, acked, latching) meets every kind of signal in TABLE;
``test_table_covers_every_reachable_state_and_signal`` fails when a Status or Signal is added
without its rows. A seeded random walk then checks the invariants over long sequences.
"""

from __future__ import annotations

import random
from dataclasses import fields
from typing import get_args

import pytest

from alarms.state import (
    ANNUNCIATED,
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

S = Status
HOUR_US = 3_600_000_000
SINCE = 1_000  # when every table state entered its status
NOW = 10 * HOUR_US  # when every table signal arrives; table SHELVED states fall due exactly now

SIGNALS: dict[str, Signal] = {
    "on": ConditionOn(value=25.0, limit=20.0),
    "off": ConditionOff(value=3.0),
    "ack": Ack("op.li", "seen"),
    "reset": Reset("op.li"),
    "shelve": Shelve("op.li", until_us=NOW + HOUR_US, reason="chattering, work order 17"),
    "unshelve": Unshelve("op.wang"),
    "suppress": Suppress("unit 2 shut down"),
    "unsuppress": Unsuppress(),
    "remove": Remove("tech.zhao", "detector replaced"),
    "restore": Restore("tech.zhao"),
    "expire": Expire(),
}

# from: status, condition (1 on), acked, latching; signal; to: status, condition, acked; actions.
# "=": the state is returned unchanged with no events. "rejected": Rejected is raised.
# An action marked * is resolved (back to NORMAL from the alarm list).
TABLE = """
NORMAL          0 1 0   on          UNACK           1 0   RAISED
NORMAL          0 1 0   off         =
NORMAL          0 1 0   ack         rejected
NORMAL          0 1 0   reset       rejected
NORMAL          0 1 0   shelve      SHELVED         0 1   SHELVED
NORMAL          0 1 0   unshelve    rejected
NORMAL          0 1 0   suppress    SUPPRESSED      0 1   SUPPRESSED
NORMAL          0 1 0   unsuppress  =
NORMAL          0 1 0   remove      OUT_OF_SERVICE  0 1   REMOVED
NORMAL          0 1 0   restore     rejected
NORMAL          0 1 0   expire      =

UNACK           1 0 0   on          =
UNACK           1 0 0   off         RTN_UNACK       0 0   RETURNED
UNACK           1 0 0   ack         ACKED           1 1   ACKED
UNACK           1 0 0   reset       rejected
UNACK           1 0 0   shelve      SHELVED         1 1   SHELVED
UNACK           1 0 0   unshelve    rejected
UNACK           1 0 0   suppress    SUPPRESSED      1 1   SUPPRESSED
UNACK           1 0 0   unsuppress  =
UNACK           1 0 0   remove      OUT_OF_SERVICE  1 1   REMOVED
UNACK           1 0 0   restore     rejected
UNACK           1 0 0   expire      =

ACKED           1 1 0   on          =
ACKED           1 1 0   off         NORMAL          0 1   CLEARED*
ACKED           1 1 0   ack         rejected
ACKED           1 1 0   reset       rejected
ACKED           1 1 0   shelve      SHELVED         1 1   SHELVED
ACKED           1 1 0   unshelve    rejected
ACKED           1 1 0   suppress    SUPPRESSED      1 1   SUPPRESSED
ACKED           1 1 0   unsuppress  =
ACKED           1 1 0   remove      OUT_OF_SERVICE  1 1   REMOVED
ACKED           1 1 0   restore     rejected
ACKED           1 1 0   expire      =

RTN_UNACK       0 0 0   on          UNACK           1 0   RERAISED
RTN_UNACK       0 0 0   off         =
RTN_UNACK       0 0 0   ack         NORMAL          0 1   ACKED*
RTN_UNACK       0 0 0   reset       rejected
RTN_UNACK       0 0 0   shelve      SHELVED         0 1   SHELVED
RTN_UNACK       0 0 0   unshelve    rejected
RTN_UNACK       0 0 0   suppress    SUPPRESSED      0 1   SUPPRESSED
RTN_UNACK       0 0 0   unsuppress  =
RTN_UNACK       0 0 0   remove      OUT_OF_SERVICE  0 1   REMOVED
RTN_UNACK       0 0 0   restore     rejected
RTN_UNACK       0 0 0   expire      =

NORMAL          0 1 1   on          UNACK           1 0   RAISED
NORMAL          0 1 1   off         =
NORMAL          0 1 1   ack         rejected
NORMAL          0 1 1   reset       rejected
NORMAL          0 1 1   shelve      SHELVED         0 1   SHELVED
NORMAL          0 1 1   unshelve    rejected
NORMAL          0 1 1   suppress    SUPPRESSED      0 1   SUPPRESSED
NORMAL          0 1 1   unsuppress  =
NORMAL          0 1 1   remove      OUT_OF_SERVICE  0 1   REMOVED
NORMAL          0 1 1   restore     rejected
NORMAL          0 1 1   expire      =

UNACK           1 0 1   on          =
UNACK           1 0 1   off         LATCHED         0 0   RETURNED
UNACK           1 0 1   ack         ACKED           1 1   ACKED
UNACK           1 0 1   reset       rejected
UNACK           1 0 1   shelve      SHELVED         1 1   SHELVED
UNACK           1 0 1   unshelve    rejected
UNACK           1 0 1   suppress    SUPPRESSED      1 1   SUPPRESSED
UNACK           1 0 1   unsuppress  =
UNACK           1 0 1   remove      OUT_OF_SERVICE  1 1   REMOVED
UNACK           1 0 1   restore     rejected
UNACK           1 0 1   expire      =

ACKED           1 1 1   on          =
ACKED           1 1 1   off         LATCHED         0 1   RETURNED
ACKED           1 1 1   ack         rejected
ACKED           1 1 1   reset       rejected
ACKED           1 1 1   shelve      SHELVED         1 1   SHELVED
ACKED           1 1 1   unshelve    rejected
ACKED           1 1 1   suppress    SUPPRESSED      1 1   SUPPRESSED
ACKED           1 1 1   unsuppress  =
ACKED           1 1 1   remove      OUT_OF_SERVICE  1 1   REMOVED
ACKED           1 1 1   restore     rejected
ACKED           1 1 1   expire      =

LATCHED         0 0 1   on          UNACK           1 0   RERAISED
LATCHED         0 0 1   off         =
LATCHED         0 0 1   ack         LATCHED         0 1   ACKED
LATCHED         0 0 1   reset       NORMAL          0 1   RESET*
LATCHED         0 0 1   shelve      rejected
LATCHED         0 0 1   unshelve    rejected
LATCHED         0 0 1   suppress    SUPPRESSED      0 1   SUPPRESSED
LATCHED         0 0 1   unsuppress  =
LATCHED         0 0 1   remove      OUT_OF_SERVICE  0 1   REMOVED
LATCHED         0 0 1   restore     rejected
LATCHED         0 0 1   expire      =

LATCHED         0 1 1   on          UNACK           1 0   RERAISED
LATCHED         0 1 1   off         =
LATCHED         0 1 1   ack         rejected
LATCHED         0 1 1   reset       NORMAL          0 1   RESET*
LATCHED         0 1 1   shelve      rejected
LATCHED         0 1 1   unshelve    rejected
LATCHED         0 1 1   suppress    SUPPRESSED      0 1   SUPPRESSED
LATCHED         0 1 1   unsuppress  =
LATCHED         0 1 1   remove      OUT_OF_SERVICE  0 1   REMOVED
LATCHED         0 1 1   restore     rejected
LATCHED         0 1 1   expire      =
"""

# SHELVED, SUPPRESSED and OUT_OF_SERVICE behave alike for latching and non-latching alarms (a latch
# does not survive them), so their rows are written once and checked for both.
HIDDEN_TABLE = """
SHELVED         0 1     on          SHELVED         1 1   CONDITION
SHELVED         0 1     off         =
SHELVED         0 1     ack         rejected
SHELVED         0 1     reset       rejected
SHELVED         0 1     shelve      SHELVED         0 1   SHELVED
SHELVED         0 1     unshelve    NORMAL          0 1   UNSHELVED
SHELVED         0 1     suppress    SUPPRESSED      0 1   SUPPRESSED
SHELVED         0 1     unsuppress  =
SHELVED         0 1     remove      OUT_OF_SERVICE  0 1   REMOVED
SHELVED         0 1     restore     rejected
SHELVED         0 1     expire      NORMAL          0 1   SHELVE_EXPIRED

SHELVED         1 1     on          =
SHELVED         1 1     off         SHELVED         0 1   CONDITION
SHELVED         1 1     ack         rejected
SHELVED         1 1     reset       rejected
SHELVED         1 1     shelve      SHELVED         1 1   SHELVED
SHELVED         1 1     unshelve    UNACK           1 0   UNSHELVED RERAISED
SHELVED         1 1     suppress    SUPPRESSED      1 1   SUPPRESSED
SHELVED         1 1     unsuppress  =
SHELVED         1 1     remove      OUT_OF_SERVICE  1 1   REMOVED
SHELVED         1 1     restore     rejected
SHELVED         1 1     expire      UNACK           1 0   SHELVE_EXPIRED RERAISED

SUPPRESSED      0 1     on          SUPPRESSED      1 1   CONDITION
SUPPRESSED      0 1     off         =
SUPPRESSED      0 1     ack         rejected
SUPPRESSED      0 1     reset       rejected
SUPPRESSED      0 1     shelve      rejected
SUPPRESSED      0 1     unshelve    rejected
SUPPRESSED      0 1     suppress    =
SUPPRESSED      0 1     unsuppress  NORMAL          0 1   UNSUPPRESSED
SUPPRESSED      0 1     remove      OUT_OF_SERVICE  0 1   REMOVED
SUPPRESSED      0 1     restore     rejected
SUPPRESSED      0 1     expire      =

SUPPRESSED      1 1     on          =
SUPPRESSED      1 1     off         SUPPRESSED      0 1   CONDITION
SUPPRESSED      1 1     ack         rejected
SUPPRESSED      1 1     reset       rejected
SUPPRESSED      1 1     shelve      rejected
SUPPRESSED      1 1     unshelve    rejected
SUPPRESSED      1 1     suppress    =
SUPPRESSED      1 1     unsuppress  UNACK           1 0   UNSUPPRESSED RERAISED
SUPPRESSED      1 1     remove      OUT_OF_SERVICE  1 1   REMOVED
SUPPRESSED      1 1     restore     rejected
SUPPRESSED      1 1     expire      =

OUT_OF_SERVICE  0 1     on          OUT_OF_SERVICE  1 1   CONDITION
OUT_OF_SERVICE  0 1     off         =
OUT_OF_SERVICE  0 1     ack         rejected
OUT_OF_SERVICE  0 1     reset       rejected
OUT_OF_SERVICE  0 1     shelve      rejected
OUT_OF_SERVICE  0 1     unshelve    rejected
OUT_OF_SERVICE  0 1     suppress    =
OUT_OF_SERVICE  0 1     unsuppress  =
OUT_OF_SERVICE  0 1     remove      rejected
OUT_OF_SERVICE  0 1     restore     NORMAL          0 1   RESTORED
OUT_OF_SERVICE  0 1     expire      =

OUT_OF_SERVICE  1 1     on          =
OUT_OF_SERVICE  1 1     off         OUT_OF_SERVICE  0 1   CONDITION
OUT_OF_SERVICE  1 1     ack         rejected
OUT_OF_SERVICE  1 1     reset       rejected
OUT_OF_SERVICE  1 1     shelve      rejected
OUT_OF_SERVICE  1 1     unshelve    rejected
OUT_OF_SERVICE  1 1     suppress    =
OUT_OF_SERVICE  1 1     unsuppress  =
OUT_OF_SERVICE  1 1     remove      rejected
OUT_OF_SERVICE  1 1     restore     UNACK           1 0   RESTORED RERAISED
OUT_OF_SERVICE  1 1     expire      =
"""

Key = tuple[Status, bool, bool, bool]  # status, condition, acked, latching
Expected = tuple[Status, bool, bool, tuple[str, ...]] | str  # or "=" / "rejected"


def _parse() -> dict[tuple[Key, str], Expected]:
    rows: dict[tuple[Key, str], Expected] = {}

    def add(key: Key, signal: str, rest: list[str]) -> None:
        assert (key, signal) not in rows, f"duplicate row {key} {signal}"
        if rest in (["="], ["rejected"]):
            rows[key, signal] = rest[0]
        else:
            status, cond, acked, *actions = rest
            rows[key, signal] = (Status[status], cond == "1", acked == "1", tuple(actions))

    for line in filter(None, TABLE.splitlines()):
        status, cond, acked, latch, signal, *rest = line.split()
        add((Status[status], cond == "1", acked == "1", latch == "1"), signal, rest)
    for line in filter(None, HIDDEN_TABLE.splitlines()):
        status, cond, acked, signal, *rest = line.split()
        for latching in (False, True):
            add((Status[status], cond == "1", acked == "1", latching), signal, rest)
    return rows


ROWS = _parse()


def state_of(key: Key) -> AlarmState:
    """The table's state for ``key``, with the fields its status carries."""
    status, condition, acked, latching = key
    by, reason = {
        S.SHELVED: ("op.chen", "nuisance during start-up"),
        S.SUPPRESSED: (None, "unit 2 shut down"),
        S.OUT_OF_SERVICE: ("tech.zhao", "detector out for calibration"),
    }.get(status, (None, None))
    return AlarmState(
        status=status,
        condition=condition,
        acked=acked,
        latching=latching,
        since_us=SINCE,
        shelved_until_us=NOW if status is S.SHELVED else None,
        by=by,
        reason=reason,
    )


def key_of(state: AlarmState) -> Key:
    return state.status, state.condition, state.acked, state.latching


def reachable() -> set[Key]:
    """Every state reachable from a new alarm, latching or not, by any sequence of signals."""
    seen = {key_of(AlarmState()), key_of(AlarmState(latching=True))}
    todo = list(seen)
    while todo:
        start = state_of(todo.pop())
        for signal in SIGNALS.values():
            try:
                new, _ = transition(start, signal, NOW)
            except Rejected:
                continue
            if key_of(new) not in seen:
                seen.add(key_of(new))
                todo.append(key_of(new))
    return seen


def test_table_covers_every_reachable_state_and_signal() -> None:
    assert {type(s) for s in SIGNALS.values()} == set(get_args(Signal))
    keys = reachable()
    assert {k[0] for k in keys} == set(Status)
    assert set(ROWS) == {(k, name) for k in keys for name in SIGNALS}


@pytest.mark.parametrize(
    ("key", "signal"),
    sorted(ROWS),
    ids=[
        f"{k[0].name}-{'on' if k[1] else 'off'}-{'acked' if k[2] else 'unacked'}{'-latching' if k[3] else ''}-{s}"
        for k, s in sorted(ROWS)
    ],
)
def test_transition_table(key: Key, signal: str) -> None:
    state, expected = state_of(key), ROWS[key, signal]
    if expected == "rejected":
        with pytest.raises(Rejected) as rejected:
            transition(state, SIGNALS[signal], NOW)
        assert state.status.value.replace("_", " ") in rejected.value.reason
        return
    new, events = transition(state, SIGNALS[signal], NOW)
    if expected == "=":
        assert (new, events) == (state, ())
        return
    assert isinstance(expected, tuple)
    status, condition, acked, actions = expected
    assert (new.status, new.condition, new.acked, new.latching) == (status, condition, acked, state.latching)
    assert [e.action + ("*" if e.resolved else "") for e in events] == list(actions)
    assert all((e.old, e.new, e.at_us) == (state.status, status, NOW) for e in events)
    assert new.since_us == (SINCE if status is state.status else NOW)


def test_operator_rejections_say_why() -> None:
    latched = state_of((S.LATCHED, False, True, True))
    with pytest.raises(Rejected, match="already acknowledged"):
        transition(latched, Ack("op.li"), NOW)
    with pytest.raises(Rejected, match="condition is still active"):
        transition(state_of((S.ACKED, True, True, True)), Reset("op.li"), NOW)
    with pytest.raises(Rejected, match="not latched"):
        transition(state_of((S.RTN_UNACK, False, False, False)), Reset("op.li"), NOW)
    with pytest.raises(Rejected, match="nothing to acknowledge"):
        transition(AlarmState(), Ack("op.li"), NOW)
    with pytest.raises(Rejected, match="reset it"):
        transition(latched, SIGNALS["shelve"], NOW)


SHELVABLE = sorted(k for k, s in ROWS if s == "shelve" and ROWS[k, s] != "rejected")


@pytest.mark.parametrize("key", SHELVABLE)
@pytest.mark.parametrize("until_us", [NOW, NOW - 1])
def test_shelving_must_end_in_the_future(key: Key, until_us: int) -> None:
    with pytest.raises(Rejected, match="after now"):
        transition(state_of(key), Shelve("op.li", until_us, "nuisance"), NOW)


@pytest.mark.parametrize("condition", [False, True])
def test_expire_before_the_shelving_is_due_changes_nothing(condition: bool) -> None:
    shelved = state_of((S.SHELVED, condition, True, False))
    assert transition(shelved, Expire(), NOW - 1) == (shelved, ())


def test_shelving_records_who_until_when_and_why_and_a_re_shelve_keeps_since() -> None:
    shelved, (event,) = transition(state_of((S.UNACK, True, False, False)), SIGNALS["shelve"], NOW)
    assert (shelved.shelved_until_us, shelved.by, shelved.reason, shelved.since_us) == (
        NOW + HOUR_US,
        "op.li",
        "chattering, work order 17",
        NOW,
    )
    assert event == Event(Action.SHELVED, S.UNACK, S.SHELVED, NOW, annunciate=False, resolved=False)
    again, _ = transition(shelved, Shelve("op.wang", NOW + 3 * HOUR_US, "still chattering"), NOW + 5)
    assert (again.shelved_until_us, again.by, again.reason, again.since_us) == (
        NOW + 3 * HOUR_US,
        "op.wang",
        "still chattering",
        NOW,
    )
    back, _ = transition(again, Unshelve("op.wang"), NOW + 10)
    assert (back.shelved_until_us, back.by, back.reason, back.since_us) == (None, None, None, NOW + 10)


def test_suppression_and_removal_end_a_shelving() -> None:
    shelved = state_of((S.SHELVED, True, True, False))
    suppressed, _ = transition(shelved, SIGNALS["suppress"], NOW)
    assert (suppressed.shelved_until_us, suppressed.by, suppressed.reason) == (None, None, "unit 2 shut down")
    removed, _ = transition(suppressed, SIGNALS["remove"], NOW)
    assert (removed.shelved_until_us, removed.by, removed.reason) == (None, "tech.zhao", "detector replaced")
    restored, events = transition(removed, SIGNALS["restore"], NOW + 1)
    assert (restored.status, restored.by, restored.reason) == (S.UNACK, None, None)
    assert [(e.action, e.annunciate) for e in events] == [(Action.RESTORED, False), (Action.RERAISED, True)]


def test_a_gas_alarm_latches_re_sounds_and_needs_a_reset() -> None:
    """DOMAIN.md: gas alarms latch until reset; silence (ack) is separate from reset; a new
    alarm re-sounds."""
    story: list[tuple[Signal, Status, list[Action]]] = [
        (ConditionOn(25.0, 20.0), S.UNACK, [Action.RAISED]),
        (Ack("op.li"), S.ACKED, [Action.ACKED]),
        (ConditionOff(8.0), S.LATCHED, [Action.RETURNED]),
        (ConditionOn(31.0, 20.0), S.UNACK, [Action.RERAISED]),
        (ConditionOff(4.0), S.LATCHED, [Action.RETURNED]),
        (Ack("op.li"), S.LATCHED, [Action.ACKED]),
        (Reset("op.li", "area checked"), S.NORMAL, [Action.RESET]),
    ]
    state = AlarmState(latching=True)
    for t, (signal, status, actions) in enumerate(story, start=1):
        state, events = transition(state, signal, t)
        assert (state.status, [e.action for e in events]) == (status, actions), signal
    assert [e.resolved for e in events] == [True]


# --- invariants over random sequences ---------------------------------------------------------


def random_signal(rng: random.Random, now_us: int) -> Signal:
    kind = rng.choice(list(get_args(Signal)))
    if kind is Shelve:
        return Shelve("op.li", now_us + rng.randint(-HOUR_US, 4 * HOUR_US), "nuisance")
    return SIGNALS[next(n for n, s in SIGNALS.items() if type(s) is kind)]


def check_step(state: AlarmState, signal: Signal, now_us: int) -> AlarmState:
    before = AlarmState(**{f.name: getattr(state, f.name) for f in fields(AlarmState)})
    try:
        new, events = transition(state, signal, now_us)
    except Rejected:
        assert isinstance(signal, Ack | Reset | Shelve | Unshelve | Remove | Restore)
        assert state == before
        return state
    assert state == before  # frozen, but a replace() slip would still show here
    assert new.latching == state.latching
    if new.status is S.NORMAL:
        assert not new.condition and new.acked
    if new.status in (S.UNACK, S.ACKED):
        assert new.condition and new.acked == (new.status is S.ACKED)
    if new.status in (S.RTN_UNACK, S.LATCHED):
        assert not new.condition
    if new.status is S.LATCHED:
        assert new.latching
    if new.status is S.RTN_UNACK:
        assert not new.acked and not new.latching
    assert (new.status is S.SHELVED) == (new.shelved_until_us is not None)
    assert (new.by is not None) == (new.status in (S.SHELVED, S.OUT_OF_SERVICE))
    assert (new.reason is not None) == (new.status in (S.SHELVED, S.SUPPRESSED, S.OUT_OF_SERVICE))
    assert new.since_us == (state.since_us if new.status is state.status else now_us)
    assert (events == ()) == (new == state)
    for e in events:
        assert (e.old, e.new, e.at_us) == (state.status, new.status, now_us)
        assert e.annunciate == (e.action in (Action.RAISED, Action.RERAISED))
        assert e.resolved == (new.status is S.NORMAL and state.status in ANNUNCIATED)
    if new.status is S.UNACK and state.status is not S.UNACK:
        assert any(e.annunciate for e in events)  # never unacknowledged without telling anyone
    if isinstance(signal, ConditionOn | ConditionOff):
        assert new.condition == isinstance(signal, ConditionOn)
    return new


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_invariants_hold_over_random_signal_sequences(seed: int) -> None:
    rng = random.Random(seed)
    for latching in (False, True):
        state, now_us, seen = AlarmState(latching=latching), 0, set()
        for _ in range(10_000):
            now_us += rng.choice([0, 1, 60_000_000, HOUR_US])
            state = check_step(state, random_signal(rng, now_us), now_us)
            seen.add(key_of(state))
        assert seen == {k for k in reachable() if k[3] == latching}  # the walk went everywhere
