"""The simulator as a pytest fixture: real servers on free ports, stopped after the test.

Registered suite-wide by tests/conftest.py; use from any test package::

    from tests.support.simulator_fixture import SimulatorFactory

    async def test_reads(simulator: SimulatorFactory):
        sim = await simulator("tests/simulators/data/plant.yaml", seed=1)
        plant = sim.plant_for_clients()           # devices point at the real ports
        host, port = sim.modbus_address("PLC1")
        await sim.step(5)                          # deterministic: time moves only here

``autostep=True`` lets the simulator run on its own clock at ``rate_hz`` instead.
Outside pytest use ``simulators.launch.start_simulator`` (this module imports pytest_asyncio,
a dev-only dependency, so production code must never import it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio

from core.plant import Plant
from simulators.launch import PathLike, build_simulator
from simulators.runner import Simulator
from simulators.scenario import Scenario

__all__ = ["SimulatorFactory", "simulator"]

SimulatorFactory = Callable[..., Awaitable[Simulator]]


@pytest_asyncio.fixture
async def simulator() -> AsyncIterator[SimulatorFactory]:
    """A factory: ``await simulator(plant, scenario=None, seed=0, **Simulator kwargs)``."""
    started: list[Simulator] = []

    async def make(
        plant: Plant | PathLike,
        scenario: Scenario | PathLike | None = None,
        seed: int | None = 0,
        **kwargs: Any,
    ) -> Simulator:
        sim = build_simulator(plant, scenario, seed, **kwargs)
        await sim.start()
        started.append(sim)
        return sim

    try:
        yield make
    finally:
        for sim in reversed(started):
            await sim.stop()
