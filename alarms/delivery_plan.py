"""Planning: one outbox row (an alarm event) into the deliveries it needs, each with when it is due.

Pure: reads the route tree, the rosters and the plant it is given, and the time of the event;
nothing else. The dispatcher (alarms.dispatcher) stores the plan in the transaction that marks
the outbox row planned, and decides at each delivery's due time whether it still goes out
(acknowledged, cleared, shelved, inhibited) — a plan is what *would* be sent.

- **Raised / reraised**: for every matched route, each escalation step's receivers (step 0 at
  once, the policy's later steps after their delay while unacknowledged), each receiver's
  targets, the people the target reaches at the step's due time (roster shifts, 包保 trio) and
  each of the target's channels. Due: event time + step delay + the route's group_wait, then
  held to the end of quiet hours (low priority only). Voice is planned for critical alarms
  only, ``voice_after_s`` after the step (a call for what the SMS did not get acknowledged).
  Then the first step's people again every ``repeat_interval`` (at most ``MAX_REPEATS`` times,
  within a day), steps numbered after the escalation's; like every later step, a repeat is
  stopped once the alarm is acknowledged or cleared.
- **Resolved**: when the route sends resolved, to whoever was told of the alarm's raise
  (``told``), on the same channels except voice.
- A person target reaching nobody (no desk, nobody on duty, no e-mail address) is reported in
  ``Plan.gaps``: the dispatcher journals and logs it, because a route that reaches nobody is a
  configuration problem somebody must fix.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from alarms.model import Priority
from alarms.roster import DeskLevel, Rosters
from alarms.routing_model import Channel, RouteTree, Step, Target, TargetKind, with_gas
from core.plant import Plant

__all__ = ["Event", "Plan", "Planned", "Told", "delivery_key", "plan"]

US = 1_000_000
# channels a person is reached on by phone number, by e-mail address
_PHONE = (Channel.SMS, Channel.VOICE, Channel.CONSOLE)
_MACHINE = (TargetKind.MQTT, TargetKind.WEBHOOK)
MAX_REPEATS = 3


@dataclass(frozen=True, slots=True)
class Event:
    """An outbox row (``notification``) with the time of the journal row it announces."""

    seq: int
    n: int
    alarm_key: str
    event: str  # raised | reraised | resolved
    priority: str
    labels: Mapping[str, str | None]
    message_zh: str
    message_en: str
    at_us: int
    value: float | None = None
    limit: float | None = None


@dataclass(frozen=True, slots=True)
class Planned:
    key: str  # idempotency key
    step: int
    receiver: str
    target: TargetKind
    channel: Channel
    person: str | None
    recipient: str
    due_us: int
    group_interval_s: int


@dataclass(frozen=True, slots=True)
class Told:
    """Somebody a raise reached or will reach (its delivery sent, or still to go), to be told of
    the resolve."""

    receiver: str
    target: TargetKind
    channel: Channel
    person: str | None
    recipient: str
    group_interval_s: int
    due_us: int = 0  # when the raise's delivery is (or was) due: the resolve is not due before it


@dataclass
class Plan:
    deliveries: list[Planned] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)  # "step 1 county_desk: nobody on duty at COUNTY desk"


def delivery_key(seq: int, n: int, step: int, channel: str, recipient: str) -> str:
    """The idempotency key of one delivery: stable across crashes and short enough for every
    provider's OutId / SessionContext (the recipient enters as a hash: no phone number in it)."""
    who = hashlib.sha256(recipient.encode()).hexdigest()[:12]
    return f"hw-{seq}-{n}-{step}-{channel}-{who}"


def plan(
    event: Event,
    tree: RouteTree,
    rosters: Rosters,
    plant: Plant,
    gas: Mapping[str, str],
    *,
    told: Sequence[Told] = (),
    voice_after_s: int = 60,
) -> Plan:
    out = Plan()
    seen: set[str] = set()

    def add(
        step: int,
        receiver: str,
        target: TargetKind,
        channel: Channel,
        person: str | None,
        recipient: str,
        due_us: int,
        interval_s: int,
    ) -> None:
        key = delivery_key(event.seq, event.n, step, channel.value, recipient)
        if key not in seen:  # one person in two targets, or two routes to one receiver: told once
            seen.add(key)
            out.deliveries.append(
                Planned(key, step, receiver, target, channel, person, recipient, due_us, interval_s)
            )

    matched = tree.match(with_gas(event.labels, gas))
    if event.event == "resolved":
        resolving = [m for m in matched if m.options.send_resolved]
        if resolving:
            wait = max(m.options.group_wait_s for m in resolving) * US
            for t in told:
                if t.channel != Channel.VOICE:
                    due = max(event.at_us + wait, t.due_us)
                    add(0, t.receiver, t.target, t.channel, t.person, t.recipient, due, t.group_interval_s)
        return out
    critical = event.priority == Priority.CRITICAL.value
    for m in matched:
        steps = m.schedule(event.priority)
        escalation = len(steps)
        steps += _repeats(steps[0], m.options.repeat_interval_s)
        for k, step in enumerate(steps):
            due = event.at_us + (step.after_s + m.options.group_wait_s) * US
            held = m.held_until_us(event.priority, due)
            due = due if held is None else max(due, held)
            for name in step.receivers:
                for target in tree.receivers[name].targets:
                    if k >= escalation and target.kind in _MACHINE:
                        continue  # a repeat is for people: systems hold the alarm's state already
                    people = _reach(target, event, rosters, plant, due)
                    if isinstance(people, str):
                        out.gaps.append(f"step {k} {name}: {people}")
                        continue
                    for person, phone, email in people:
                        for channel in target.channels:
                            if channel == Channel.VOICE and not critical:
                                continue
                            address = _address(target, channel, phone, email)
                            if address is None:
                                out.gaps.append(f"step {k} {name}: {person} has no e-mail address")
                                continue
                            at = due + voice_after_s * US if channel == Channel.VOICE else due
                            add(
                                k, name, target.kind, channel, person, address, at, m.options.group_interval_s
                            )
    return out


def _repeats(first: Step, interval_s: int) -> list[Step]:
    """The first step again every ``repeat_interval`` while unacknowledged: at most ``MAX_REPEATS``
    times and within a day (an alarm nobody acknowledges for a day is a matter for the bureau)."""
    if interval_s <= 0:
        return []
    return [
        Step(r * interval_s, first.receivers) for r in range(1, MAX_REPEATS + 1) if r * interval_s <= 86400
    ]


def _address(target: Target, channel: Channel, phone: str | None, email: str | None) -> str | None:
    if phone is None:  # a machine target: its address
        return target.address or ""
    if channel in _PHONE:
        return phone
    return email if channel == Channel.EMAIL else phone


def _reach(
    target: Target, event: Event, rosters: Rosters, plant: Plant, at_us: int
) -> list[tuple[str | None, str | None, str | None]] | str:
    """(person key, phone, e-mail) of everyone the target reaches at ``at_us``; a machine target is
    one entry with no person; a string says why nobody is reached."""
    labels = event.labels
    if target.kind in (TargetKind.MQTT, TargetKind.WEBHOOK, TargetKind.EMAIL):
        if target.kind == TargetKind.EMAIL:
            return [(None, None, target.address)]
        return [(None, None, None)]
    if target.kind == TargetKind.BAOBAO:
        hs = f"{labels.get('enterprise') or ''}.{labels.get('hazard_source') or ''}"
        try:
            trio = [c for c in rosters.baobao(hs) if c.role in target.roles]
        except KeyError:
            return f"no hazard source {hs} in the plant"
        return [(c.key, c.phone, c.email) for c in trio] or f"no 包保 responsible for {hs}"
    level = target.level or DeskLevel.ENTERPRISE
    enterprise = next((e for e in plant.enterprises if e.code == labels.get("enterprise")), None)
    subject = {
        DeskLevel.ENTERPRISE: labels.get("enterprise"),
        DeskLevel.COUNTY: labels.get("county") or (enterprise.county if enterprise else None),
        DeskLevel.CITY: enterprise.city if enterprise else None,
    }[level]
    desk = rosters.desk_of(level, subject or "")
    if desk is None:
        return f"no {level.value} duty desk for {subject or '?'}"
    on = desk.on_duty(at_us)
    return [(d.person.key, d.person.phone, d.person.email) for d in on] or (
        f"nobody on duty at desk {desk.code}"
    )
