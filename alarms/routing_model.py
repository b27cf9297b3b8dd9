"""The compiled route tree and escalation plan (``alarms.routing`` builds them from routes.yaml).

Pure data and pure functions: matching reads only the labels it is given, and quiet hours only
the ``now_us`` (UTC µs) passed in. Matching follows Prometheus Alertmanager: depth-first, the
first matching child wins unless it has ``continue``, a route none of whose children match is
itself the match. A missing label matches as "" (Alertmanager's rule).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from alarms.model import Priority
from alarms.roster import BaoBaoRole, DeskLevel
from core.plant import Detector, Plant

__all__ = [
    "LABELS",
    "Channel",
    "EscalationPlan",
    "GroupOptions",
    "MatchedRoute",
    "Matcher",
    "QuietHours",
    "Receiver",
    "Route",
    "RouteTree",
    "Step",
    "Target",
    "TargetKind",
    "gas_classes",
    "with_gas",
]

# what a matcher may name: AlarmDef.labels (an interlock's alarm has "interlock" instead of
# "tag") and the derived gas class (gas_classes)
LABELS = ("enterprise", "county", "hazard_source", "unit", "tag", "interlock", "kind", "priority", "gas")


class TargetKind(StrEnum):
    DUTY_ROOM = "duty_room"  # the enterprise's duty room roster (alarms.roster)
    BAOBAO = "baobao"  # the hazard source's 包保 trio (plant config)
    BUREAU_DESK = "bureau_desk"  # the county's or city's bureau duty desk roster
    MQTT = "mqtt"
    WEBHOOK = "webhook"
    EMAIL = "email"


class Channel(StrEnum):
    SMS = "sms"
    VOICE = "voice"
    MQTT = "mqtt"
    WEBHOOK = "webhook"
    EMAIL = "email"
    CONSOLE = "console"


@dataclass(frozen=True, slots=True)
class Matcher:
    label: str
    op: str  # = != =~ !~
    value: str
    pattern: re.Pattern[str] | None = None  # for =~ and !~: fully anchored, as Alertmanager's

    def matches(self, labels: Mapping[str, str | None]) -> bool:
        got = labels.get(self.label) or ""
        if self.pattern is not None:
            return (self.pattern.fullmatch(got) is not None) == (self.op == "=~")
        return (got == self.value) == (self.op == "=")

    def __str__(self) -> str:
        return f'{self.label}{self.op}"{self.value}"'


@dataclass(frozen=True, slots=True)
class Target:
    kind: TargetKind
    channels: tuple[Channel, ...]
    level: DeskLevel | None = None  # the desk: ENTERPRISE for duty_room, COUNTY or CITY for bureau_desk
    roles: tuple[BaoBaoRole, ...] = ()  # baobao: which of the trio
    address: str | None = None  # webhook URL, e-mail address or MQTT topic prefix, as written


@dataclass(frozen=True, slots=True)
class Receiver:
    name: str
    targets: tuple[Target, ...]


@dataclass(frozen=True, slots=True)
class QuietHours:
    """Low-priority notifications wait from ``start`` to ``end`` local time (may span midnight)."""

    start: time
    end: time
    timezone: str = "Asia/Shanghai"

    def end_us(self, now_us: int) -> int | None:
        """When the quiet hours covering ``now_us`` end (UTC µs), None when they do not cover it."""
        local = datetime.fromtimestamp(now_us / 1e6, UTC).astimezone(ZoneInfo(self.timezone))
        t = local.time().replace(tzinfo=None)
        if self.start <= self.end:
            inside, day = self.start <= t < self.end, local.date()
        else:  # over midnight: 22:00-07:00
            inside = t >= self.start or t < self.end
            day = local.date() + timedelta(days=1) if t >= self.start else local.date()
        if not inside:
            return None
        end = datetime.combine(day, self.end, tzinfo=local.tzinfo)
        return int(end.timestamp()) * 1_000_000


@dataclass(frozen=True, slots=True)
class GroupOptions:
    """Options a route inherits from its parent unless it sets them (Alertmanager's defaults
    are for metrics; these are for alarms: nothing waits unless configured)."""

    group_wait_s: int = 0
    group_interval_s: int = 60
    repeat_interval_s: int = 4 * 3600
    send_resolved: bool = True
    quiet_hours: QuietHours | None = None
    escalation: str = "default"


@dataclass(frozen=True, slots=True)
class Route:
    path: str  # where in routes.yaml: route.routes[1].routes[0]
    receiver: str
    matchers: tuple[Matcher, ...]
    options: GroupOptions  # effective (inherited and overridden)
    continue_: bool = False
    routes: tuple[Route, ...] = ()

    def match(self, labels: Mapping[str, str | None]) -> list[Route]:
        if not all(m.matches(labels) for m in self.matchers):
            return []
        found: list[Route] = []
        for child in self.routes:
            hit = child.match(labels)
            found += hit
            if hit and not child.continue_:
                break
        return found or [self]


@dataclass(frozen=True, slots=True)
class Step:
    after_s: int  # since the alarm was raised, while it stays unacknowledged
    receivers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EscalationPlan:
    """One policy: steps per priority, ``after_s`` strictly increasing."""

    name: str
    by_priority: Mapping[Priority, tuple[Step, ...]]

    def steps(self, priority: Priority | str) -> list[Step]:
        return list(self.by_priority.get(Priority(priority), ()))


@dataclass(frozen=True, slots=True)
class MatchedRoute:
    route: Route
    receiver: Receiver
    escalation: EscalationPlan

    @property
    def options(self) -> GroupOptions:
        return self.route.options

    def schedule(self, priority: Priority | str) -> list[Step]:
        """Who is told when: the route's receiver at once (with the policy's steps at 0 s),
        then the policy's later steps, each naming a receiver once."""
        first, seen = [self.receiver.name], {self.receiver.name}
        later: list[Step] = []
        for step in self.escalation.steps(priority):
            if step.after_s == 0:
                first += [r for r in step.receivers if r not in seen]
                seen.update(step.receivers)
            else:
                later.append(step)
        return [Step(0, tuple(first)), *later]

    def held_until_us(self, priority: Priority | str, now_us: int) -> int | None:
        """When a notification of ``priority`` at ``now_us`` may go out, if quiet hours hold
        it (None: now). Only low priority is ever held (compile refuses anything else)."""
        quiet = self.options.quiet_hours
        if quiet is None or Priority(priority) != Priority.LOW:
            return None
        return quiet.end_us(now_us)


@dataclass(frozen=True)
class RouteTree:
    root: Route
    receivers: Mapping[str, Receiver]
    escalations: Mapping[str, EscalationPlan]
    file: str = ""

    def match(self, labels: Mapping[str, str | None]) -> list[MatchedRoute]:
        """The routes an alarm with ``labels`` takes (at least the root)."""
        return [
            MatchedRoute(r, self.receivers[r.receiver], self.escalations[r.options.escalation])
            for r in self.root.match(labels)
        ]

    def routes(self) -> list[Route]:
        out, todo = [], [self.root]
        while todo:
            r = todo.pop()
            out.append(r)
            todo.extend(reversed(r.routes))
        return out


def gas_classes(plant: Plant) -> dict[str, str]:
    """Tag key -> the derived ``gas`` label: toxic, combustible or oxygen for a gas detector's
    tag; ``with_gas`` gives every other alarm "none"."""
    return {
        t.key: Detector(t.gas.detector).value.lower()
        for t in plant.tags()
        if t.gas is not None and t.gas.detector is not None
    }


def with_gas(labels: Mapping[str, str | None], classes: Mapping[str, str]) -> dict[str, str | None]:
    """An alarm's labels (AlarmDef.labels, OutboxRow.labels) with its derived ``gas`` label."""
    return {**labels, "gas": classes.get(labels.get("tag") or "", "none")}
