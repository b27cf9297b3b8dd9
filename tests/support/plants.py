"""Plant helpers for tests that run against the simulated plant."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from core.plant import Plant

__all__ = ["fast_polling", "mismatches", "tolerance"]


def fast_polling(plant: Plant, poll_s: float = 0.25) -> Plant:
    """The same plant with quick Modbus polls and timeouts, so outage timing fits a test."""
    data: dict[str, Any] = plant.model_dump(mode="json")
    for ent in data["enterprises"]:
        for dev in ent["devices"]:
            if dev["protocol"] == "MODBUS":
                dev.update(poll_interval_s=poll_s, timeout_s=0.2, retries=0)
            else:
                dev.update(interval_s=poll_s)
    return Plant.model_validate(data)


def tolerance(plant: Plant, key: str, value: float) -> float:
    """What the wire can carry: the tag's resolution, one raw count, or float32 rounding."""
    tag = plant.tag(key)
    src = tag.source
    tol = tag.resolution or 0.0
    if src.scale is not None:
        (r0, r1), (e0, e1) = src.scale.raw, src.scale.eng or tag.range or (0.0, 1.0)
        tol = max(tol, abs((e1 - e0) / (r1 - r0)))
    elif src.type is not None and src.type.value.startswith(("INT", "UINT")):
        tol = max(tol, 1.0)
    elif src.type is not None and src.type.value == "FLOAT32":
        tol = max(tol, abs(value) * 2.0**-23)
    return max(tol, 1e-9)


def mismatches(
    plant: Plant, keys: Sequence[str], values: Sequence[float], want: Callable[[str], float]
) -> list[tuple[str, float, float]]:
    """(key, wanted, got) for every tag whose collected value is off by more than the wire carries."""
    out = []
    for key, got in zip(keys, values, strict=True):
        w = want(key)
        if not math.isclose(float(got), w, abs_tol=tolerance(plant, key, w)):
            out.append((key, w, float(got)))
    return out
