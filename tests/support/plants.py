"""Plant helpers for tests that run against the simulated plant."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core.plant import Plant

__all__ = ["fast_polling", "mismatches", "tolerance", "write_small_plant"]

_SMALL_PLANT = """\
enterprises:
  - code: E1
    name: 测试焦化有限公司
    county: 孝义市
    devices:
{devices}
    hazard_sources:
      - code: H1
        name: 液氨储罐区
        kind: STORAGE
        grade: 3
        units:
          - code: U1
            name: 储罐区
            equipment:
              - {{code: V1, name: 1#液氨储罐}}
        tags:
{tags}
"""


def write_small_plant(folder: Path, devices: str, tags: str) -> Path:
    """``folder``/plant.yaml: enterprise E1, hazard source H1, equipment V1, and the given
    ``devices`` and ``tags`` (YAML block lists, written from column 0)."""
    text = _SMALL_PLANT.format(
        devices=textwrap.indent(devices, " " * 6), tags=textwrap.indent(tags or "[]", " " * 10)
    )
    (folder / "plant.yaml").write_text(text, encoding="utf-8")
    return folder


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
