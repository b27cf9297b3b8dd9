"""Plant simulators over real OPC UA and Modbus, scenarios and replay (DESIGN.md: simulators/).

Public surface: ``Simulation`` (synchronous, deterministic stepping), ``Simulator`` (the
same behind live servers, with the control API), ``load_scenario``, ``Replayer`` with
``read_csv``/``write_csv``, and ``simulators.launch.start_simulator`` (free ports, outside pytest;
the pytest fixture lives in tests/support/simulator_fixture.py).
"""

from simulators.replay import Recording, Replayer, read_csv, write_csv
from simulators.runner import Simulator
from simulators.scenario import Scenario, load_scenario
from simulators.simulation import Simulation

__all__ = [
    "Recording",
    "Replayer",
    "Scenario",
    "Simulation",
    "Simulator",
    "load_scenario",
    "read_csv",
    "write_csv",
]
