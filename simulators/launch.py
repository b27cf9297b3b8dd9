"""The simulator as a pytest fixture: real servers on free ports, stopped after the test.

Use from any test package (tests/conftest.py, or per folder)::

    from simulators.fixtures import simulator  # noqa: F401  (re-exported fixture)

    async def test_reads(simulator):
        sim = await simulator("tests/simulators/data/plant.yaml", seed=1)
        plant = sim.plant_for_clients()           # devices point at the real ports
        host, port = sim.modbus_address("PLC1")
        await sim.step(5)                          # deterministic: time moves only here

``autostep=True`` lets the simulator run on its own clock at ``rate_hz`` instead.
``start_simulator`` is the same thing as an async context manager, outside pytest.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest_asyncio

from core.config import load_plant
from core.plant import Plant
from simulators.runner import Simulator
from simulators.scenario import Scenario, load_scenario

__all__ = ["SimulatorFactory", "simulator", "start_simulator"]

PathLike = str | os.PathLike[str]
SimulatorFactory = Callable[..., Awaitable[Simulator]]


def _build(
    plant: Plant | PathLike, scenario: Scenario | PathLike | None, seed: int | None, **kwargs: Any
) -> Simulator:
    p = plant if isinstance(plant, Plant) else load_plant(Path(plant))
    sc = scenario if scenario is None or isinstance(scenario, Scenario) else load_scenario(scenario, p)
    kwargs.setdefault("autostep", False)
    return Simulator(p, sc, seed=seed, free_ports=True, **kwargs)


@asynccontextmanager
async def start_simulator(
    plant: Plant | PathLike, scenario: Scenario | PathLike | None = None, seed: int | None = 0, **kwargs: Any
) -> AsyncIterator[Simulator]:
    sim = _build(plant, scenario, seed, **kwargs)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


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
        sim = _build(plant, scenario, seed, **kwargs)
        await sim.start()
        started.append(sim)
        return sim

    try:
        yield make
    finally:
        for sim in reversed(started):
            await sim.stop()
