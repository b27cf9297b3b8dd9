"""Gas detector alarm levels (GB/T 50493-2019): the reference data and each detector's levels.

``GasReference`` is the plant's ``reference:`` folder's ``gases.yaml`` (molar masses, LEL,
OEL, named presets, the standard's defaults). ``resolve_gas`` works out a detector's two
levels in its own unit, from a preset, explicit levels or the defaults, and refuses levels
the standard does not allow (§5.5.2: combustible level 1 <= 25 %LEL, level 2 <= 50 %LEL).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigIssue
from core.plant import GasSpec, enum_name, given_or_default
from core.units import GasProperties, UnitError, convert_gas, finite
from core.yaml_loader import PathKey, SourceMap, load_document

__all__ = ["GasReference", "load_reference", "resolve_gas"]


@dataclass
class GasReference:
    """gases.yaml: gases by upper-case formula, presets by upper-case name, the standard's defaults."""

    gases: dict[str, dict[str, Any]] = field(default_factory=dict)
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    molar_volume: float = 24.45

    def props(self, gas: str) -> GasProperties:
        g = self.gases[gas]
        return GasProperties(float(g["molar_mass"]), finite(g.get("lel_vol_pct")))


def load_reference(plant_file: Path, data: Any, source: SourceMap, issues: list[ConfigIssue]) -> GasReference:
    """The reference data named by the plant's ``reference:`` (none: an empty reference, so
    every gas detector is reported as an unknown gas); problems go to ``issues``."""
    ref = GasReference()
    rel = data.get("reference") if isinstance(data, dict) else None
    if not isinstance(rel, str):
        return ref
    path = (plant_file.parent / rel / "gases.yaml").resolve()
    if not path.exists():
        issues.append(source.issue(("reference",), f"no gases.yaml in reference folder {rel!r}"))
        return ref
    loaded = load_document(path)
    issues.extend(loaded.issues)
    doc = loaded.data if isinstance(loaded.data, dict) else {}
    ref.gases = {str(k).upper(): v for k, v in (doc.get("gases") or {}).items()}
    ref.presets = {str(k).upper(): v for k, v in (doc.get("presets") or {}).items()}
    ref.defaults = doc.get("defaults") or {}
    ref.molar_volume = float(doc.get("molar_volume_l_mol", 24.45))
    return ref


def resolve_gas(
    gas: dict[str, Any], unit: str, ref: GasReference, err: Callable[[PathKey, str], None]
) -> tuple[str, float, float] | None:
    """Effective (detector, level1, level2) in the tag's unit, or None after reporting why.

    For OXYGEN, level1 is the low alarm and level2 the high alarm.
    """
    name = str(gas.get("gas", "")).upper()
    detector = gas.get("detector")
    method = given_or_default(gas, GasSpec, "method")
    if name not in ref.gases:
        known = ", ".join(sorted(ref.gases)) or "none: set reference: in the plant file"
        err(("gas",), f"unknown gas {gas.get('gas')!r} (known: {known})")
        return None
    props = ref.props(name)
    l1, l2 = finite(gas.get("level1")), finite(gas.get("level2"))
    preset_name = gas.get("preset")
    try:
        if preset_name is not None:
            preset = ref.presets.get(str(preset_name).upper())
            if preset is None:
                err(("preset",), f"unknown preset {preset_name!r} (known: {', '.join(sorted(ref.presets))})")
                return None
            if str(preset.get("gas", "")).upper() != name:
                err(
                    ("preset",),
                    f"preset {preset_name} is for {preset.get('gas')}, this detector measures {name}",
                )
                return None
            if enum_name(preset.get("detector", detector)) != detector:
                err(
                    ("preset",),
                    f"preset {preset_name} is for {preset.get('detector')} detectors, this one is {detector}",
                )
                return None
            if l1 is None:
                l1 = convert_gas(
                    float(preset["level1"]["value"]), preset["level1"]["unit"], unit, props, ref.molar_volume
                )
            if l2 is None:
                l2 = convert_gas(
                    float(preset["level2"]["value"]), preset["level2"]["unit"], unit, props, ref.molar_volume
                )
        if detector == "OXYGEN":
            d = ref.defaults.get("OXYGEN", {})
            l1 = l1 if l1 is not None else convert_gas(float(d.get("low", 19.5)), "%VOL", unit, props)
            l2 = l2 if l2 is not None else convert_gas(float(d.get("high", 23.5)), "%VOL", unit, props)
            if l1 >= l2:
                err(("level2",), f"oxygen high alarm {l2:g} must be above the low alarm {l1:g}")
                return None
            return detector, l1, l2
        if detector == "COMBUSTIBLE" and method == "OPEN_PATH":
            if unit != "LEL·m":
                err((), f"unit mismatch: open-path detectors measure LEL·m, this one {unit!r}")
                return None
            d = ref.defaults.get("COMBUSTIBLE_OPEN_PATH", {})
            l1 = l1 if l1 is not None else float(d.get("level1", 1))
            l2 = l2 if l2 is not None else float(d.get("level2", 2))
        elif detector == "COMBUSTIBLE":
            if props.lel_vol_pct is None:
                err(("gas",), f"{name} has no LEL: it cannot be a combustible detector")
                return None
            d = ref.defaults.get("COMBUSTIBLE_POINT", {})
            l1 = l1 if l1 is not None else convert_gas(float(d.get("level1", 20)), "%LEL", unit, props)
            l2 = l2 if l2 is not None else convert_gas(float(d.get("level2", 50)), "%LEL", unit, props)
            # GB/T 50493-2019 §5.5.2: level 1 <= 25 %LEL, level 2 <= 50 %LEL.
            for level, v, cap in (("level1", l1, 25.0), ("level2", l2, 50.0)):
                lel = convert_gas(v, unit, "%LEL", props)
                if lel > cap + 1e-9:
                    shown = f"{v:g} %LEL:" if unit == "%LEL" else f"{v:g} {unit} is {lel:.3g} %LEL;"
                    err(
                        (level,),
                        f"{shown} GB/T 50493-2019 §5.5.2 allows at most "
                        f"{cap:g} %LEL for {level.replace('level', 'level ')}",
                    )
        elif detector == "TOXIC":
            oel = finite(ref.gases[name].get("oel_mg_m3"))
            if (l1 is None or l2 is None) and oel is None:
                err(("gas",), f"{name} has no OEL in the reference data: give level1 and level2")
                return None
            d = ref.defaults.get("TOXIC", {})
            if l1 is None:
                assert oel is not None
                l1 = convert_gas(
                    oel * float(d.get("level1_oel_pct", 100)) / 100, "mg/m³", unit, props, ref.molar_volume
                )
            if l2 is None:
                assert oel is not None
                l2 = convert_gas(
                    oel * float(d.get("level2_oel_pct", 200)) / 100, "mg/m³", unit, props, ref.molar_volume
                )
        else:
            return None  # the structural validation reports a bad detector value
    except UnitError as exc:
        err((), f"unit mismatch: {exc}")
        return None
    assert l1 is not None and l2 is not None
    if l2 <= l1:
        err(("level2",), f"level 2 ({l2:g}) must be above level 1 ({l1:g})")
        return None
    return detector, round(l1, 6), round(l2, 6)
