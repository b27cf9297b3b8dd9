"""The cross-reference rules of one rosters.yaml desk (``alarms.roster_load``): who it answers
for, people and teams that exist, shifts that tile the 24-hour day from its first handover,
rotations and overrides that staff every shift, swaps of shifts and people that exist.
Every problem is appended to the issue list at its document path; nothing is raised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from alarms.roster import DAY_MIN, DayPlan, Desk, DeskLevel, Shift
from core.errors import ConfigIssue
from core.plant import Plant
from core.yaml_loader import PathKey, SourceMap

if TYPE_CHECKING:
    from alarms.roster_schema import DeskIn, OverrideIn, ShiftIn, SwapIn

__all__ = ["Checker", "hhmm"]


def hhmm(minute: int) -> str:
    return f"{minute // 60 % 24:02d}:{minute % 60:02d}" if minute != DAY_MIN else "24:00"


class Checker:
    def __init__(self, desk: DeskIn, at: PathKey, src: SourceMap, issues: list[ConfigIssue]) -> None:
        self.d, self.at, self.src, self.issues = desk, at, src, issues
        self.shift_names: set[str] = {s.name for s in desk.shifts}
        for team, members in desk.teams.items():
            if team in desk.people:
                self.error(("teams", team), f"{team} is both a team and a person")
            if not members:
                self.error(("teams", team), "a team without people")
            for i, m in enumerate(members):
                if m not in desk.people:
                    self.error(("teams", team, i), self._unknown(m, teams=False))

    def error(self, where: PathKey, message: str) -> None:
        self.issues.append(self.src.issue((*self.at, *where), message))

    def _unknown(self, name: str, teams: bool = True) -> str:
        known = [*self.d.people, *(self.d.teams if teams else ())]
        return f"unknown person{' or team' if teams else ''} {name!r} (known: {', '.join(known)})"

    def subject(self, plant: Plant) -> tuple[DeskLevel, str] | None:
        given = [(lvl, v) for lvl, v in ((DeskLevel.ENTERPRISE, self.d.enterprise), (DeskLevel.COUNTY, self.d.county),
                                         (DeskLevel.CITY, self.d.city)) if v is not None]  # fmt: skip
        if len(given) != 1:
            self.error((), "a desk answers for exactly one of enterprise (its code), county or city")
            return None
        level, name = given[0]
        known = {
            DeskLevel.ENTERPRISE: [e.code for e in plant.enterprises],
            DeskLevel.COUNTY: sorted({e.county for e in plant.enterprises}),
            DeskLevel.CITY: sorted({e.city for e in plant.enterprises if e.city}),
        }[level]
        if name not in known:
            self.error(
                (level.value.lower(),),
                f"unknown {level.value.lower()} {name!r} in the plant (known: {', '.join(known)})",
            )
            return None
        return level, name

    def names(self, names: Sequence[str], where: PathKey) -> tuple[str, ...] | None:
        """Person keys of ``names`` (people or teams, teams expanded); None if any is unknown or
        none is given (a shift nobody works)."""
        if not names:
            self.error(where, "no one on duty: name at least one person or team")
            return None
        out: list[str] = []
        for i, n in enumerate(names):
            if n in self.d.teams:
                out.extend(self.d.teams[n])
            elif n in self.d.people:
                out.append(n)
            else:
                self.error((*where, i), self._unknown(n))
                return None
        return tuple(dict.fromkeys(out))

    def shifts(
        self, given: Sequence[ShiftIn], where: PathKey, day_start: int | None
    ) -> tuple[Shift, ...] | None:
        """The shifts, if they tile the day from the first one's start (the desk's day start
        ``day_start`` for an override's) with no gap and no overlap."""
        before = len(self.issues)
        shifts = tuple(Shift(s.name, s.start, s.end) for s in given)
        if not shifts:
            self.error(where, "no shifts: the desk must be covered 24 h")
            return None
        names: dict[str, int] = {}
        for i, s in enumerate(shifts):
            if names.setdefault(s.name, i) != i:
                self.error((*where, i, "name"), f"shift {s.name} is defined twice (also [{names[s.name]}])")
        start = shifts[0].start_min
        if day_start is not None and start != day_start:
            self.error(
                (*where, 0, "start"),
                f"the day's first shift must start at the desk's handover {hhmm(day_start)}",
            )
        placed = sorted(((s.start_min - start) % DAY_MIN, i, s) for i, s in enumerate(shifts))
        cursor = 0
        for offset, i, s in placed:
            if offset > cursor:
                self.error((*where, i), f"leaves {hhmm(start + cursor)}–{hhmm(start + offset)} uncovered")
            elif offset < cursor:
                self.error(
                    (*where, i),
                    f"{s.name} overlaps the shift before it ({hhmm(start + offset)}–{hhmm(start + cursor)})",
                )
            cursor = max(cursor, offset + s.length_min)
        if cursor < DAY_MIN:
            self.error(
                where,
                f"leaves {hhmm(start + cursor)}–{hhmm(start)} uncovered (the day runs from {hhmm(start)})",
            )
        elif cursor > DAY_MIN:
            self.error(
                (*where, placed[-1][1]),
                f"overlaps {shifts[0].name} ({hhmm(start)}–{hhmm(start + cursor - DAY_MIN)})",
            )
        return shifts if len(self.issues) == before else None

    def assignments(self, given: Mapping[str, Sequence[str]], where: PathKey, shift_names: set[str],
                    complete: bool) -> dict[str, tuple[str, ...]] | None:  # fmt: skip
        """Shift -> person keys; every shift staffed when ``complete``."""
        before = len(self.issues)
        out: dict[str, tuple[str, ...]] = {}
        for shift, names in given.items():
            if shift not in shift_names:
                self.error(
                    (*where, shift), f"unknown shift {shift!r} (known: {', '.join(sorted(shift_names))})"
                )
            elif (keys := self.names(names, (*where, shift))) is not None:
                out[shift] = keys
        missing = sorted(shift_names - set(given)) if complete else []
        if missing:
            self.error(where, f"no one on duty in {', '.join(missing)}")
        return out if len(self.issues) == before else None

    def rotation(self) -> tuple[Mapping[str, tuple[str, ...]], ...] | None:
        where: PathKey = ("rotation", "cycle")
        if not self.d.rotation.cycle:
            self.error(where, "a rotation without people: list at least one day (shift -> people or team)")
            return None
        days = [
            self.assignments(day, (*where, i), self.shift_names, True)
            for i, day in enumerate(self.d.rotation.cycle)
        ]
        return tuple(d for d in days if d is not None) if all(d is not None for d in days) else None

    def override(self, o: OverrideIn, where: PathKey, regular: tuple[Shift, ...] | None) -> DayPlan | None:
        if o.shifts is None:
            shifts, names = regular, self.shift_names
        else:
            day_start = regular[0].start_min if regular else None
            shifts, names = self.shifts(o.shifts, (*where, "shifts"), day_start), {s.name for s in o.shifts}
        on_duty = self.assignments(o.on_duty, (*where, "on_duty"), names, o.shifts is not None)
        if shifts is None or on_duty is None:
            return None
        return DayPlan(shifts, on_duty, o.reason)

    def swap(self, s: SwapIn, where: PathKey, desk: Desk) -> bool:
        before = len(self.issues)
        plan = desk.plan(s.date)
        if s.shift not in plan.on_duty:
            known = ", ".join(x.name for x in plan.shifts)
            self.error((*where, "shift"), f"no shift {s.shift!r} on {s.date} (its shifts: {known})")
        elif s.absent not in plan.on_duty[s.shift]:
            on = ", ".join(plan.on_duty[s.shift])
            self.error(
                (*where, "absent"), f"{s.absent!r} is not on duty in {s.shift} on {s.date} (on duty: {on})"
            )
        for key in ("absent", "cover"):
            if getattr(s, key) not in self.d.people:
                self.error((*where, key), self._unknown(getattr(s, key), teams=False))
        if s.absent == s.cover:
            self.error((*where, "cover"), "a person cannot cover their own shift")
        return len(self.issues) == before
