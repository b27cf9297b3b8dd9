"""Integration: the demo plant's simulator scenarios through the rule engine.

The simulator steps deterministically (simulators.simulation, no servers); every second all
tags are delivered as one batch stamped with the poll time, as the Modbus collector does.
Expected edges are derived from the simulated values themselves: a limit rule must activate
exactly when the value first reached the limit plus its on-delay, and the edges of a scenario
must come in the order the process makes them.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest

from core.batch import ReadingBatch
from core.clock import US_PER_S
from core.conditions import RuleKind
from core.config import load_plant
from rules.engine import RuleEngine
from simulators.scenario import load_scenario
from simulators.simulation import Simulation

DEMO = Path("config/demo")


@cache
def run(name: str) -> tuple[RuleEngine, dict[str, np.ndarray], list[tuple[str, bool, float]]]:
    plant = load_plant(DEMO)
    scenario = load_scenario(DEMO / "scenarios" / f"{name}.yaml", plant)
    sim = Simulation(plant, scenario)
    engine = RuleEngine.from_plant(plant, sim.registry)
    n = len(sim.registry)
    trace, edges = [], []
    for _ in range(round(scenario.duration_s or 600)):
        sim.step(1.0)
        st = sim.state
        batch = ReadingBatch(
            np.arange(n, dtype=np.int32), np.full(n, sim.now_us, np.int64), st.value.copy(), st.quality.copy()
        )
        trace.append(st.value.copy())
        for r, active, ts, *_ in engine.evaluate(batch, sim.now_us).rows():
            edges.append((engine.rules.keys[r], active, (ts - sim.start_us) / US_PER_S))
    values = np.array(trace)
    return engine, {k: values[:, i] for i, k in enumerate(sim.registry.keys)}, edges


def first(edges: list[tuple[str, bool, float]], key: str, active: bool = True) -> float:
    times = [t for k, a, t in edges if k == key and a == active]
    assert times, f"no {'activation' if active else 'clearing'} of {key}"
    return times[0]


def reached(series: np.ndarray, limit: float, low: bool = False) -> float:
    """Seconds after start of the first sample at or beyond ``limit`` (samples at 1, 2, ... s)."""
    hit = np.flatnonzero(series <= limit if low else series >= limit)
    assert hit.size, f"the value never reached {limit}"
    return float(hit[0] + 1)


def check_limit_edge(
    engine: RuleEngine, trace: dict[str, np.ndarray], edges: list[tuple[str, bool, float]], key: str
) -> float:
    rules = engine.rules
    r = rules.index_of(key)
    subject = rules.subjects[r]
    low = RuleKind(int(rules.kind[r])) in (RuleKind.LL, RuleKind.L, RuleKind.O2_LOW)
    t_reach = reached(trace[subject], float(rules.set_at[r]), low)
    delay = int(rules.on_us[r]) / US_PER_S
    window = trace[subject][int(t_reach) - 1 : int(t_reach + delay)]
    assert (window <= rules.set_at[r]).all() if low else (window >= rules.set_at[r]).all(), (
        f"{key} dipped during its on-delay"
    )
    assert first(edges, key) == t_reach + delay, key
    return t_reach + delay


def test_ammonia_leak() -> None:
    engine, trace, edges = run("ammonia-leak")
    l1 = {d: check_limit_edge(engine, trace, edges, f"LHJH.V402.{d}:GAS_L1") for d in ("AT-402", "AT-403")}
    l2 = {d: check_limit_edge(engine, trace, edges, f"LHJH.V402.{d}:GAS_L2") for d in ("AT-402", "AT-403")}
    assert all(l1[d] < l2[d] for d in l1)  # level 1 before level 2 at each detector
    assert all(t >= 30 for t in l1.values())  # nothing before the leak starts
    # IL-402 is 2oo3 on >= 57 ppm: the demand comes with the second detector past 57 ppm
    crossings = sorted(
        reached(trace[f"LHJH.{k}"], 57.0)
        for k in ("V401.AT-401", "V402.AT-402", "V402.AT-403")
        if (trace[f"LHJH.{k}"] >= 57).any()
    )
    assert first(edges, "LHJH-H04.IL-402:TRIP_DEMAND") == crossings[1]
    # the simulated SIS closes XV-402 within its response time: no demand without action
    assert not [e for e in edges if e[0] == "LHJH-H04.IL-402:NO_ACTION"]
    assert trace["LHJH.V402.XV-402"][-1] == 0
    # after the leak is stopped the conditions clear (latching is the alarm manager's)
    assert first(edges, "LHJH.V402.AT-402:GAS_L2", active=False) > 400
    assert first(edges, "LHJH-H04.IL-402:TRIP_DEMAND", active=False) > 400
    assert not [e for e in edges if e[0].endswith((":STALE", ":BAD_QUALITY", ":OUT_OF_RANGE"))]


def test_gas_holder_overpressure() -> None:
    engine, trace, edges = run("gas-holder-overpressure")
    flow_h = check_limit_edge(engine, trace, edges, "LHJH.G101.FT-101:H")
    assert flow_h == 10 + 15  # set at 10 s, flow on-delay 15 s (DOMAIN.md)
    times = {
        k: check_limit_edge(engine, trace, edges, k)
        for k in ("LHJH.G101.LT-101A:H", "LHJH.G101.LT-101A:HH", "LHJH.G101.PT-101:H", "LHJH.G101.PT-101:HH")
    }
    assert times["LHJH.G101.LT-101A:H"] < times["LHJH.G101.LT-101A:HH"]
    assert times["LHJH.G101.PT-101:H"] < times["LHJH.G101.PT-101:HH"]
    assert first(edges, "LHJH.G101.FT-101:H", active=False) >= 700
    ordered = [k for k, a, _ in edges if a]
    assert ordered.index("LHJH.G101.FT-101:H") < ordered.index("LHJH.G101.LT-101A:H")


@pytest.mark.parametrize("name", ["ammonia-leak", "gas-holder-overpressure"])
def test_live_view_shows_active_conditions(name: str) -> None:
    engine, _, _ = run(name)
    for cond in engine.active():
        assert cond.subject and cond.since_us > 0 and cond.description
