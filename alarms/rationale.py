"""Alarm rationalization: each alarm's cause, consequence, corrective action (处置措施) and
allowed response time, as the master alarm table records them (ISA-18.2 §10, EEMUA 191).

Defaults per rule kind and gas detector type are the reference folder's ``rationalization.yaml``,
read and validated once per file (a malformed one is a ConfigError at its file:line); a tag's or
interlock's ``rationalization:`` (core.plant.AlarmRationale) overrides them key by key. Every
``Rationale`` says where it came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.conditions import RuleKind
from core.errors import ConfigError
from core.plant import AlarmRationale, Detector, Plant, ResponseTime
from core.yaml_loader import load_document

__all__ = [
    "FILE_NAME",
    "SIF_DISABLED",
    "Rationale",
    "RationaleDefaults",
    "defaults_for",
    "load_defaults",
]

FILE_NAME = "rationalization.yaml"
SIF_DISABLED = "SIF_DISABLED"  # the derived alarm of an interlock that can no longer act
_KINDS = (*(k.name for k in RuleKind), SIF_DISABLED)
# the gas levels a detector type has (core.gas_levels: oxygen level 1 is its low alarm)
_GAS_KINDS = {
    Detector.TOXIC: ("GAS_L1", "GAS_L2"),
    Detector.COMBUSTIBLE: ("GAS_L1", "GAS_L2"),
    Detector.OXYGEN: ("O2_LOW", "O2_HIGH"),
}


@dataclass(frozen=True, slots=True)
class Rationale:
    cause: str
    consequence: str
    action: str  # 处置措施
    response_s: float | None  # allowed response time; None only without any defaults
    source: str  # "default for HH", "default for GAS_L2/TOXIC", "LHJH.T101.LT01 rationalization.hh"

    def overridden(self, given: AlarmRationale | None, where: str) -> Rationale:
        """This rationale with the keys ``given`` (at config path ``where``) sets replaced."""
        if given is None:
            return self
        mine = given.model_dump(exclude_none=True)
        source = where if len(mine) == 4 else f"{where} (rest: {self.source})"
        return Rationale(
            cause=mine.get("cause", self.cause),
            consequence=mine.get("consequence", self.consequence),
            action=mine.get("action", self.action),
            response_s=mine.get("response_s", self.response_s),
            source=source,
        )


_NONE = Rationale("", "", "", None, "none")


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cause: str = Field(min_length=1)
    consequence: str = Field(min_length=1)
    action: str = Field(min_length=1)
    response_s: ResponseTime


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kinds: dict[str, _Entry]
    gas: dict[Detector, dict[str, _Entry]] = {}


@dataclass(frozen=True)
class RationaleDefaults:
    """Defaults by kind name (``RuleKind`` names and ``SIF_DISABLED``) and by (detector, kind)."""

    kinds: Mapping[str, Rationale] = field(default_factory=dict)
    gas: Mapping[tuple[Detector, str], Rationale] = field(default_factory=dict)

    def of(self, kind: str, detector: Detector | None = None) -> Rationale:
        """The default for an alarm of ``kind`` (on a gas detector of type ``detector``)."""
        if detector is not None and (detector, kind) in self.gas:
            return self.gas[(detector, kind)]
        return self.kinds.get(kind, _NONE)


@cache
def load_defaults(path: Path) -> RationaleDefaults:
    """The defaults of one rationalization.yaml (read once per path); ConfigError listing every
    problem at its file:line."""
    loaded = load_document(path)
    issues = list(loaded.issues)
    if loaded.issues:
        raise ConfigError(issues)
    try:
        doc = _File.model_validate(loaded.data)
    except ValidationError as exc:
        for e in exc.errors(include_url=False):
            where = tuple(p for p in e["loc"] if p != "[key]")  # a mapping key's error is its key's
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = "unknown key (see docs/configuration.md, rationalization)"
            elif e["type"] == "missing":
                msg = "required key is missing"
            issues.append(loaded.source.issue(where, msg))
        raise ConfigError(issues) from None
    for name in doc.kinds:
        if name not in _KINDS:
            issues.append(loaded.source.issue(("kinds", name), f"unknown kind (known: {', '.join(_KINDS)})"))
    missing = [k for k in _KINDS if k not in doc.kinds]
    if missing:
        issues.append(loaded.source.issue(("kinds",), f"no default for {', '.join(missing)}"))
    for detector, levels in doc.gas.items():
        for name in levels:
            if name not in _GAS_KINDS[detector]:
                issues.append(
                    loaded.source.issue(
                        ("gas", detector.value, name),
                        f"a {detector.value} detector's alarms are {' and '.join(_GAS_KINDS[detector])}",
                    )
                )
    if issues:
        raise ConfigError(issues)
    return RationaleDefaults(
        kinds={k: _rationale(e, f"default for {k}") for k, e in doc.kinds.items()},
        gas={
            (d, k): _rationale(e, f"default for {k}/{d.value}")
            for d, levels in doc.gas.items()
            for k, e in levels.items()
        },
    )


def _rationale(entry: _Entry, source: str) -> Rationale:
    return Rationale(entry.cause, entry.consequence, entry.action, entry.response_s, source)


def defaults_for(config: Path, plant: Plant) -> RationaleDefaults:
    """The defaults of the plant at ``config`` (a plant file, or a folder holding plant.yaml):
    its ``reference:`` folder's rationalization.yaml; none (empty texts, source "none") when the
    plant names no reference folder or the folder has no such file."""
    plant_file = config / "plant.yaml" if config.is_dir() else config
    if plant.reference is None:
        return RationaleDefaults()
    path = (plant_file.parent / plant.reference / FILE_NAME).resolve()
    return load_defaults(path) if path.exists() else RationaleDefaults()
