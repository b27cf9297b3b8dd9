"""Scenario YAML: a timeline of events (leaks, faults, device actions, set-points) for a plant.

Loaded through ``core.yaml_loader.load_document`` (includes, ${ENV}) and validated in two
passes like the plant config: structure by pydantic, then references (tags, devices,
equipment, interlocks) against the plant. Every problem is collected and raised as one
ConfigError naming file:line and the document path. Events are kept in time order
(stable for equal ``at_s``); tag references are full keys or EQUIPMENT.CODE when the plant
has one enterprise that holds them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import ConfigError, ConfigIssue
from core.plant import Plant, resolve_key
from core.quality import Quality
from core.yaml_loader import PathKey, SourceMap, load_document

__all__ = ["Event", "Scenario", "load_scenario", "parse_scenario", "resolve_tag"]


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LeakSpec(_M):
    equipment: str
    rate_kg_s: float = Field(ge=0)
    gas: str | None = None
    position: tuple[float, float] | None = None


class StopLeakSpec(_M):
    equipment: str | None = None  # None: every leak


class FaultSpec(_M):
    tag: str
    kind: Literal["STUCK", "DRIFT", "SPIKE", "NOISE", "BAD_QUALITY"]
    value: float | None = None
    rate_per_s: float = 0.0
    magnitude: float = 0.0
    sigma: float = Field(default=0.0, ge=0)
    quality: str = "BAD_SENSOR_FAILURE"
    duration_s: float | None = Field(default=None, gt=0)


class ClearSpec(_M):
    tag: str


class DeviceSpec(_M):
    id: str
    action: Literal["OFFLINE", "ONLINE", "RESTART", "SLOW"]
    delay_s: float = Field(default=0.0, ge=0)  # SLOW: added to every answer
    renumber: bool = True  # RESTART: register an extra namespace first
    down_s: float = Field(default=0.0, ge=0)  # RESTART: time the server stays away


class SetSpec(_M):
    tag: str
    value: float
    hold: bool = False


class RampSpec(_M):
    tag: str
    to: float
    over_s: float = Field(gt=0)


class WindSpec(_M):
    speed_m_s: float = Field(default=2.0, ge=0)
    from_deg: float = 0.0


class SisSpec(_M):
    interlock: str
    action: Literal["RESET", "FAIL", "REPAIR"]


class SisConfig(_M):
    delay_s: float | None = Field(default=None, ge=0)
    fail: bool | None = None


class Layout(_M):
    equipment: dict[str, tuple[float, float]] = {}
    detectors: dict[str, tuple[float, float]] = {}


_ACTIONS = ("leak", "stop_leak", "fault", "clear", "device", "set", "ramp", "wind", "sis")


class Event(_M):
    at_s: float = Field(ge=0)
    leak: LeakSpec | None = None
    stop_leak: StopLeakSpec | None = None
    fault: FaultSpec | None = None
    clear: ClearSpec | None = None
    device: DeviceSpec | None = None
    set: SetSpec | None = None
    ramp: RampSpec | None = None
    wind: WindSpec | None = None
    sis: SisSpec | None = None

    @model_validator(mode="after")
    def _one_action(self) -> Event:
        given = [a for a in _ACTIONS if getattr(self, a) is not None]
        if len(given) != 1:
            raise ValueError(f"an event has exactly one of {', '.join(_ACTIONS)} (got {given or 'none'})")
        return self

    @property
    def action(self) -> str:
        return next(a for a in _ACTIONS if getattr(self, a) is not None)


class Scenario(_M):
    name: str
    description: str = ""
    duration_s: float | None = Field(default=None, gt=0)
    seed: int | None = None
    wind: WindSpec = WindSpec()
    layout: Layout = Layout()
    sis: dict[str, SisConfig] = {}
    events: list[Event] = []


def resolve_tag(plant: Plant, ref: str) -> str | None:
    """The full key a scenario reference names, or None if it names no (or several) tags."""
    keys = {t.key for t in plant.tags()}
    found = {resolve_key(e.code, ref) for e in plant.enterprises} & keys
    return found.pop() if len(found) == 1 else None


def _loc(loc: tuple[int | str, ...]) -> PathKey:
    # pydantic adds the union/literal member name to some locations; the document has none
    return tuple(p for p in loc if isinstance(p, int) or not p[:1].isupper() or p == "")


def _check_refs(sc: Scenario, plant: Plant, src: SourceMap) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    devices = {d.id for d in plant.devices()}
    equipment = {
        e.code for ent in plant.enterprises for h in ent.hazard_sources for u in h.units for e in u.equipment
    }
    interlocks = {il.code for ent in plant.enterprises for h in ent.hazard_sources for il in h.interlocks}

    def tag(ref: str, at: PathKey) -> None:
        if resolve_tag(plant, ref) is None:
            issues.append(
                src.issue(at, f"unknown tag {ref!r} (give ENTERPRISE.EQUIPMENT.CODE or EQUIPMENT.CODE)")
            )

    for i, ev in enumerate(sc.events):
        at: PathKey = ("events", i, ev.action)
        spec: Any = getattr(ev, ev.action)
        if ev.action in ("fault", "clear", "set", "ramp"):
            tag(spec.tag, (*at, "tag"))
        if ev.action == "fault" and spec.quality not in Quality.__members__:
            issues.append(src.issue((*at, "quality"), f"unknown quality {spec.quality!r} (see core.quality)"))
        if (
            ev.action in ("leak", "stop_leak")
            and spec.equipment is not None
            and spec.equipment not in equipment
        ):
            issues.append(src.issue((*at, "equipment"), f"unknown equipment {spec.equipment!r}"))
        if ev.action == "device" and spec.id not in devices:
            known = ", ".join(sorted(devices)) or "none"
            issues.append(src.issue((*at, "id"), f"unknown device {spec.id!r} (plant has: {known})"))
        if ev.action == "sis" and spec.interlock not in interlocks:
            issues.append(src.issue((*at, "interlock"), f"unknown interlock {spec.interlock!r}"))
    for code in sc.sis:
        if code not in interlocks:
            issues.append(src.issue(("sis", code), f"unknown interlock {code!r}"))
    for ref in sc.layout.detectors:
        tag(ref, ("layout", "detectors", ref))
    for code in sc.layout.equipment:
        if code not in equipment:
            issues.append(src.issue(("layout", "equipment", code), f"unknown equipment {code!r}"))
    return issues


def parse_scenario(
    data: Any, source: SourceMap, plant: Plant, issues: list[ConfigIssue] | None = None
) -> Scenario:
    found = list(issues or [])
    if not isinstance(data, dict):
        found.append(source.issue((), "a scenario file is a mapping with name: and events:"))
        raise ConfigError(found)
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as exc:
        for e in exc.errors(include_url=False):
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling)"
            elif e["type"] == "missing":
                msg = "required key is missing"
            found.append(source.issue(_loc(tuple(e["loc"])), msg))
        raise ConfigError(found) from None
    found += _check_refs(sc, plant, source)
    if found:
        raise ConfigError(found)
    ordered = sorted(sc.events, key=lambda e: e.at_s)
    return sc.model_copy(update={"events": ordered})


def load_scenario(path: str | os.PathLike[str], plant: Plant) -> Scenario:
    """Load and validate a scenario file against ``plant``; raises ConfigError with file:line."""
    p = Path(path)
    if not p.exists():
        raise ConfigError([ConfigIssue(str(path), 0, "", "no such scenario file")])
    loaded = load_document(p)
    return parse_scenario(loaded.data, loaded.source, plant, loaded.issues)
