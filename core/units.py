"""Engineering units per tag kind, the bounds of every configured number, and gas conversions.

Gas units convert through volume fraction: %VOL <-> ppm (x 10 000), ppm <-> mg/m3 (x molar
mass / molar volume), %LEL <-> %VOL (x LEL / 100). Molar volume is configuration: 22.4 L/mol
at 0 °C, 24.45 L/mol at 25 °C (GBZ 2.1 uses 24.45 for workplace air).

Every float of the plant model is one of the bounded types below (docs/configuration.md
lists them): NaN and infinity are always refused, because a NaN limit compares false
against every reading and an infinite range or interval silently turns an alarm off or
overflows the rule engine's integer microseconds.
"""

from __future__ import annotations

__all__ = [
    "DAY_S",
    "KIND_UNITS",
    "VALUE_MAX",
    "WEEK_S",
    "Delay",
    "GasProperties",
    "Interval",
    "Magnitude",
    "Percent",
    "PositiveMagnitude",
    "Timeout",
    "UnitError",
    "Value",
    "WatchTime",
    "Window",
    "bounded",
    "convert_gas",
    "finite",
    "finite_pair",
]

import math
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator

KIND_UNITS: dict[str, frozenset[str]] = {
    "TEMPERATURE": frozenset({"°C", "℃", "K"}),
    "PRESSURE": frozenset({"MPa", "kPa", "Pa", "bar", "mbar"}),
    "LEVEL": frozenset({"m", "mm", "%"}),
    "FLOW": frozenset({"m³/h", "Nm³/h", "t/h", "kg/h", "L/min", "m³/min"}),
    "COMPOSITION": frozenset({"%", "%VOL", "ppm", "mg/m³"}),
    "GAS": frozenset({"%LEL", "LEL·m", "ppm", "mg/m³", "%VOL"}),
    "DISCRETE": frozenset({"", "%"}),  # "%" for valve position feedback
    # run-hour counters, totalisers (flow integrated over time), energy meters; "" for plain counts
    "COUNTER": frozenset({"", "h", "s", "m³", "Nm³", "L", "t", "kg", "kWh", "MWh"}),
}

# |measured value| bound for limits, ranges and scales: float64 still counts in units up to 9e15,
# and two such values subtract to a finite span.
VALUE_MAX = 1e15
DAY_S = 86_400.0
WEEK_S = 7 * DAY_S


def bounded(lo: float, hi: float, unit: str = "", *, above: bool = False) -> AfterValidator:
    """A validator for a finite float in ``[lo, hi]`` (``(lo, hi]`` when ``above``); the error is
    a sentence with the bounds and the unit, reported at the key's file:line."""

    allowed = f"above {lo:g} and at most {hi:g}{unit}" if above else f"between {lo:g} and {hi:g}{unit}"

    def check(v: float) -> float:
        # one comparison chain: NaN fails it too; the message is built only for a refused value
        if (lo < v if above else lo <= v) and v <= hi:
            return v
        if not math.isfinite(v):
            raise ValueError(f"must be a finite number {allowed}, is {v}")
        raise ValueError(f"must be {allowed}, is {v:g}{unit}")

    return AfterValidator(check)


# Values in the tag's unit: limits, ranges, scales, interlock trip values.
Value = Annotated[float, bounded(-VALUE_MAX, VALUE_MAX)]
Magnitude = Annotated[float, bounded(0, VALUE_MAX)]  # deadbands, tolerances
PositiveMagnitude = Annotated[float, bounded(0, VALUE_MAX, above=True)]  # resolution, deviation, rate
Percent = Annotated[float, bounded(0, 50, " %")]  # of a tag's span
# Durations. Every one becomes integer microseconds in rules/compile.py; these maxima keep that
# exact and far from int64 (stale time = 10 polls of at most a day: 8.6e11 µs).
Delay = Annotated[float, bounded(0, DAY_S, " s")]  # on/off delays, travel times
Interval = Annotated[float, bounded(0.001, DAY_S, " s")]  # poll / sampling intervals
Timeout = Annotated[float, bounded(0.01, 600, " s")]  # request timeouts
Window = Annotated[float, bounded(1, DAY_S, " s")]  # rate-of-change window
WatchTime = Annotated[float, bounded(0, WEEK_S, " s")]  # stale and frozen times (0: off)


def finite(v: Any) -> float | None:
    """``v`` as a float if it is a finite number (not a bool), else None: the checks read a
    document whose values may still be anything."""
    if type(v) is float:  # nearly every call (a million at 100k tags): the cheapest test first
        return v if math.isfinite(v) else None
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def finite_pair(v: Any) -> tuple[float, float] | None:
    """``[low, high]`` of finite numbers as a tuple, else None."""
    if isinstance(v, list | tuple) and len(v) == 2:
        a, b = finite(v[0]), finite(v[1])
        if a is not None and b is not None:
            return a, b
    return None


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
