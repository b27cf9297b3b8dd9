"""rosters.yaml -> ``alarms.roster.Rosters``, refusing a malformed file with every problem at
its file:line (ConfigError): unknown keys, desks, people, shifts; times not HH:MM; shifts that
overlap or leave part of the day uncovered; rotations without people; swaps of shifts that do
not exist; bad phone numbers (core.plant's check; the error masks the number); not-dates.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import TypeAdapter, ValidationError

from alarms.roster import Contact, DayPlan, Desk, DeskLevel, Rosters, mask_phone
from alarms.roster_checks import Checker
from alarms.roster_schema import DEFAULT_TIMEZONE, FILE_NAME, DeskIn, OverrideIn, PersonIn, SwapIn
from core.errors import ConfigError, ConfigIssue
from core.plant import Code, Plant
from core.yaml_loader import PathKey, SourceMap, load_document

__all__ = ["FILE_NAME", "load_rosters"]

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
        raw = _sifted(raw, at, src, issues)
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


_STANDIN = {"name": "?", "phone": "13000000000"}  # for a person refused, so references to them resolve
_ITEMS: dict[str, TypeAdapter[Any]] = {
    "people": TypeAdapter(PersonIn),
    "overrides": TypeAdapter(OverrideIn),
    "swaps": TypeAdapter(SwapIn),
}


def _sifted(raw: Any, at: PathKey, src: SourceMap, issues: list[ConfigIssue]) -> Any:
    """``raw`` with each malformed person (reported) replaced by a stand-in and each malformed
    override and swap (reported) left out, so one bad phone number or date does not hide the
    desk's other problems. The file is refused either way: these only add issues."""
    if not isinstance(raw, dict):
        return raw
    out = dict(raw)
    for key, adapter in _ITEMS.items():
        items = raw.get(key)
        pairs = (
            items.items() if isinstance(items, dict) else enumerate(items) if isinstance(items, list) else ()
        )
        kept: dict[Any, Any] = {}
        for k, item in pairs:
            try:
                adapter.validate_python(item)
                kept[k] = item
            except ValidationError as exc:
                issues.extend(_pydantic_issues(exc, src, (*at, key, k)))
                if key == "people":
                    kept[k] = _STANDIN
        if pairs:
            out[key] = kept if isinstance(items, dict) else list(kept.values())
    return out


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
    shifts = check.shifts(d.shifts, ("shifts",), None)
    cycle = check.rotation()
    overrides: dict[date, DayPlan] = {}
    for i, o in enumerate(d.overrides):
        plan = check.override(o, ("overrides", i), shifts)
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
    if shifts is None or cycle is None:
        return None
    people = {k: Contact(k, p.name, p.phone, p.email) for k, p in d.people.items()}
    level, name = subject or (DeskLevel.ENTERPRISE, "?")  # the swaps are still checked
    desk = Desk(code, d.name or code, level, name, tz, people, shifts, d.rotation.start, cycle, overrides)
    swaps: dict[tuple[date, str], list[tuple[str, str]]] = {}
    for i, s in enumerate(d.swaps):
        if check.swap(s, ("swaps", i), desk):
            swaps.setdefault((s.date, s.shift), []).append((s.absent, s.cover))
    if subject is None:
        return None
    return Desk(
        code, desk.name, level, name, tz, people, shifts, d.rotation.start, cycle, overrides,
        {k: tuple(v) for k, v in swaps.items()},
    )  # fmt: skip
