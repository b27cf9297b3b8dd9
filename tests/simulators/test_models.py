"""Process models, SIS and determinism, stepped without servers or wall-clock time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.config import load_plant
from core.plant import Plant
from core.quality import Quality
from simulators.scenario import Event, Scenario
from simulators.simulation import Simulation
from tests.support.plants import write_small_plant

LEAK = Scenario(
    name="leak",
    events=[
        Event.model_validate({"at_s": 5, "leak": {"equipment": "V101", "rate_kg_s": 0.2, "gas": "NH3"}}),
        Event.model_validate({"at_s": 20, "fault": {"tag": "G201.AT01", "kind": "NOISE", "sigma": 3}}),
        Event.model_validate({"at_s": 30, "set": {"tag": "G201.FT_IN", "value": 45000}}),
    ],
)


def _series(plant: Plant, seed: int, steps: int = 120) -> tuple[np.ndarray, np.ndarray]:
    sim = Simulation(plant, LEAK, seed=seed)
    vals, quals = [], []
    for _ in range(steps):
        sim.step(0.5)
        vals.append(sim.state.value.copy())
        quals.append(sim.state.quality.copy())
    return np.array(vals), np.array(quals)


def test_same_seed_and_scenario_give_identical_series(plant: Plant) -> None:
    a, qa = _series(plant, seed=7)
    b, qb = _series(plant, seed=7)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(qa, qb)
    c, _ = _series(plant, seed=8)
    assert not np.array_equal(a, c)


def test_leak_reaches_near_detector_first_with_t90_lag(plant: Plant) -> None:
    sim = Simulation(plant, seed=0)
    near, holder = sim.index("V101.AT01"), sim.index("G201.AT01")
    sim.leak("V101", 0.05, gas="NH3")
    sim.step(1.0)
    first = sim.model.truth[near]
    sim.run(60, dt=1.0)
    steady = sim.model.truth[near]
    assert 0 < first < 0.2 * steady  # the detector lags (T90 20 s)
    sim.run(0)
    assert sim.model.truth[holder] == pytest.approx(sim.model.lo[holder])  # CO detector: other gas


def test_vessel_pressure_follows_temperature(plant: Plant) -> None:
    sim = Simulation(plant, seed=0)
    p0 = sim.model.truth[sim.index("V101.PT01")]
    sim.set_value("V101.TT01", 30.0, hold=True)
    sim.step(1.0)
    assert sim.model.truth[sim.index("V101.PT01")] > 1.5 * p0
    assert sim.model.truth[sim.index("V101.PT02")] == sim.model.truth[sim.index("V101.PT01")]


def test_gas_holder_overfills_and_pressure_rises(plant: Plant) -> None:
    sim = Simulation(plant, seed=0)
    sim.set_value("G201.FT_IN", 50000.0)
    sim.set_value("G201.FT_OUT", 0.0)
    sim.run(7200, dt=5.0)
    assert sim.value("G201.LT01") == pytest.approx(60.0, abs=0.1)
    assert sim.value("G201.PT01") > 7.0  # past HH


def test_tank_level_rises_with_inflow(plant: Plant) -> None:
    sim = Simulation(plant, seed=0)
    before = sim.value("T301.LT02")
    sim.set_value("T301.FT01_IN", 90.0)
    sim.set_value("T301.FT02_OUT", 10.0)
    sim.run(1800, dt=5.0)
    assert sim.value("T301.LT02") > before + 3.0


def test_sis_trips_and_closes_valve_after_delay_and_travel(plant: Plant) -> None:
    sim = Simulation(plant, seed=0)
    sim.sis.configure("SIF101", delay_s=2.0)
    sim.set_value("V101.TT01", 40.0, hold=True)  # pressure well past 1.6 MPa on all three
    sim.run(3, dt=1.0)
    assert [e.what for e in sim.sis.events] == ["DEMAND", "TRIP"]
    sim.run(6, dt=1.0)
    assert sim.value("XV101.ZT01") == 0.0


def test_sis_bypass_makes_2oo3_act_as_2oo2(plant: Plant) -> None:
    sim = Simulation(plant, seed=0)
    sim.set_value("V101.BY01", 1)
    sim.inject_fault("V101.PT02", "STUCK", value=2.0)
    sim.inject_fault("V101.PT01", "STUCK", value=2.0)  # bypassed: does not vote
    sim.run(5, dt=1.0)
    assert not sim.sis.events
    sim.inject_fault("V101.PT03", "STUCK", value=2.0)
    sim.run(3, dt=1.0)
    assert sim.sis.events[-1].what == "TRIP"


def test_sis_demand_without_action(plant: Plant) -> None:
    sim = Simulation(plant, seed=0)
    sim.sis.configure("SIF101", fail=True)
    sim.inject_fault("V101.PT03", "BAD_QUALITY", quality=int(Quality.BAD))  # BAD votes to trip
    sim.inject_fault("V101.PT02", "STUCK", value=1.7)
    sim.run(20, dt=1.0)
    assert sim.sis.events[-1].what == "DEMAND_IGNORED"
    assert sim.value("XV101.ZT01") == 100.0


COUNTERS = """\
- {code: RH1, name: 运行小时, equipment: V1, kind: COUNTER, unit: h, source: {device: UA1, node: "s=RH1"}}
- {code: FQ1, name: 累计流量, equipment: V1, kind: COUNTER, unit: m³, source: {device: UA1, node: "s=FQ1"}}
"""


def test_counters_accumulate(tmp_path: Path) -> None:
    devices = '- {protocol: OPCUA, id: UA1, endpoint: "opc.tcp://127.0.0.1:4840/x", namespace_uri: "urn:x"}'
    sim = Simulation(load_plant(write_small_plant(tmp_path, devices, COUNTERS)), seed=1)
    start = sim.state.value.copy()
    for _ in range(360):
        sim.step(10.0)
    gained = sim.state.value - start
    # one run hour per hour; a totaliser one unit a minute
    np.testing.assert_allclose(gained, [1.0, 60.0], rtol=1e-6)
