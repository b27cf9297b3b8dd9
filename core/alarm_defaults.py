"""Alarm defaults per tag kind (ISA-18.2 starting points, DOMAIN.md "Alarm management").

The one place a limit's deadband, on-delay and off-delay are worked out when the config
leaves them out: ``core.plant_build`` resolves every loaded tag with it, and
``rules.compile`` applies the same functions to a plant that was never resolved, so the
two can never disagree. Gas, discrete and counter tags get none: gas levels are latched
without deadband or delay (GB/T 50493), and a deadband or delay as a share of a counter's
roll-over range means nothing.
"""

from __future__ import annotations

import math

from core.plant import Limits
from core.units import finite

__all__ = [
    "DEFAULT_DEADBAND_PCT",
    "DEFAULT_ON_DELAY_S",
    "LOW_LIMITS",
    "deadband",
    "off_delay_s",
    "on_delay_s",
]

DEFAULT_DEADBAND_PCT = {"FLOW": 5.0, "LEVEL": 5.0, "PRESSURE": 2.0, "TEMPERATURE": 1.0, "COMPOSITION": 1.0}
DEFAULT_ON_DELAY_S = {"FLOW": 15.0, "LEVEL": 60.0, "PRESSURE": 15.0, "TEMPERATURE": 60.0, "COMPOSITION": 15.0}
LOW_LIMITS = ("ll", "l")  # limits that alarm below their value: they clear above it


def deadband(kind: str, limits: Limits, rng: tuple[float, float] | None) -> float:
    """The absolute deadband: as given; else ``deadband_pct`` of the range; else the kind's
    default share of the range, never so wide that a limit's clear point leaves the range."""
    if limits.deadband is not None:
        return limits.deadband
    if rng is None:
        return 0.0
    pct = limits.deadband_pct
    if pct is not None:
        return round(pct / 100 * (rng[1] - rng[0]), 9)
    default = round(DEFAULT_DEADBAND_PCT.get(kind, 0.0) / 100 * (rng[1] - rng[0]), 9)
    return min(default, _room(limits, rng))


def on_delay_s(kind: str, limits: Limits) -> float:
    """The on-delay: as given, else the kind's default."""
    return limits.on_delay_s if limits.on_delay_s is not None else DEFAULT_ON_DELAY_S.get(kind, 0.0)


def off_delay_s(limits: Limits) -> float:
    """The off-delay: as given, else none (an alarm clears as soon as it is back past its deadband)."""
    return limits.off_delay_s if limits.off_delay_s is not None else 0.0


def _room(limits: Limits, rng: tuple[float, float]) -> float:
    """Half the room between each limit and the range end it clears towards (a high limit
    near the range's low end would otherwise never clear)."""
    rooms = [
        (rng[1] - v) if name in LOW_LIMITS else (v - rng[0])
        for name in ("ll", "l", "h", "hh")
        if (v := finite(getattr(limits, name))) is not None
    ]
    return max(min(rooms, default=math.inf), 0.0) / 2
