"""Sensor and device faults applied on top of the process model's measured values.

Tag faults live in a table of numpy vectors (one active fault per tag, plus a forced
quality): STUCK (at a given value, e.g. near an alarm limit, or frozen where it was),
DRIFT (offset growing at ``rate_per_s``), SPIKE (offset of ``magnitude``), NOISE (a burst
of extra noise, ``sigma``) and BAD_QUALITY (value kept, quality forced). Any fault may
expire after ``duration_s``. Device faults (OFFLINE, SLOW, RESTART) are state the servers
read; they never alter values. Noise bursts draw from their own generator, so the
process model's series is unchanged by faults elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

import numpy as np

from core.quality import Quality

__all__ = ["DeviceAction", "DeviceFaults", "FaultKind", "FaultTable"]

NO_QUALITY = 0xFFFF


class FaultKind(IntEnum):
    NONE = 0
    STUCK = 1
    DRIFT = 2
    SPIKE = 3
    NOISE = 4
    BAD_QUALITY = 5


class DeviceAction(StrEnum):
    OFFLINE = "OFFLINE"
    ONLINE = "ONLINE"
    RESTART = "RESTART"
    SLOW = "SLOW"


@dataclass(eq=False)
class FaultTable:
    kind: np.ndarray  # uint8 FaultKind
    param: np.ndarray  # STUCK value (NaN: freeze), DRIFT rate/s, SPIKE magnitude, NOISE sigma
    start_s: np.ndarray
    end_s: np.ndarray  # inf: until cleared
    frozen: np.ndarray  # value captured when a STUCK fault without value began
    quality: np.ndarray  # uint16: forced quality byte, NO_QUALITY when none
    quality_end_s: np.ndarray
    rng: np.random.Generator

    @classmethod
    def empty(cls, n: int, seed: int) -> FaultTable:
        return cls(
            kind=np.zeros(n, np.uint8),
            param=np.zeros(n),
            start_s=np.zeros(n),
            end_s=np.full(n, np.inf),
            frozen=np.full(n, np.nan),
            quality=np.full(n, NO_QUALITY, np.uint16),
            quality_end_s=np.full(n, np.inf),
            rng=np.random.Generator(np.random.PCG64([seed, 0xFA17])),
        )

    def inject(
        self,
        i: int,
        kind: FaultKind,
        now_s: float,
        *,
        value: float | None = None,
        rate_per_s: float = 0.0,
        magnitude: float = 0.0,
        sigma: float = 0.0,
        quality: int = int(Quality.BAD_SENSOR_FAILURE),
        duration_s: float | None = None,
    ) -> None:
        end = np.inf if duration_s is None else now_s + duration_s
        if kind == FaultKind.BAD_QUALITY:
            self.quality[i] = quality
            self.quality_end_s[i] = end
            return
        self.kind[i] = kind
        self.start_s[i] = now_s
        self.end_s[i] = end
        self.frozen[i] = np.nan
        self.param[i] = {
            FaultKind.STUCK: np.nan if value is None else value,
            FaultKind.DRIFT: rate_per_s,
            FaultKind.SPIKE: magnitude,
            FaultKind.NOISE: sigma,
        }.get(kind, 0.0)

    def clear(self, i: int) -> None:
        self.kind[i] = FaultKind.NONE
        self.quality[i] = NO_QUALITY
        self.end_s[i] = self.quality_end_s[i] = np.inf

    def apply(self, measured: np.ndarray, quality: np.ndarray, now_s: float) -> None:
        """Overlay active faults on ``measured``/``quality`` in place; expire finished ones."""
        done = (self.kind != FaultKind.NONE) & (self.end_s < now_s - 1e-9)
        self.kind[done] = FaultKind.NONE
        qdone = (self.quality != NO_QUALITY) & (self.quality_end_s < now_s - 1e-9)
        self.quality[qdone] = NO_QUALITY
        if not self.kind.any() and (self.quality == NO_QUALITY).all():
            return
        k = self.kind
        stuck = k == FaultKind.STUCK
        fresh = stuck & np.isnan(self.param) & np.isnan(self.frozen)
        self.frozen[fresh] = measured[fresh]
        measured[stuck] = np.where(np.isnan(self.param[stuck]), self.frozen[stuck], self.param[stuck])
        drift = k == FaultKind.DRIFT
        measured[drift] += self.param[drift] * (now_s - self.start_s[drift])
        spike = k == FaultKind.SPIKE
        measured[spike] += self.param[spike]
        noise = np.flatnonzero(k == FaultKind.NOISE)
        if noise.size:
            measured[noise] += self.rng.standard_normal(noise.size) * self.param[noise]
        forced = self.quality != NO_QUALITY
        quality[forced] = self.quality[forced].astype(np.uint8)

    def active(self) -> dict[int, str]:
        out = {int(i): FaultKind(int(self.kind[i])).name for i in np.flatnonzero(self.kind)}
        for i in np.flatnonzero(self.quality != NO_QUALITY):
            out[int(i)] = "BAD_QUALITY" if int(i) not in out else f"{out[int(i)]}+BAD_QUALITY"
        return out


@dataclass
class DeviceFaults:
    """Per-device availability the servers consult on every request."""

    offline: set[str] = field(default_factory=set)
    slow_s: dict[str, float] = field(default_factory=dict)

    def is_offline(self, device_id: str) -> bool:
        return device_id in self.offline

    def delay_s(self, device_id: str) -> float:
        return self.slow_s.get(device_id, 0.0)
