"""Simulation: the synchronous heart of the simulator, stepped by a runner or by a test.

One ``step(dt)`` applies the scenario events that are due, advances the process models,
overlays sensor faults, lets the simulated SIS act on the faulted readings (as a real SIS
sees its own transmitters) and publishes into PlantState. It never reads a clock: time is
``t_s`` since start, and source timestamps are ``start_us + t_s`` unless the caller passes
``now_us``. Device actions (offline, restart, slow) are returned for the async runner.
"""

from __future__ import annotations

import numpy as np

from core.clock import US_PER_S
from core.plant import Plant
from core.quality import Quality
from core.registry import TagRegistry
from simulators.faults import DeviceFaults, FaultKind, FaultTable
from simulators.models import Leak, ProcessModel
from simulators.scenario import DeviceSpec, Event, Scenario, resolve_tag
from simulators.sis import SimulatedSis
from simulators.state import PlantState

__all__ = ["Simulation"]

DEFAULT_START_US = 1_700_000_000 * US_PER_S


class Simulation:
    def __init__(
        self,
        plant: Plant,
        scenario: Scenario | None = None,
        seed: int | None = None,
        start_us: int = DEFAULT_START_US,
    ) -> None:
        self.plant = plant
        self.scenario = scenario or Scenario(name="steady")
        self.seed = seed if seed is not None else (self.scenario.seed or 0)
        self.registry = TagRegistry.from_plant(plant)
        self.state = PlantState.for_plant(plant, self.registry)
        self.sis = SimulatedSis.build(plant, self.registry)
        self.model = ProcessModel.build(plant, self.registry, self.seed, self.sis.final_elements())
        self.faults = FaultTable.empty(len(self.registry), self.seed)
        self.devices = DeviceFaults()
        self.start_us = start_us
        self.t_s = 0.0
        self._next = 0
        self.ramps: list[tuple[int, float, float, float, float]] = []  # index, from, to, t0, t1
        sc = self.scenario
        self.set_wind(sc.wind.speed_m_s, sc.wind.from_deg)
        for code, xy in sc.layout.equipment.items():
            for key in [k for k in self.model.gas.equipment_xy if k[1] == code]:
                self.model.gas.equipment_xy[key] = xy
        for ref, xy in sc.layout.detectors.items():
            self.model.gas.place(self.index(ref), *xy)
        for code, cfg in sc.sis.items():
            self.sis.configure(code, delay_s=cfg.delay_s, fail=cfg.fail)
        q = np.full(len(self.registry), int(Quality.GOOD), np.uint8)
        self.state.publish(self.model.truth.copy(), q, start_us)

    # --- time ------------------------------------------------------------------------

    @property
    def now_us(self) -> int:
        return self.start_us + round(self.t_s * US_PER_S)

    def step(self, dt: float, now_us: int | None = None) -> list[DeviceSpec]:
        """Advance ``dt`` simulated seconds; returns device actions that fell due."""
        self.t_s += dt
        actions = self._due_events()
        self._ramps()
        measured = self.model.step(dt)
        quality = np.full(len(measured), int(Quality.GOOD), np.uint8)
        self.faults.apply(measured, quality, self.t_s)
        self.sis.step(measured, quality, self.t_s, self.model.command_valve)
        self.state.publish(measured, quality, self.now_us if now_us is None else now_us)
        return actions

    def run(self, seconds: float, dt: float = 1.0) -> list[DeviceSpec]:
        actions: list[DeviceSpec] = []
        for _ in range(round(seconds / dt)):
            actions += self.step(dt)
        return actions

    def _due_events(self) -> list[DeviceSpec]:
        out: list[DeviceSpec] = []
        events = self.scenario.events
        while self._next < len(events) and events[self._next].at_s <= self.t_s + 1e-9:
            spec = self.apply(events[self._next])
            if spec is not None:
                out.append(spec)
            self._next += 1
        return out

    def _ramps(self) -> None:
        for i, v0, v1, t0, t1 in self.ramps:
            f = min(1.0, (self.t_s - t0) / (t1 - t0))
            self.model.set_value(i, v0 + (v1 - v0) * f)
        self.ramps = [r for r in self.ramps if r[4] > self.t_s]

    # --- events and control ------------------------------------------------------------

    def index(self, ref: str) -> int:
        key = resolve_tag(self.plant, ref)
        if key is None:
            raise KeyError(f"unknown tag {ref!r}")
        return self.registry.index_of(key)

    def apply(self, ev: Event) -> DeviceSpec | None:
        if ev.leak is not None:
            lk = ev.leak
            self.model.add_leak(
                Leak(self._enterprise_of(lk.equipment), lk.equipment, lk.rate_kg_s, lk.gas, lk.position)
            )
        elif ev.stop_leak is not None:
            self.stop_leak(ev.stop_leak.equipment)
        elif ev.fault is not None:
            f = ev.fault
            self.inject_fault(
                f.tag, f.kind, value=f.value, rate_per_s=f.rate_per_s, magnitude=f.magnitude,
                sigma=f.sigma, quality=int(Quality[f.quality]), duration_s=f.duration_s,
            )  # fmt: skip
        elif ev.clear is not None:
            self.clear_fault(ev.clear.tag)
        elif ev.set is not None:
            self.set_value(ev.set.tag, ev.set.value, hold=ev.set.hold)
        elif ev.ramp is not None:
            i = self.index(ev.ramp.tag)
            self.ramps.append(
                (i, float(self.model.truth[i]), ev.ramp.to, self.t_s, self.t_s + ev.ramp.over_s)
            )
        elif ev.wind is not None:
            self.set_wind(ev.wind.speed_m_s, ev.wind.from_deg)
        elif ev.sis is not None:
            code, action = ev.sis.interlock, ev.sis.action
            if action == "RESET":
                self.sis.reset(code, self.t_s)
            else:
                self.sis.configure(code, fail=action == "FAIL")
        elif ev.device is not None:
            self.device_fault(ev.device)
            return ev.device
        return None

    def device_fault(self, spec: DeviceSpec) -> None:
        """Record OFFLINE/ONLINE/SLOW for the servers (RESTART is the runner's to perform)."""
        if spec.action == "OFFLINE":
            self.devices.offline.add(spec.id)
        elif spec.action == "ONLINE":
            self.devices.offline.discard(spec.id)
            self.devices.slow_s.pop(spec.id, None)
        elif spec.action == "SLOW":
            self.devices.slow_s[spec.id] = spec.delay_s

    def _enterprise_of(self, equipment: str) -> str:
        for ent in self.plant.enterprises:
            if any(e.code == equipment for h in ent.hazard_sources for u in h.units for e in u.equipment):
                return ent.code
        raise KeyError(f"unknown equipment {equipment!r}")

    def leak(self, equipment: str, rate_kg_s: float, gas: str | None = None) -> None:
        self.model.add_leak(Leak(self._enterprise_of(equipment), equipment, rate_kg_s, gas))

    def stop_leak(self, equipment: str | None = None) -> None:
        self.model.gas.leaks = [
            x for x in self.model.gas.leaks if equipment is not None and x.equipment != equipment
        ]

    def set_wind(self, speed_m_s: float, from_deg: float) -> None:
        self.model.gas.wind_speed_m_s = speed_m_s
        self.model.gas.wind_from_deg = from_deg

    def set_value(self, ref: str, value: float, *, hold: bool = False) -> None:
        self.model.set_value(self.index(ref), value, hold=hold)

    def inject_fault(self, ref: str, kind: str | FaultKind, **params: float | int | None) -> None:
        k = FaultKind[kind] if isinstance(kind, str) else kind
        self.faults.inject(self.index(ref), k, self.t_s, **params)  # type: ignore[arg-type]

    def clear_fault(self, ref: str) -> None:
        self.faults.clear(self.index(ref))

    def value(self, ref: str) -> float:
        return float(self.state.value[self.index(ref)])
