"""Engineering units per tag kind, and gas concentration conversions.

Gas units convert through volume fraction: %VOL <-> ppm (x 10 000), ppm <-> mg/m3 (x molar
mass / molar volume), %LEL <-> %VOL (x LEL / 100). Molar volume is configuration: 22.4 L/mol
at 0 °C, 24.45 L/mol at 25 °C (GBZ 2.1 uses 24.45 for workplace air).
"""

from __future__ import annotations

__all__ = ["KIND_UNITS", "GasProperties", "UnitError", "convert_gas"]

from dataclasses import dataclass

KIND_UNITS: dict[str, frozenset[str]] = {
    "TEMPERATURE": frozenset({"°C", "℃", "K"}),
    "PRESSURE": frozenset({"MPa", "kPa", "Pa", "bar", "mbar"}),
    "LEVEL": frozenset({"m", "mm", "%"}),
    "FLOW": frozenset({"m³/h", "Nm³/h", "t/h", "kg/h", "L/min", "m³/min"}),
    "COMPOSITION": frozenset({"%", "%VOL", "ppm", "mg/m³"}),
    "GAS": frozenset({"%LEL", "LEL·m", "ppm", "mg/m³", "%VOL"}),
    "DISCRETE": frozenset({"", "%"}),  # "%" for valve position feedback
}


class UnitError(ValueError):
    pass


@dataclass(frozen=True)
class GasProperties:
    molar_mass_g_mol: float
    lel_vol_pct: float | None = None


def _to_ppm(value: float, unit: str, gas: GasProperties, molar_volume: float) -> float:
    if unit == "ppm":
        return value
    if unit == "%VOL":
        return value * 10_000.0
    if unit == "mg/m³":
        return value * molar_volume / gas.molar_mass_g_mol
    if unit == "%LEL":
        if gas.lel_vol_pct is None:
            raise UnitError("%LEL needs the gas's LEL, and this gas has none")
        return value * gas.lel_vol_pct / 100.0 * 10_000.0
    raise UnitError(f"cannot convert {unit!r} as a gas concentration")


def convert_gas(
    value: float, from_unit: str, to_unit: str, gas: GasProperties, molar_volume: float = 24.45
) -> float:
    """Convert a gas concentration between ppm, mg/m³, %VOL and %LEL."""
    if from_unit == to_unit:
        return value
    ppm = _to_ppm(value, from_unit, gas, molar_volume)
    return ppm / _to_ppm(1.0, to_unit, gas, molar_volume)
