"""A simulated SIS: one voted safety instrumented function per configured interlock.

Each step the trip inputs are compared with their limits (all interlocks at once, one
vectorized pass; a BAD input votes to trip, as fail-safe SIS logic does), bypassed inputs
drop out of the vote (a 2oo3 with one bypass acts as 2oo2), and when at least M inputs
hold for ``delay_s`` the function commands its final element to the safe position and
latches. ``fail`` makes a function see the demand and do nothing, for "demand without
action" tests. Nothing resets a trip except ``reset``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from core.plant import Plant, resolve_key
from core.quality import is_bad
from core.registry import TagRegistry

__all__ = ["SimulatedSis", "SisEvent"]

_OPS = (">", ">=", "<", "<=", "==", "!=")
DEFAULT_DELAY_S = 1.0


@dataclass(frozen=True)
class SisEvent:
    t_s: float
    interlock: str
    what: str  # DEMAND, TRIP, DEMAND_IGNORED, RESET


@dataclass(eq=False)
class SimulatedSis:
    codes: list[str]
    m: np.ndarray  # votes needed per interlock
    owner: np.ndarray  # per input: interlock position
    tag: np.ndarray  # per input: registry index
    op: np.ndarray  # per input: index into _OPS
    limit: np.ndarray
    bypass: np.ndarray  # per input: bypass switch index, -1 when none
    final: np.ndarray  # per interlock: final element index
    safe: np.ndarray
    delay_s: np.ndarray
    fail: np.ndarray  # bool: sees the demand, does nothing
    in_service: np.ndarray
    since: np.ndarray  # demand start time, NaN while no demand
    tripped: np.ndarray
    events: list[SisEvent] = field(default_factory=list)

    @classmethod
    def build(cls, plant: Plant, registry: TagRegistry) -> SimulatedSis:
        codes: list[str] = []
        m, owner, tag, op, limit, bypass, final, safe, svc = [], [], [], [], [], [], [], [], []
        for ent in plant.enterprises:
            for hs in ent.hazard_sources:
                for il in hs.interlocks:
                    k = len(codes)
                    codes.append(il.code)
                    m.append(int(il.voting.partition("oo")[0]))
                    for inp in il.inputs:
                        owner.append(k)
                        tag.append(registry.index_of(resolve_key(ent.code, inp.tag)))
                        op.append(_OPS.index(inp.op))
                        limit.append(inp.value)
                        bypass.append(
                            registry.index_of(resolve_key(ent.code, inp.bypass)) if inp.bypass else -1
                        )
                    final.append(registry.index_of(resolve_key(ent.code, il.final_element.tag)))
                    safe.append(il.final_element.safe_value)
                    svc.append(il.in_service)
        n = len(codes)
        return cls(
            codes=codes,
            m=np.array(m, np.int64),
            owner=np.array(owner, np.int64),
            tag=np.array(tag, np.int64),
            op=np.array(op, np.int64),
            limit=np.array(limit, np.float64),
            bypass=np.array(bypass, np.int64),
            final=np.array(final, np.int64),
            safe=np.array(safe, np.float64),
            delay_s=np.full(n, DEFAULT_DELAY_S),
            fail=np.zeros(n, bool),
            in_service=np.array(svc, bool),
            since=np.full(n, np.nan),
            tripped=np.zeros(n, bool),
        )

    def final_elements(self) -> dict[int, float]:
        return {int(i): float(s) for i, s in zip(self.final, self.safe, strict=True)}

    def configure(self, code: str, *, delay_s: float | None = None, fail: bool | None = None) -> None:
        k = self.codes.index(code)
        if delay_s is not None:
            self.delay_s[k] = delay_s
        if fail is not None:
            self.fail[k] = fail

    def reset(self, code: str, now_s: float) -> None:
        k = self.codes.index(code)
        self.tripped[k] = False
        self.since[k] = np.nan
        self.events.append(SisEvent(now_s, code, "RESET"))

    def demand(self, value: np.ndarray, quality: np.ndarray) -> np.ndarray:
        """Per interlock: does the voted trip condition hold on these readings?"""
        if not self.codes:
            return np.zeros(0, bool)
        x = value[self.tag]
        lim = self.limit
        table = np.stack([x > lim, x >= lim, x < lim, x <= lim, x == lim, x != lim])
        trip = table[self.op, np.arange(len(x))] | is_bad(quality[self.tag])
        bypassed = (self.bypass >= 0) & (value[np.maximum(self.bypass, 0)] >= 0.5)
        votes = np.bincount(self.owner, weights=trip & ~bypassed, minlength=len(self.codes))
        return (votes >= self.m) & self.in_service

    def step(
        self, value: np.ndarray, quality: np.ndarray, now_s: float, command: Callable[[int, float], None]
    ) -> None:
        """Evaluate on the published readings; ``command(final_index, safe_value)`` moves a valve."""
        dem = self.demand(value, quality)
        for k in np.flatnonzero(dem & np.isnan(self.since) & ~self.tripped):
            self.since[k] = now_s
            self.events.append(SisEvent(now_s, self.codes[k], "DEMAND"))
        self.since[~dem & ~self.tripped] = np.nan
        due = dem & ~self.tripped & (now_s - np.nan_to_num(self.since, nan=np.inf) >= self.delay_s)
        for k in np.flatnonzero(due):
            self.tripped[k] = True
            if self.fail[k]:
                self.events.append(SisEvent(now_s, self.codes[k], "DEMAND_IGNORED"))
            else:
                self.events.append(SisEvent(now_s, self.codes[k], "TRIP"))
        for k in np.flatnonzero(self.tripped & ~self.fail):
            command(int(self.final[k]), float(self.safe[k]))
