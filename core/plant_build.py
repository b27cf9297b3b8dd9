"""Build a Plant from a loaded YAML document: validate, cross-check, resolve.

Validation (``core.plant``) runs once. Every problem is collected and raised together as one
ConfigError, each at its file:line: the structural ones, then the cross-reference rules
(``core.plant_checks``), which also run when validation failed so that one typo never hides
another problem. A plant that passes is resolved on the validated model: each tag's key,
gas detector levels (``core.gas_limits``), and the default deadbands and delays
(``core.alarm_defaults``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from core.alarm_defaults import deadband, off_delay_s, on_delay_s
from core.errors import ConfigError, ConfigIssue
from core.gas_levels import GasReference, load_reference, resolve_gas
from core.plant import Detector, Enterprise, GasSpec, Limits, Plant, Tag, TagKind, normalise, updated
from core.plant_checks import check_plant
from core.yaml_loader import Loaded, PathKey, SourceMap, format_path

__all__ = ["Prevalidated", "build_plant"]


class Prevalidated:
    """Enterprises validated and dumped as their included files arrive (``take`` is
    ``load_document``'s ``on_part``), while worker processes still read the others: a province's
    validation overlaps its YAML instead of following it. ``build_plant`` uses them only when
    every enterprise of the document is the very part validated here; otherwise (a problem
    anywhere, enterprises written inline) it validates the whole document as before, so every
    error is still reported at its place."""

    def __init__(self, plant_file: Path) -> None:
        self.plant_file = plant_file
        self.parts: dict[int, tuple[Any, Enterprise, dict[str, Any], Enterprise | None]] = {}
        self._ref: GasReference | None = None
        self._gas_limits: dict[tuple[GasSpec, str | None], Limits] = {}

    def take(self, at: PathKey, data: Any, top: Any) -> None:
        if len(at) == 2 and at[0] == "enterprises" and isinstance(at[1], int) and isinstance(data, dict):
            try:
                ent = Enterprise.model_validate(data)
            except ValidationError:
                return  # build_plant reports it, at its place in the whole document
            if self._ref is None:  # build_plant loads it again, reporting its problems
                self._ref = load_reference(self.plant_file, top, SourceMap(str(self.plant_file)), [])
            try:  # resolved ahead too: used once the whole plant passed its checks
                resolved: Enterprise | None = _resolve_enterprise(ent, self._ref, self._gas_limits)
            except _Unresolvable:
                resolved = None  # a gas detector the checks will report
            self.parts[at[1]] = (data, ent, ent.model_dump(exclude_unset=True), resolved)

    def plant(self, raw: dict[str, Any]) -> tuple[Plant, dict[str, Any]] | None:
        """The validated plant and its dump, or None: validate the whole document instead."""
        given = raw.get("enterprises")
        if not isinstance(given, list) or not given:
            return None
        parts = [self.parts.get(i) for i in range(len(given))]
        if any(part is None or part[0] is not ent for part, ent in zip(parts, given, strict=True)):
            return None
        done = [part for part in parts if part is not None]
        try:  # validated models are taken as they are (pydantic does not revalidate instances)
            plant = Plant.model_validate({**raw, "enterprises": [part[1] for part in done]})
        except ValidationError:
            return None
        data = plant.model_dump(exclude_unset=True, exclude={"enterprises"})
        data["enterprises"] = [part[2] for part in done]
        return plant, data

    def resolved(self) -> dict[int, Enterprise]:
        """The enterprises resolved ahead, by index (those whose resolution had to wait)."""
        return {i: part[3] for i, part in self.parts.items() if part[3] is not None}


def build_plant(loaded: Loaded, plant_file: Path, early: Prevalidated | None = None) -> Plant:
    """The resolved plant of ``loaded`` (``plant_file`` locates ``reference:``; ``early``: its
    enterprises validated while it loaded); raises one ConfigError listing every problem."""
    issues = list(loaded.issues)
    raw = loaded.data
    if not isinstance(raw, dict):
        if raw is not None:
            issues.append(loaded.source.issue((), "a plant file must be a mapping with enterprises:"))
        raise ConfigError(issues)
    ref = load_reference(plant_file, raw, loaded.source, issues)
    plant: Plant | None
    validated = early.plant(raw) if early is not None else None
    if validated is not None:
        plant, data = validated
    else:
        try:
            plant = Plant.model_validate(raw)
        except ValidationError as exc:
            plant = None
            issues += _structural(exc, raw, loaded.source, loaded.failed_includes)
            data = normalise(raw)
        else:
            data = plant.model_dump(exclude_unset=True)
    issues += check_plant(data, loaded.source, ref)
    if issues or plant is None:
        raise ConfigError(issues)
    return _resolve(plant, ref, early.resolved() if validated is not None and early is not None else {})


def _structural(
    exc: ValidationError, data: dict[str, Any], source: SourceMap, failed_includes: set[PathKey]
) -> list[ConfigIssue]:
    """Validation's errors at their file:line; none inside a file that could not be loaded
    (its place holds None, which would read as a second, misleading type error)."""
    failed = [format_path(f) for f in failed_includes]
    issues = []
    for e in exc.errors(include_url=False):
        path = _loc_to_path(tuple(e["loc"]), data)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see docs/configuration.md)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        issue = source.issue(path, msg)
        if not any(issue.path == f or issue.path.startswith((f + ".", f + "[")) for f in failed):
            issues.append(issue)
    return issues


def _loc_to_path(loc: tuple[int | str, ...], data: Any) -> PathKey:
    """Pydantic's error location as a document path (union tags dropped)."""
    out: list[int | str] = []
    cur = data
    for part in loc:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            cur = cur[part]
        elif isinstance(cur, dict) and isinstance(part, str) and part.isupper():
            continue  # a discriminated-union tag such as "MODBUS"
        else:
            cur = None
        out.append(part)
    return tuple(out)


class _Unresolvable(Exception):
    """A gas detector whose levels cannot be worked out (the checks report why)."""


def _resolve(plant: Plant, ref: GasReference, done: dict[int, Enterprise]) -> Plant:
    """The plant with every tag's key and effective limits filled in (copies: models are frozen);
    ``done``: enterprises resolved already, by index."""
    gas_limits: dict[tuple[GasSpec, str | None], Limits] = {}  # a province has few distinct detector specs
    enterprises = [
        done.get(i) or _resolve_enterprise(ent, ref, gas_limits) for i, ent in enumerate(plant.enterprises)
    ]
    return updated(plant, {"enterprises": enterprises})


def _resolve_enterprise(
    ent: Enterprise, ref: GasReference, gas_limits: dict[tuple[GasSpec, str | None], Limits]
) -> Enterprise:
    sources = [
        updated(hs, {"tags": [_resolve_tag(ent.code, tag, ref, gas_limits) for tag in hs.tags]})
        for hs in ent.hazard_sources
    ]
    return updated(ent, {"hazard_sources": sources})


def _resolve_tag(
    enterprise: str, tag: Tag, ref: GasReference, gas_limits: dict[tuple[GasSpec, str | None], Limits]
) -> Tag:
    update: dict[str, Any] = {"key": f"{enterprise}.{tag.equipment}.{tag.code}"}
    if tag.kind == TagKind.GAS and tag.gas is not None:
        # frozen models compare by value: equal specs in the same unit share their limits
        limits = gas_limits.get((tag.gas, tag.unit))
        if limits is None:
            levels = resolve_gas(tag.gas.model_dump(exclude_unset=True), tag.unit, ref, lambda p, m: None)
            if levels is None:  # after check_plant passed: never (it reports every such detector)
                raise _Unresolvable(tag.key)
            detector, l1, l2 = levels
            given = {"l": l1, "h": l2} if detector == Detector.OXYGEN else {"h": l1, "hh": l2}
            limits = Limits(**given, deadband=0.0, on_delay_s=0.0, off_delay_s=0.0, latched=True)
            gas_limits[(tag.gas, tag.unit)] = limits
        update["limits"] = limits
    elif tag.limits is not None:
        lim = tag.limits
        update["limits"] = updated(
            lim,
            {
                "deadband": deadband(tag.kind, lim, tag.range),
                "deadband_pct": None,
                "on_delay_s": on_delay_s(tag.kind, lim),
                "off_delay_s": off_delay_s(lim),
            },
        )
    return updated(tag, update)
