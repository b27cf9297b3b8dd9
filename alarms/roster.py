"""Who is on duty: each desk's shift calendar (an enterprise's 值班室, a county's or city's
应急管理局 duty desk) and each hazard source's 包保 trio, as contacts with phone and e-mail.

Pure: the time asked about is an argument (UTC µs), never the clock. A desk's duty day starts
at its first shift's handover (local wall time, Asia/Shanghai unless configured) and its shifts
cover the day without gap or overlap (``alarms.roster_load`` refuses any other calendar).
Phone numbers and e-mail addresses never appear in ``repr``/``str`` of these objects: they are
masked (138****1234), so logging one cannot leak them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from core.clock import from_datetime, to_datetime
from core.plant import HazardSource, Plant
from core.redact import mask_email, mask_phone

__all__ = [
    "DAY_MIN",
    "BaoBaoRole",
    "Contact",
    "DayPlan",
    "Desk",
    "DeskLevel",
    "OnDuty",
    "Rosters",
    "Shift",
    "mask_email",
    "mask_phone",
]

DAY_MIN = 24 * 60


class DeskLevel(StrEnum):
    ENTERPRISE = "ENTERPRISE"  # 企业值班室
    COUNTY = "COUNTY"  # 县级应急管理局值班
    CITY = "CITY"  # 市级应急管理局值班


class BaoBaoRole(StrEnum):
    PRINCIPAL = "PRINCIPAL"  # 主要负责人
    TECHNICAL = "TECHNICAL"  # 技术负责人
    OPERATIONAL = "OPERATIONAL"  # 操作负责人


@dataclass(frozen=True, repr=False)
class Contact:
    """One person to tell. ``key``: the roster's person key, or ``HS_KEY.principal`` for 包保."""

    key: str
    name: str
    phone: str
    email: str | None = None
    role: BaoBaoRole | None = None  # set for a hazard source's 包保 trio

    def __repr__(self) -> str:
        email = f", email={mask_email(self.email)!r}" if self.email else ""
        role = f", role={self.role.value}" if self.role else ""
        return f"Contact({self.key!r}, {self.name!r}, phone={mask_phone(self.phone)!r}{email}{role})"

    def __str__(self) -> str:
        return f"{self.name} {mask_phone(self.phone)}"


@dataclass(frozen=True)
class Shift:
    name: str
    start_min: int  # local wall-clock minute of the day
    end_min: int  # equal to start_min: a 24-hour shift

    @property
    def length_min(self) -> int:
        return (self.end_min - self.start_min) % DAY_MIN or DAY_MIN


@dataclass(frozen=True)
class DayPlan:
    """One duty day's shifts and who works each (person keys, teams expanded)."""

    shifts: tuple[Shift, ...]
    on_duty: Mapping[str, tuple[str, ...]]
    reason: str = ""  # an override's reason (春节, 国庆)


@dataclass(frozen=True)
class OnDuty:
    person: Contact  # its repr masks the phone
    desk: str
    shift: str
    start_us: int  # UTC µs, the shift's start handover
    end_us: int  # UTC µs, the next handover
    note: str = ""  # "春节", "covers 李四 (swap)"


@dataclass(frozen=True, repr=False)
class Desk:
    code: str
    name: str
    level: DeskLevel
    subject: str  # the enterprise code, county or city the desk answers for
    tz: ZoneInfo
    people: Mapping[str, Contact]
    shifts: tuple[Shift, ...]  # the first one starts the duty day
    cycle_start: date
    cycle: tuple[Mapping[str, tuple[str, ...]], ...]  # day i of the rotation: shift -> people
    overrides: Mapping[date, DayPlan] = field(default_factory=dict)
    swaps: Mapping[tuple[date, str], tuple[tuple[str, str], ...]] = field(
        default_factory=dict
    )  # (absent, cover)

    def __repr__(self) -> str:
        return f"Desk({self.code!r}, {self.level.value} {self.subject}, {len(self.people)} people)"

    @property
    def day_start_min(self) -> int:
        return self.shifts[0].start_min

    def plan(self, day: date) -> DayPlan:
        """Duty day ``day`` (the local date its first handover falls on): the rotation's plan,
        an override's in its place, then the swaps of that day."""
        regular = self.cycle[(day - self.cycle_start).days % len(self.cycle)]
        override = self.overrides.get(day)
        if override is None:
            plan = DayPlan(self.shifts, regular)
        else:
            plan = DayPlan(override.shifts, {**regular, **override.on_duty}, override.reason)
        if not any((day, s.name) in self.swaps for s in plan.shifts):
            return plan
        on_duty = dict(plan.on_duty)
        for s in plan.shifts:
            for absent, cover in self.swaps.get((day, s.name), ()):
                on_duty[s.name] = tuple(dict.fromkeys(cover if p == absent else p for p in on_duty[s.name]))
        return DayPlan(plan.shifts, on_duty, plan.reason)

    def on_duty(self, at_us: int) -> list[OnDuty]:
        local = to_datetime(at_us).astimezone(self.tz)
        minute = local.hour * 60 + local.minute
        day = local.date() - timedelta(days=1 if minute < self.day_start_min else 0)
        into_day = (minute - self.day_start_min) % DAY_MIN
        plan = self.plan(day)
        offset = 0  # the plan's shifts, in order from the day's start (roster_load checked they tile it)
        for s in sorted(plan.shifts, key=lambda s: (s.start_min - self.day_start_min) % DAY_MIN):
            offset = (s.start_min - self.day_start_min) % DAY_MIN
            if offset <= into_day < offset + s.length_min:
                break
        else:  # pragma: no cover — a validated desk's shifts cover the day
            return []
        start_us = self._instant(day, offset)
        end_us = self._instant(day, offset + s.length_min)
        swapped = {cover: absent for absent, cover in self.swaps.get((day, s.name), ())}
        out = []
        for key in plan.on_duty[s.name]:
            note = plan.reason
            if key in swapped:
                covered = self.people[swapped[key]].name
                note = f"{note}; covers {covered} (swap)" if note else f"covers {covered} (swap)"
            out.append(OnDuty(self.people[key], self.code, s.name, start_us, end_us, note))
        return out

    def _instant(self, day: date, minutes_into_day: int) -> int:
        """UTC µs of the wall-clock time ``minutes_into_day`` after duty day ``day``'s start."""
        wall = datetime.combine(day, time(), self.tz) + timedelta(
            minutes=self.day_start_min + minutes_into_day
        )
        return from_datetime(wall)


class Rosters:
    """Every desk's calendar and the plant's 包保 trios; built by ``alarms.roster_load``."""

    def __init__(self, desks: Mapping[str, Desk], plant: Plant) -> None:
        self._desks = dict(desks)
        self._hazard_sources = {f"{e.code}.{h.code}": h for e in plant.enterprises for h in e.hazard_sources}
        self._by_subject = {(d.level, d.subject): d for d in self._desks.values()}

    def __repr__(self) -> str:
        return f"Rosters({', '.join(self._desks)})"

    def desks(self) -> list[Desk]:
        return list(self._desks.values())

    def desk(self, code: str) -> Desk:
        """The desk ``code``; KeyError naming the known ones."""
        try:
            return self._desks[code]
        except KeyError:
            raise KeyError(f"unknown desk {code!r} (known: {', '.join(self._desks)})") from None

    def desk_of(self, level: DeskLevel, subject: str) -> Desk | None:
        """The duty desk of an enterprise (its code), a county or a city (names as in the plant)."""
        return self._by_subject.get((level, subject))

    def on_duty(self, desk: str, at_us: int) -> list[OnDuty]:
        """Who is on duty at desk ``desk`` at ``at_us`` (UTC µs), in roster order."""
        return self.desk(desk).on_duty(at_us)

    def baobao(self, hazard_source: HazardSource | str) -> list[Contact]:
        """The 包保 trio (principal, technical, operational) of a hazard source, given as the
        plant's object or its key ``ENTERPRISE.HAZARD_SOURCE``; empty when it names none."""
        if isinstance(hazard_source, str):
            if hazard_source not in self._hazard_sources:
                raise KeyError(f"unknown hazard source {hazard_source!r}")
            key, hs = hazard_source, self._hazard_sources[hazard_source]
        else:
            hs = hazard_source
            key = next((k for k, v in self._hazard_sources.items() if v is hs), hs.code)
        if hs.baobao is None:
            return []
        trio = hs.baobao
        people = [
            (BaoBaoRole.PRINCIPAL, trio.principal),
            (BaoBaoRole.TECHNICAL, trio.technical),
            (BaoBaoRole.OPERATIONAL, trio.operational),
        ]
        return [Contact(f"{key}.{r.value.lower()}", p.name, p.phone, None, r) for r, p in people]
