"""Scenario files: the demo timelines load and run; errors name file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import load_plant
from core.errors import ConfigError
from core.plant import Plant
from simulators.scenario import load_scenario
from simulators.simulation import Simulation
from tests.simulators.conftest import DATA

DEMO = Path(__file__).parents[2] / "config" / "demo"


def test_errors_name_file_line_and_path(plant: Plant) -> None:
    with pytest.raises(ConfigError) as err:
        load_scenario(DATA / "bad-scenario.yaml", plant)
    text = str(err.value)
    assert "bad-scenario.yaml:8 events[2].set.colour: unknown key" in text
    assert "bad-scenario.yaml:9 events[3].at_s: Input should be greater than or equal to 0" in text
    # references are checked once the structure is sound
    fixed = DATA / "bad-refs.yaml"
    fixed.write_text("\n".join((DATA / "bad-scenario.yaml").read_text().splitlines()[:6]) + "\n")
    try:
        with pytest.raises(ConfigError) as err:
            load_scenario(fixed, plant)
        text = str(err.value)
        assert "bad-refs.yaml:4 events[0].fault.tag: unknown tag 'V101.NOPE'" in text
        assert "bad-refs.yaml:6 events[1].device.id: unknown device 'PLC9'" in text
    finally:
        fixed.unlink()


@pytest.mark.parametrize(
    "name", ["ammonia-leak", "gas-holder-overpressure", "co-detector-stuck", "plc-restart"]
)
def test_demo_scenarios_load_and_run(name: str) -> None:
    plant = load_plant(DEMO)
    sc = load_scenario(DEMO / "scenarios" / f"{name}.yaml", plant)
    sim = Simulation(plant, sc)
    actions = sim.run(sc.duration_s or 60, dt=1.0)
    if name == "plc-restart":
        assert [a.action for a in actions] == ["RESTART", "OFFLINE", "ONLINE", "SLOW", "ONLINE"]


def test_ammonia_leak_trips_the_2oo3_gas_interlock() -> None:
    plant = load_plant(DEMO)
    sim = Simulation(plant, load_scenario(DEMO / "scenarios" / "ammonia-leak.yaml", plant))
    sim.run(300, dt=1.0)
    assert [e.what for e in sim.sis.events if e.interlock == "IL-402"] == ["DEMAND", "TRIP"]
    assert sim.value("LHJH.V402.XV-402") == 0.0


def test_stuck_detector_holds_near_limit_while_neighbour_alarms() -> None:
    plant = load_plant(DEMO)
    sim = Simulation(plant, load_scenario(DEMO / "scenarios" / "co-detector-stuck.yaml", plant))
    sim.run(200, dt=1.0)
    assert sim.value("LGGT.BF1.AT-601") == 23.9
    assert sim.value("LGGT.BF1.AT-604") > 160.0  # same furnace, not stuck: past level 2
