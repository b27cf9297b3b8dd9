"""Collectors against the simulated demo plant: every tag, its value and quality; one device down."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from collector.base import CollectorRunner
from collector.factory import build_sources
from core.clock import SystemClock
from core.live import LiveSnapshot
from core.plant import ModbusDevice, Plant
from core.quality import Quality
from core.registry import TagRegistry
from tests.support.plants import fast_polling, mismatches, tolerance
from tests.support.simulator_fixture import SimulatorFactory
from tests.support.waiting import eventually

DEMO = "config/demo"


class Collectors:
    def __init__(self, plant: Plant) -> None:
        self.registry = TagRegistry.from_plant(plant)
        self.live = LiveSnapshot(len(self.registry))
        sources = build_sources(plant, self.registry, SystemClock())
        self.runners = {
            s.name: CollectorRunner(s, self.live.apply, backoff_initial_s=0.2, backoff_max_s=0.5)
            for s in sources
        }
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [asyncio.create_task(r.run()) for r in self.runners.values()]

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_every_demo_tag_arrives_with_the_simulated_value_and_good_quality(
    simulator: SimulatorFactory,
) -> None:
    sim = await simulator(DEMO, seed=3)
    await sim.step(5)
    plant = fast_polling(sim.plant_for_clients())
    collectors = Collectors(plant)
    collectors.start()
    try:

        def off() -> list[tuple[str, float, float]]:
            return mismatches(plant, collectors.registry.keys, collectors.live.value.tolist(), sim.value)

        await eventually(lambda: bool((collectors.live.quality == Quality.GOOD).all()))
        # A device polled before the last step settles on its next poll: wait for that, not for a fixed time.
        try:
            await eventually(lambda: not off(), timeout=10)
        except TimeoutError:
            raise AssertionError(f"collected values differ from the simulator: {off()}") from None
        assert len(collectors.registry) == 87
    finally:
        await collectors.stop()


async def test_one_modbus_device_offline_goes_bad_within_two_polls_while_others_keep_cadence(
    simulator: SimulatorFactory,
) -> None:
    sim = await simulator(DEMO, seed=1, opcua=False)
    await sim.step(1)
    poll = 0.25
    plant = fast_polling(sim.plant_for_clients(), poll)
    modbus = [d.id for d in plant.devices() if isinstance(d, ModbusDevice)]
    down, healthy = modbus[0], modbus[1:]
    keys = [t.key for t in plant.tags() if t.source.device == down]
    collectors = Collectors(Plant.model_validate(plant.model_dump(mode="json")))
    for name in list(collectors.runners):
        if name not in modbus:
            del collectors.runners[name]  # OPC UA servers are not started in this test
    collectors.start()
    try:
        idx = collectors.registry.indexes_of(keys)
        await eventually(lambda: bool((collectors.live.quality[idx] == Quality.GOOD).all()))

        def done(n: str) -> int:
            return collectors.runners[n].stats.reads - reads_before[n]

        # The healthy devices' own polls are the clock: counts hold on a loaded machine where a
        # wall-clock span does not, since a slow event loop slows both sides alike.
        reads_before = {n: collectors.runners[n].stats.reads for n in healthy}
        await sim.device_offline(down)
        await eventually(lambda: bool((collectors.live.quality[idx] != Quality.GOOD).all()), timeout=10)
        # Two polls and the 0.2 s request timeout are 3 healthy polls (measured: 3); one more for
        # phase, one for a loaded machine: detection more than about a second late fails.
        polls = min(done(n) for n in healthy)
        assert polls <= 5, f"BAD only after {polls} polls of every healthy device"
        assert set(collectors.live.quality[idx].tolist()) == {Quality.BAD_COMM_FAILURE}
        # Others keep cadence: 8 more polls each, nominally 2 s; a device stalled by the dead one
        # (waiting out its timeouts) would need many times that. The deadline only bounds failure.
        want = {n: done(n) + 8 for n in healthy}
        try:
            await eventually(lambda: all(done(n) >= want[n] for n in healthy), timeout=8 * poll * 3)
        except TimeoutError:
            slow = {n: (done(n), want[n]) for n in healthy if done(n) < want[n]}
            raise AssertionError(f"healthy devices slowed down (reads, wanted): {slow}") from None
        await sim.device_online(down)
        await sim.step(1)
        await eventually(lambda: bool((collectors.live.quality[idx] == Quality.GOOD).all()), timeout=70)
        assert np.isfinite(collectors.live.value[idx]).all()
    finally:
        await collectors.stop()


@pytest.mark.parametrize("renumber", [True])
async def test_opcua_server_restart_resumes_without_restarting_hazardwatch(
    simulator: SimulatorFactory, renumber: bool
) -> None:
    sim = await simulator(DEMO, seed=2, modbus=False)
    await sim.step(1)
    plant = fast_polling(sim.plant_for_clients())
    collectors = Collectors(plant)
    opc = [
        n
        for n in collectors.runners
        if n not in {d.id for d in plant.devices() if isinstance(d, ModbusDevice)}
    ]
    for name in list(collectors.runners):
        if name not in opc:
            del collectors.runners[name]
    dev = opc[0]
    keys = [
        t.key
        for t in plant.tags()
        if t.source.device == dev and t.kind in ("LEVEL", "PRESSURE", "TEMPERATURE")
    ]
    idx = collectors.registry.indexes_of(keys)
    collectors.start()
    try:
        await eventually(lambda: bool((collectors.live.quality[idx] == Quality.GOOD).all()))
        await sim.restart_device(dev, renumber=renumber, down_s=1.0)
        runner = collectors.runners[dev]
        await eventually(lambda: "failed" in runner.stats.history, timeout=15)
        await eventually(lambda: runner.stats.state == "ok", timeout=30)
        key = keys[0]
        sim.set_value(key, sim.value(key) + 0.5, hold=True)
        await sim.step(1)
        want = sim.value(key)
        try:
            await eventually(
                lambda: math.isclose(
                    float(collectors.live.value[idx[0]]), want, abs_tol=tolerance(plant, key, want)
                )
            )
        except TimeoutError:
            raise AssertionError(f"{key}: want {want}, collected {collectors.live.value[idx[0]]}") from None
        assert collectors.live.quality[idx[0]] == Quality.GOOD
    finally:
        await collectors.stop()
