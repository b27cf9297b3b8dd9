"""Gas detectors answering leak sources: distance decay, wind and the detector's T90 lag.

A qualitative near-field model, not a dispersion code (no ALOHA/Gaussian plume): each
detector's steady reading is ``Σ rate · K · exp(-d / DECAY_M) · (1 + WIND_GAIN·cos θ)`` as a
fraction of its span, where θ is the angle between the wind's direction and the bearing
from leak to detector; the reading follows it with a first-order lag whose 90 % time is the
detector's T90 (GB/T 50493: respond within 30 s). Positions come from a deterministic
default layout (hazard sources 200 m apart, equipment 30 m apart, detectors 5 m around
their equipment) that a scenario may override.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from core.plant import TagKind
from core.registry import TagRegistry
from simulators.state import EquipmentRef

__all__ = ["GasDispersion", "Leak"]

K_PER_KG_S = 10.0  # 0.1 kg/s reads full span a few metres away
DECAY_M = 10.0
WIND_GAIN = 0.8
DEFAULT_T90_S = 20.0
GOLDEN_DEG = 137.5


@dataclass
class Leak:
    enterprise: str
    equipment: str
    rate_kg_s: float
    gas: str | None = None  # None: every detector (except oxygen) responds
    position: tuple[float, float] | None = None  # default: the equipment's position


@dataclass(eq=False)
class GasDispersion:
    idx: np.ndarray  # registry indexes of GAS detectors that respond to leaks
    gas: list[str]
    xy: np.ndarray  # (k, 2) detector positions, metres
    equipment_xy: dict[tuple[str, str], tuple[float, float]]
    background: np.ndarray
    span: np.ndarray
    t90_s: np.ndarray
    leaks: list[Leak] = field(default_factory=list)
    wind_speed_m_s: float = 2.0
    wind_from_deg: float = 0.0

    @classmethod
    def build(
        cls, registry: TagRegistry, eq: list[EquipmentRef], lo: np.ndarray, hi: np.ndarray
    ) -> GasDispersion:
        hs_pos: dict[str, int] = {}
        per_hs: dict[str, int] = {}
        eq_xy: dict[tuple[str, str], tuple[float, float]] = {}
        for ref in eq:
            h = hs_pos.setdefault(ref.hazard_source, len(hs_pos))
            key = (ref.enterprise, ref.code)
            if key not in eq_xy:
                k = per_hs.get(ref.hazard_source, 0)
                per_hs[ref.hazard_source] = k + 1
                eq_xy[key] = (200.0 * h + 30.0 * k, 0.0)
        idx, gas, xy = [], [], []
        around: dict[tuple[str, str], int] = {}
        for i, tag in enumerate(registry.tags):
            if tag.kind != TagKind.GAS or tag.gas is None or tag.gas.detector == "OXYGEN":
                continue
            key = (eq[i].enterprise, eq[i].code)
            n = around.get(key, 0)
            around[key] = n + 1
            ex, ey = eq_xy[key]
            a = math.radians(GOLDEN_DEG * n)
            idx.append(i)
            gas.append(tag.gas.gas.upper())
            xy.append((ex + 5.0 * math.sin(a), ey + 5.0 * math.cos(a)))
        ix = np.array(idx, np.int64)
        return cls(
            idx=ix,
            gas=gas,
            xy=np.array(xy, np.float64).reshape(-1, 2),
            equipment_xy=eq_xy,
            background=lo[ix].copy(),
            span=(hi - lo)[ix],
            t90_s=np.full(len(ix), DEFAULT_T90_S),
        )

    def place(self, i: int, x_m: float, y_m: float) -> None:
        """Move detector (registry index ``i``) to (x, y)."""
        self.xy[np.flatnonzero(self.idx == i)] = (x_m, y_m)

    def steady_fraction(self) -> np.ndarray:
        """Each detector's steady reading as a fraction of span, summed over active leaks."""
        out = np.zeros(len(self.idx))
        to_rad = math.radians(self.wind_from_deg + 180.0)
        wind = (math.sin(to_rad), math.cos(to_rad))
        calm = 2.0 / max(self.wind_speed_m_s, 0.5)
        for leak in self.leaks:
            if leak.rate_kg_s <= 0:
                continue
            sx, sy = leak.position or self.equipment_xy.get((leak.enterprise, leak.equipment), (0.0, 0.0))
            dx, dy = self.xy[:, 0] - sx, self.xy[:, 1] - sy
            d = np.hypot(dx, dy)
            cos_t = np.where(d > 0, (dx * wind[0] + dy * wind[1]) / np.maximum(d, 1e-9), 0.0)
            c = leak.rate_kg_s * K_PER_KG_S * np.exp(-d / DECAY_M) * (1.0 + WIND_GAIN * cos_t) * calm
            if leak.gas is not None:
                c *= np.array([g == leak.gas.upper() for g in self.gas], np.float64)
            out += c
        return np.minimum(out, 1.2)  # a detector saturates a little above its span

    def step(self, dt: float, truth: np.ndarray) -> None:
        if not len(self.idx):
            return
        target = self.background + self.steady_fraction() * self.span
        tau = self.t90_s / math.log(10.0)
        cur = truth[self.idx]
        truth[self.idx] = cur + (target - cur) * (1.0 - np.exp(-dt / tau))
