"""PlantState: the one simulated truth that both the OPC UA and the Modbus servers publish.

Three numpy vectors indexed by the TagRegistry dense index: ``value`` (float64, engineering
units), ``quality`` (uint8, core.quality byte) and ``ts`` (int64 UTC µs, source timestamp of
the last change). ``version`` counts publications so servers can skip unchanged snapshots;
``changed`` marks the indexes touched since the servers last took them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from core.plant import ModbusDevice, OpcUaDevice, Plant, Tag
from core.quality import Quality
from core.registry import TagRegistry

__all__ = ["EquipmentRef", "PlantState", "equipment_of"]


@dataclass(frozen=True)
class EquipmentRef:
    """Where a tag sits: enterprise code, hazard source code, equipment code and kind."""

    enterprise: str
    hazard_source: str
    code: str
    kind: str


def equipment_of(plant: Plant, registry: TagRegistry) -> list[EquipmentRef]:
    """The equipment of every tag, indexed like the registry."""
    by_key: dict[str, EquipmentRef] = {}
    for ent in plant.enterprises:
        for hs in ent.hazard_sources:
            kinds = {e.code: (e.kind or "") for u in hs.units for e in u.equipment}
            for tag in hs.tags:
                by_key[tag.key] = EquipmentRef(ent.code, hs.code, tag.equipment, kinds.get(tag.equipment, ""))
    return [by_key[k] for k in registry.keys]


@dataclass(eq=False)
class PlantState:
    registry: TagRegistry
    value: np.ndarray
    quality: np.ndarray
    ts: np.ndarray
    changed: np.ndarray  # bool: touched since the servers last called ``take_changed``
    version: int = 0
    devices: dict[str, OpcUaDevice | ModbusDevice] = field(default_factory=dict)

    @classmethod
    def for_plant(cls, plant: Plant, registry: TagRegistry | None = None) -> PlantState:
        reg = registry or TagRegistry.from_plant(plant)
        n = len(reg)
        return cls(
            registry=reg,
            value=np.zeros(n, np.float64),
            quality=np.full(n, int(Quality.GOOD), np.uint8),
            ts=np.zeros(n, np.int64),
            changed=np.ones(n, bool),
            devices={d.id: d for d in plant.devices()},
        )

    def __len__(self) -> int:
        return len(self.value)

    @property
    def tags(self) -> tuple[Tag, ...]:
        return self.registry.tags

    def indexes_of_device(self, device_id: str) -> np.ndarray:
        return np.fromiter(
            (i for i, t in enumerate(self.registry.tags) if t.source.device == device_id), dtype=np.int64
        )

    def publish(
        self, value: npt.ArrayLike, quality: npt.ArrayLike, now_us: int, idx: npt.ArrayLike | None = None
    ) -> None:
        """Take new values (all tags, or those at ``idx``); only real changes get ``now_us``."""
        sel = slice(None) if idx is None else np.asarray(idx, dtype=np.int64)
        v = np.asarray(value, dtype=np.float64)
        q = np.asarray(quality, dtype=np.uint8)
        old_v, old_q = self.value[sel], self.quality[sel]
        ts = self.ts[sel]
        # A tag never stamped (ts 0) gets this time too, even when its first value is the
        # initial 0: otherwise servers would publish it with a 1970 source timestamp.
        diff = ~((old_v == v) | (np.isnan(old_v) & np.isnan(v))) | (old_q != q) | (ts == 0)
        self.value[sel] = v
        self.quality[sel] = q
        ts[diff] = now_us
        self.ts[sel] = ts
        ch = self.changed[sel]
        ch |= diff
        self.changed[sel] = ch
        self.version += 1

    def touch(self, idx: npt.ArrayLike, now_us: int) -> None:
        """Give ``idx`` a fresh source timestamp even when the value did not change."""
        i = np.asarray(idx, dtype=np.int64)
        self.ts[i] = now_us
        self.changed[i] = True

    def take_changed(self, idx: np.ndarray) -> np.ndarray:
        """Positions within ``idx`` changed since the last take for them; clears their flags."""
        mask = self.changed[idx]
        self.changed[idx] = False
        return np.flatnonzero(mask)

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.value.copy(), self.quality.copy(), self.ts.copy()
