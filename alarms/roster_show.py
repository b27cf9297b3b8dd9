"""Rosters as text for people (``hazardwatch rosters show``): who is on duty at each desk at a
moment, shift times in the desk's local time, phone numbers masked."""

from __future__ import annotations

from alarms.roster import Rosters
from core.clock import to_datetime

__all__ = ["describe"]


def describe(rosters: Rosters, at_us: int, desk: str | None = None) -> list[str]:
    """One line per desk (only ``desk`` if given; KeyError naming the known ones if unknown):
    code, name, what it answers for, the shift with its local start and end, who is on duty."""
    desks = [rosters.desk(desk)] if desk is not None else rosters.desks()
    lines = []
    for d in desks:
        duty = d.on_duty(at_us)
        start, end = (to_datetime(t).astimezone(d.tz) for t in (duty[0].start_us, duty[0].end_us))
        people = ", ".join(f"{o.person}" + (f" ({o.note})" if o.note else "") for o in duty)
        lines.append(
            f"{d.code}\t{d.name}\t{d.level.value} {d.subject}\t{duty[0].shift} "
            f"{start:%Y-%m-%d %H:%M}–{end:%Y-%m-%d %H:%M} {start:%Z}\t{people}"
        )
    return lines
