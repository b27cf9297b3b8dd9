"""Process models: the simulated plant's true values, stepped deterministically under a seed.

Every tag starts at a "normal" value derived from its range and limits and relaxes
toward a setpoint (first order + measurement noise). Equipment-bound models claim tags
and replace that default: tank level from in/out flow, liquefied-gas vessel pressure from
temperature, gas-holder level and pressure, gas detectors answering leaks (distance decay,
wind, T90 lag) and final elements moving with a travel time. Models are tables of index
arrays, vectorized per model; noise comes from one draw of ``n`` normals per step, so two
runs with the same seed and events give identical series.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.plant import Plant, Tag, TagKind
from core.registry import TagRegistry
from simulators.dispersion import GasDispersion, Leak
from simulators.state import EquipmentRef, equipment_of

__all__ = ["KIND_DYNAMICS", "Leak", "ProcessModel", "normal_value"]

# (time constant s, measurement noise as a fraction of span) per tag kind
KIND_DYNAMICS: dict[str, tuple[float, float]] = {
    "TEMPERATURE": (120.0, 0.001),
    "PRESSURE": (30.0, 0.001),
    "LEVEL": (300.0, 0.0005),
    "FLOW": (10.0, 0.005),
    "COMPOSITION": (60.0, 0.002),
    "GAS": (20.0, 0.0005),
    "DISCRETE": (0.0, 0.0),
    "COUNTER": (0.0, 0.0),  # counts up at COUNT_RATE_PER_S instead of relaxing to a setpoint
}
# Run-hour counters advance with the clock; totalisers (m³, t, kWh ...) by one unit a minute.
COUNT_RATE_PER_S = {"h": 1.0 / 3600.0, "s": 1.0}
DEFAULT_COUNT_RATE_PER_S = 1.0 / 60.0
LIQUEFIED = ("SPHERE", "BULLET", "LIQUEFIED", "VESSEL", "球罐", "卧罐")
HOLDER = ("HOLDER", "煤气柜", "气柜")
VAPOUR_B_K = 2800.0  # Clausius-Clapeyron ΔH/R for ammonia (23.3 kJ/mol / R); propane is ~2300
HOLDER_OVERFILL = 0.95  # piston near its top: the holder vents, pressure rises steeply
VALVE_TRAVEL_S = 5.0


def normal_value(tag: Tag) -> float:
    """The value a tag shows in normal operation: mid-way inside its alarm limits."""
    if tag.kind == TagKind.DISCRETE or tag.range is None:
        return 0.0
    lo, hi = tag.range
    if tag.kind == TagKind.GAS:
        if tag.gas is not None and tag.gas.detector == "OXYGEN":
            return 20.9 if tag.unit == "%VOL" else lo + 0.5 * (hi - lo)
        return lo
    lim = tag.limits
    low = next((v for v in (lim.l, lim.ll) if v is not None), None) if lim else None
    high = next((v for v in (lim.h, lim.hh) if v is not None), None) if lim else None
    a = low if low is not None else lo
    b = high if high is not None else hi
    return a + 0.5 * (b - a)


def _has(kind: str, words: tuple[str, ...]) -> bool:
    k = kind.upper()
    return any(w in k for w in words)


@dataclass(eq=False)
class ProcessModel:
    """The plant's true process values (before sensor faults) for every registry index."""

    registry: TagRegistry
    rng: np.random.Generator
    truth: np.ndarray
    setpoint: np.ndarray
    tau_s: np.ndarray
    noise_sd: np.ndarray
    resolution: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    follows: np.ndarray  # bool: relaxes toward its setpoint (not claimed by a model)
    # equipment-bound tables
    tanks: np.ndarray  # (k, 3) level, inflow, outflow (-1: none) indexes
    vessels: np.ndarray  # (k, 2) pressure, temperature indexes
    vessel_t0: np.ndarray  # reference (normal) temperature of each vessel row
    holders: np.ndarray  # (k, 4) level, pressure, inflow, outflow
    holder_p0: np.ndarray
    mirrors: np.ndarray  # (k, 2) follower, lead: redundant transmitters read the lead's process value
    valves: np.ndarray  # final-element indexes
    valve_target: np.ndarray
    valve_rate: np.ndarray  # engineering units per second
    gas: GasDispersion
    count_rate: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per s; 0 for non-counters
    t_s: float = 0.0
    manual: set[int] = field(default_factory=set)

    @classmethod
    def build(
        cls, plant: Plant, registry: TagRegistry, seed: int, final_elements: dict[int, float] | None = None
    ) -> ProcessModel:
        tags = registry.tags
        eq = equipment_of(plant, registry)
        lo = np.nan_to_num(registry.range_lo.copy(), nan=0.0)
        hi = np.nan_to_num(registry.range_hi.copy(), nan=1.0)
        span = hi - lo
        kinds = [str(t.kind) for t in tags]
        sp = np.array([normal_value(t) for t in tags], np.float64)
        tau = np.array([KIND_DYNAMICS[k][0] for k in kinds])
        noise = np.array([KIND_DYNAMICS[k][1] for k in kinds]) * span
        res = np.array([t.resolution or 0.0 for t in tags])
        follows = np.array([k not in ("DISCRETE", "GAS", "COUNTER") for k in kinds])
        count_rate = np.array(
            [
                COUNT_RATE_PER_S.get(t.unit, DEFAULT_COUNT_RATE_PER_S) if k == "COUNTER" else 0.0
                for t, k in zip(tags, kinds, strict=True)
            ]
        )
        finals = final_elements or {}
        valves = np.array(sorted(finals), np.int64)
        for i in valves:
            safe = finals[int(i)]
            sp[i] = (
                (hi[i] if registry.tags[i].range else (100.0 if tags[i].unit == "%" else 1.0))
                if safe == 0
                else 0.0
            )
        by_eq: dict[tuple[str, str], list[int]] = {}
        for i, ref in enumerate(eq):
            by_eq.setdefault((ref.enterprise, ref.code), []).append(i)
        tanks, vessels, holders = [], [], []
        for members in by_eq.values():
            head: EquipmentRef = eq[members[0]]
            of = {
                k: [i for i in members if kinds[i] == k] for k in ("LEVEL", "PRESSURE", "TEMPERATURE", "FLOW")
            }
            flows = _in_out(of["FLOW"], tags)
            if _has(head.kind, HOLDER) and of["LEVEL"] and of["PRESSURE"]:
                holders.append((of["LEVEL"][0], of["PRESSURE"][0], *flows))
            elif _has(head.kind, LIQUEFIED) and of["PRESSURE"] and of["TEMPERATURE"]:
                # redundant transmitters on one vessel read one pressure
                lead = next((p for p in of["PRESSURE"] if tags[p].limits), of["PRESSURE"][0])
                sp[of["PRESSURE"]] = sp[lead]
                vessels += [(p, of["TEMPERATURE"][0]) for p in of["PRESSURE"]]
            elif of["LEVEL"] and of["FLOW"]:
                tanks.append((of["LEVEL"][0], *flows))
        tank_a = np.array(tanks, np.int64).reshape(-1, 3)
        vessel_a = np.array(vessels, np.int64).reshape(-1, 2)
        holder_a = np.array(holders, np.int64).reshape(-1, 4)
        claimed = {int(i) for i in np.r_[tank_a[:, 0], vessel_a[:, 0], holder_a[:, :2].ravel()]}
        mirrors = [
            (j, lead)
            for lead in sorted(claimed)
            for j in by_eq[(eq[lead].enterprise, eq[lead].code)]
            if j not in claimed and kinds[j] == kinds[lead] and tags[j].range == tags[lead].range
        ]
        mirror_a = np.array(mirrors, np.int64).reshape(-1, 2)
        for table in (np.array(sorted(claimed), np.int64), mirror_a[:, 0], valves):
            follows[table] = False
        gas = GasDispersion.build(registry, eq, lo, hi)
        truth = sp.copy()
        return cls(
            registry=registry,
            rng=np.random.Generator(np.random.PCG64(seed)),
            truth=truth,
            setpoint=sp,
            tau_s=tau,
            noise_sd=noise,
            resolution=res,
            lo=lo,
            hi=hi,
            follows=follows,
            count_rate=count_rate,
            tanks=tank_a,
            vessels=vessel_a,
            vessel_t0=sp[vessel_a[:, 1]].copy(),
            holders=holder_a,
            holder_p0=sp[holder_a[:, 1]].copy(),
            mirrors=mirror_a,
            valves=valves,
            valve_target=sp[valves].copy(),
            valve_rate=np.maximum(span[valves], 1.0) / VALVE_TRAVEL_S,
            gas=gas,
        )

    # --- stepping ----------------------------------------------------------------

    def step(self, dt: float) -> np.ndarray:
        """Advance ``dt`` simulated seconds; returns the measured values (truth + noise)."""
        x = self.truth
        f = self.follows
        alpha = 1.0 - np.exp(-dt / np.maximum(self.tau_s[f], 1e-9))
        x[f] += (self.setpoint[f] - x[f]) * alpha
        if len(self.count_rate):
            x += self.count_rate * dt
        self._tanks(dt)
        self._holders(dt)
        self._vessels()
        self._valves(dt)
        x[self.mirrors[:, 0]] = x[self.mirrors[:, 1]]
        self.gas.step(dt, x)
        np.clip(x, self.lo, self.hi, out=x, where=np.isfinite(self.registry.range_lo))
        noise = self.rng.standard_normal(len(x)) * self.noise_sd
        measured = x + noise
        np.clip(measured, self.lo, self.hi, out=measured, where=np.isfinite(self.registry.range_lo))
        q = self.resolution > 0
        measured[q] = np.round(measured[q] / self.resolution[q]) * self.resolution[q]
        self.t_s += dt
        return measured

    def _frac(self, idx: np.ndarray) -> np.ndarray:
        return (self.truth[idx] - self.lo[idx]) / np.maximum(self.hi[idx] - self.lo[idx], 1e-12)

    def _net_flow_frac(self, table: np.ndarray, level_col: int, dt: float) -> np.ndarray:
        """Level change (fraction of span) over ``dt``: a 2-hour residence time at the inflow's span."""
        inflow, outflow = table[:, -2], table[:, -1]
        qin = np.where(inflow >= 0, self.truth[inflow], 0.0)
        level = table[:, level_col]
        # an outflow controller (LIC) holds the level unless the outflow is in manual
        auto = np.array([o >= 0 and int(o) not in self.manual for o in outflow], bool)
        err = self._frac(level) - self.setpoint_frac(level)
        flow_span = np.where(inflow >= 0, self.hi[inflow] - self.lo[inflow], 1.0)
        qout_auto = np.clip(qin + 2.0 * err * flow_span, 0.0, None)
        has_out = outflow >= 0
        out_idx = outflow[has_out & auto]
        self.truth[out_idx] = qout_auto[has_out & auto]
        qout = np.where(has_out, self.truth[outflow], qout_auto)
        return (qin - qout) / np.maximum(flow_span, 1e-9) * dt / 7200.0

    def setpoint_frac(self, idx: np.ndarray) -> np.ndarray:
        return (self.setpoint[idx] - self.lo[idx]) / np.maximum(self.hi[idx] - self.lo[idx], 1e-12)

    def _tanks(self, dt: float) -> None:
        if len(self.tanks):
            lvl = self.tanks[:, 0]
            self.truth[lvl] += self._net_flow_frac(self.tanks, 0, dt) * (self.hi[lvl] - self.lo[lvl])

    def _holders(self, dt: float) -> None:
        if not len(self.holders):
            return
        lvl, pr = self.holders[:, 0], self.holders[:, 1]
        self.truth[lvl] += self._net_flow_frac(self.holders, 0, dt) * (self.hi[lvl] - self.lo[lvl])
        frac = np.clip(self._frac(lvl), 0.0, 1.0)
        over = np.clip(frac - HOLDER_OVERFILL, 0.0, None)
        self.truth[pr] = self.holder_p0 * (1.0 + 0.05 * (frac - 0.5)) + over * 20.0 * (
            self.hi[pr] - self.lo[pr]
        )

    def _vessels(self) -> None:
        if not len(self.vessels):
            return
        p, t = self.vessels[:, 0], self.vessels[:, 1]
        kelvin = np.array([0.0 if self.registry.tags[i].unit == "K" else 273.15 for i in t])
        t_k, t0_k = self.truth[t] + kelvin, self.vessel_t0 + kelvin
        self.truth[p] = self.setpoint[p] * np.exp(VAPOUR_B_K * (1.0 / t0_k - 1.0 / t_k))

    def _valves(self, dt: float) -> None:
        if not len(self.valves):
            return
        pos = self.truth[self.valves]
        move = np.clip(self.valve_target - pos, -self.valve_rate * dt, self.valve_rate * dt)
        self.truth[self.valves] = pos + move

    # --- commands ------------------------------------------------------------------

    def set_value(self, i: int, value: float, *, hold: bool = False) -> None:
        """Step a tag to ``value`` (its setpoint too); a flow or valve goes to manual."""
        self.truth[i] = value
        self.setpoint[i] = value
        hits = np.flatnonzero(self.valves == i)
        if hits.size:
            self.valve_target[hits] = value
        if hold or self.registry.tags[i].kind == TagKind.FLOW:
            self.manual.add(i)

    def command_valve(self, i: int, target: float) -> None:
        hits = np.flatnonzero(self.valves == i)
        if hits.size:
            self.valve_target[hits] = target

    def add_leak(self, leak: Leak) -> None:
        self.gas.leaks.append(leak)


def _in_out(flows: list[int], tags: tuple[Tag, ...]) -> tuple[int, int]:
    """(inflow, outflow) of an equipment: by code (IN/OUT) first, else by order; -1 if none."""
    inflow = next((i for i in flows if "IN" in tags[i].code.upper()), -1)
    outflow = next((i for i in flows if "OUT" in tags[i].code.upper()), -1)
    rest = [i for i in flows if i not in (inflow, outflow)]
    if inflow < 0 and rest:
        inflow = rest.pop(0)
    if outflow < 0 and rest:
        outflow = rest.pop(0)
    return inflow, outflow
