"""Start the simulated plant on free loopback ports, outside pytest (``hazardwatch demo``, benches).

``start_simulator`` is an async context manager: real OPC UA and Modbus servers on free ports,
stopped on the way out. ``build_simulator`` is the same without starting, for callers (the
pytest fixture in tests/support/simulator_fixture.py) that manage start/stop themselves.

Invariant: this module is on a production import path (``hazardwatch demo``), so it imports
nothing from pytest or any other dev-only package.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from core.config import load_plant
from core.plant import Plant
from simulators.runner import Simulator
from simulators.scenario import Scenario, load_scenario

__all__ = ["PathLike", "build_simulator", "start_simulator"]

PathLike = str | os.PathLike[str]


def build_simulator(
    plant: Plant | PathLike, scenario: Scenario | PathLike | None, seed: int | None, **kwargs: Any
) -> Simulator:
    """A Simulator on free ports, not started; ``autostep`` defaults to False (time moves on ``step``)."""
    p = plant if isinstance(plant, Plant) else load_plant(Path(plant))
    sc = scenario if scenario is None or isinstance(scenario, Scenario) else load_scenario(scenario, p)
    kwargs.setdefault("autostep", False)
    return Simulator(p, sc, seed=seed, free_ports=True, **kwargs)


@asynccontextmanager
async def start_simulator(
    plant: Plant | PathLike, scenario: Scenario | PathLike | None = None, seed: int | None = 0, **kwargs: Any
) -> AsyncIterator[Simulator]:
    sim = build_simulator(plant, scenario, seed, **kwargs)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()
