"""rosters.yaml -> ``alarms.roster.Rosters``, refusing a malformed file with every problem at
its file:line (ConfigError): unknown keys, desks, people, shifts; times not HH:MM; shifts that
overlap or leave part of the day uncovered; rotations without people; swaps of shifts that do
not exist; bad phone numbers (core.plant's check; the error masks the number); not-dates.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)

from alarms.roster import Contact, DayPlan, Desk, DeskLevel, Rosters, mask_phone
from alarms.roster_checks import Checker
from core.errors import ConfigError, ConfigIssue
from core.plant import Code, Phone, Plant
from core.yaml_loader import PathKey, SourceMap, load_document

__all__ = ["DEFAULT_SHIFTS", "DEFAULT_TIMEZONE", "FILE_NAME", "load_rosters"]

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


class _Person(_Strict):
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
    people: dict[str, _Person] = Field(min_length=1)
    teams: dict[str, Names] = {}
    shifts: list[ShiftIn] = Field(default=[ShiftIn.model_validate(s) for s in DEFAULT_SHIFTS], min_length=1)
    rotation: RotationIn
    overrides: list[OverrideIn] = []
    swaps: list[SwapIn] = []


_DESK = TypeAdapter(DeskIn)
_CODE = TypeAdapter(Code)


def load_rosters(path: Path, plant: Plant) -> Rosters:
    """The rosters of ``path`` for ``plant`` (whose enterprises, counties and cities the desks
    answer for); ConfigError listing every problem at its file:line."""
    loaded = load_document(path)
    issues = list(loaded.issues)
    src = loaded.source
    data = loaded.data if loaded.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError([*issues, src.issue((), "a rosters file is a mapping with desks:")])
    for key in data:
        if key != "desks":
            issues.append(src.issue((key,), "unknown key (see the rosters reference; known: desks)"))
    desks_in = data.get("desks")
    if not isinstance(desks_in, dict) or not desks_in:
        issues.append(src.issue(("desks",), "desks: a mapping of desk code -> desk, at least one"))
        raise ConfigError(issues)
    desks: dict[str, Desk] = {}
    for code, raw in desks_in.items():
        at: PathKey = ("desks", code)
        try:
            _CODE.validate_python(code)
        except ValidationError:
            issues.append(src.issue(at, "a desk code is letters, digits, _ and - (e.g. LHJH, XIAOYI_COUNTY)"))
        try:
            desk_in = _DESK.validate_python(raw)
        except ValidationError as exc:
            issues.extend(_pydantic_issues(exc, src, at))
            continue
        desk = _build(str(code), desk_in, at, src, plant, issues)
        if desk is not None:
            desks[str(code)] = desk
    seen: dict[tuple[DeskLevel, str], str] = {}
    for code, desk in desks.items():
        other = seen.setdefault((desk.level, desk.subject), code)
        if other != code:
            issues.append(src.issue(("desks", code), f"{desk.subject} already has desk {other}"))
    if issues:
        raise ConfigError(issues)
    return Rosters(desks, plant)


def _pydantic_issues(exc: ValidationError, src: SourceMap, at: PathKey) -> list[ConfigIssue]:
    out = []
    for e in exc.errors(include_url=False):
        where = (*at, *(p for p in e["loc"] if p != "[key]"))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (see the rosters reference)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif where[-1] == "phone" and isinstance(e.get("input"), str):  # never echo a number whole
            msg = f"{mask_phone(e['input'])} is not a mainland mobile (1xxxxxxxxxx) or landline (0xxx-xxxxxxx) number"
        out.append(src.issue(where, msg))
    return out


def _build(
    code: str, d: DeskIn, at: PathKey, src: SourceMap, plant: Plant, issues: list[ConfigIssue]
) -> Desk | None:
    check = Checker(d, at, src, issues)
    subject = check.subject(plant)
    try:
        tz = ZoneInfo(d.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        issues.append(
            src.issue((*at, "timezone"), f"unknown time zone {d.timezone!r} (e.g. {DEFAULT_TIMEZONE})")
        )
        tz = ZoneInfo(DEFAULT_TIMEZONE)
    shifts = check.shifts(d.shifts, (*at, "shifts"), None)
    cycle = check.rotation()
    overrides: dict[date, DayPlan] = {}
    for i, o in enumerate(d.overrides):
        plan = check.override(o, (*at, "overrides", i), shifts)
        last = o.until or o.date
        if last < o.date:
            issues.append(src.issue((*at, "overrides", i, "until"), f"until {last} is before date {o.date}"))
        day = o.date
        while day <= last and plan is not None:
            if day in overrides:
                issues.append(src.issue((*at, "overrides", i), f"{day} already has an override"))
                break
            overrides[day] = plan
            day += timedelta(days=1)
    if subject is None or shifts is None or cycle is None:
        return None
    people = {k: Contact(k, p.name, p.phone, p.email) for k, p in d.people.items()}
    level, name = subject
    desk = Desk(code, d.name or code, level, name, tz, people, shifts, d.rotation.start, cycle, overrides)
    swaps: dict[tuple[date, str], list[tuple[str, str]]] = {}
    for i, s in enumerate(d.swaps):
        if check.swap(s, (*at, "swaps", i), desk):
            swaps.setdefault((s.date, s.shift), []).append((s.absent, s.cover))
    return Desk(
        code, desk.name, level, name, tz, people, shifts, d.rotation.start, cycle, overrides,
        {k: tuple(v) for k, v in swaps.items()},
    )  # fmt: skip
