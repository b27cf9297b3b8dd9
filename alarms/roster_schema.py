"""rosters.yaml's schema: the keys of a desk and their defaults (``alarms.roster_load`` reads
it and adds the cross-reference rules of ``alarms.roster_checks``). Times are local HH:MM
strings, dates YYYY-MM-DD; unknown keys are errors.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from core.plant import Code, Phone

__all__ = [
    "DEFAULT_SHIFTS",
    "DEFAULT_TIMEZONE",
    "FILE_NAME",
    "DeskIn",
    "OverrideIn",
    "PersonIn",
    "RotationIn",
    "ShiftIn",
    "SwapIn",
]

FILE_NAME = "rosters.yaml"
DEFAULT_TIMEZONE = "Asia/Shanghai"
DEFAULT_SHIFTS = (
    {"name": "DAY", "start": "08:00", "end": "20:00"},
    {"name": "NIGHT", "start": "20:00", "end": "08:00"},
)


def _hhmm(v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool):  # YAML 1.1 reads an unquoted 20:00 as 1200
        raise ValueError(
            f'not a time HH:MM: quote it ("{v // 60:02d}:{v % 60:02d}"), unquoted YAML reads it as {v}'
        )
    if not isinstance(v, str) or len(v) != 5 or v[2] != ":" or not (v[:2] + v[3:]).isdigit():
        raise ValueError(f"{v!r} is not a time HH:MM (00:00 to 23:59)")
    if int(v[:2]) > 23 or int(v[3:]) > 59:
        raise ValueError(f"{v!r} is not a time HH:MM (00:00 to 23:59)")
    return int(v[:2]) * 60 + int(v[3:])


def _date(v: Any) -> Any:
    if isinstance(v, date) and not isinstance(v, datetime):
        return v
    if isinstance(v, str) and len(v) == 10:
        try:
            return date.fromisoformat(v)
        except ValueError:
            pass
    raise ValueError(f"{v!r} is not a date (YYYY-MM-DD)")


Minute = Annotated[int, BeforeValidator(_hhmm)]
Day = Annotated[date, BeforeValidator(_date)]
Names = Annotated[list[str], BeforeValidator(lambda v: [v] if isinstance(v, str) else v)]


def _email(v: str) -> str:
    local, at, domain = v.partition("@")
    if not (local and at and "." in domain) or any(c.isspace() for c in v):
        raise ValueError("not an e-mail address")
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PersonIn(_Strict):
    name: str = Field(min_length=1)
    phone: Phone
    email: Annotated[str, AfterValidator(_email)] | None = None


class ShiftIn(_Strict):
    name: Code
    start: Minute
    end: Minute


class RotationIn(_Strict):
    start: Day
    cycle: list[dict[str, Names]]  # day i of the cycle: shift name -> people or teams


class OverrideIn(_Strict):
    date: Day
    until: Day | None = None  # the last day it applies (inclusive); default: date
    reason: str = ""
    shifts: list[ShiftIn] | None = None  # default: the desk's shifts
    on_duty: dict[str, Names]


class SwapIn(_Strict):
    date: Day  # the duty day (a night shift's: the date it starts on)
    shift: str
    absent: str
    cover: str


class DeskIn(_Strict):
    name: str = ""
    enterprise: str | None = None
    county: str | None = None
    city: str | None = None
    timezone: str = DEFAULT_TIMEZONE
    people: dict[str, PersonIn] = Field(min_length=1)
    teams: dict[str, Names] = {}
    shifts: list[ShiftIn] = Field(default=[ShiftIn.model_validate(s) for s in DEFAULT_SHIFTS], min_length=1)
    rotation: RotationIn
    overrides: list[OverrideIn] = []
    swaps: list[SwapIn] = []
