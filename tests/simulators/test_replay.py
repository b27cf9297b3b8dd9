"""CSV export/replay: values come back at their recorded relative times."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from core.clock import US_PER_S, FakeClock
from core.errors import ConfigError
from core.plant import Plant
from core.registry import TagRegistry
from simulators.replay import Replayer, read_csv, write_csv
from tests.simulators.clients import read_modbus
from tests.support.simulator_fixture import SimulatorFactory

T0 = 1_715_000_000 * US_PER_S
KEY = "E1.V101.PT02"  # Modbus FLOAT32


def _record(path: Path, spacing_s: list[float]) -> list[float]:
    t, rows, values = 0.0, [], []
    for k, dt in enumerate(spacing_s):
        t += dt
        values.append(0.5 + 0.1 * k)
        rows.append((T0 + round(t * US_PER_S), KEY, values[-1], 0xC0))
    rows.append((T0, "E1.V101.TT01", 20.0, 0xC0))
    write_csv(path, rows)
    return values


def test_csv_round_trip_and_errors(tmp_path: Path, plant: Plant) -> None:
    reg = TagRegistry.from_plant(plant)
    _record(tmp_path / "h.csv", [0.0, 1.0, 2.5])
    rec = read_csv(tmp_path / "h.csv", reg)
    assert len(rec) == 4 and rec.duration_s == pytest.approx(3.5)
    assert rec.ts[0] == T0 and list(rec.ts) == sorted(rec.ts)
    (tmp_path / "bad.csv").write_text(
        "time,tag,value,quality\n2024-05-06T00:00:00Z,E1.NOPE.X,1,192\nnot-a-time,E1.V101.PT02,1,192\n"
    )
    with pytest.raises(ConfigError) as err:
        read_csv(tmp_path / "bad.csv", reg)
    assert "bad.csv:2" in str(err.value) and "bad.csv:3" in str(err.value)


async def test_replay_on_fake_clock_keeps_spacing_scaled(
    tmp_path: Path, simulator: SimulatorFactory, plant: Plant
) -> None:
    clock = FakeClock(start_us=T0 + 3600 * US_PER_S)
    sim = await simulator(plant, opcua=False, clock=clock)
    values = _record(tmp_path / "h.csv", [0.0, 1.0, 2.5, 0.5])
    rec = read_csv(tmp_path / "h.csv", sim.sim.registry)
    seen: list[tuple[float, float]] = []
    orig = sim.publish

    async def spy() -> None:
        await orig()
        seen.append((clock.monotonic(), sim.value(KEY)))

    sim.publish = spy  # type: ignore[method-assign]
    await Replayer(sim, rec, speed=2.0).run()
    assert [v for _, v in seen if v in values] == values
    assert [t for t, _ in seen[1:]] == pytest.approx([0.5, 1.75, 2.0])  # (1, 3.5, 4) s at 2x


async def test_replay_real_time_through_modbus(
    tmp_path: Path, simulator: SimulatorFactory, plant: Plant
) -> None:
    """Wall-clock replay at 4x read back by polling: each value appears within 150 ms of its time."""
    sim = await simulator(plant, opcua=False)
    values = _record(tmp_path / "h.csv", [0.0, 0.8, 0.8, 0.8])  # 0, 0.2, 0.4, 0.6 s at 4x
    rec = read_csv(tmp_path / "h.csv", sim.sim.registry, tags=[KEY])
    host, port = sim.modbus_address("PLC1")
    client = AsyncModbusTcpClient(host, port=port, timeout=1, retries=0)
    await client.connect()
    first_seen: dict[float, float] = {}
    try:
        t0 = time.perf_counter()
        task = asyncio.create_task(Replayer(sim, rec, speed=4.0).run())
        while not task.done() or len(first_seen) < len(values):
            v = round(await read_modbus(client, plant, plant.tag(KEY)), 4)
            first_seen.setdefault(v, time.perf_counter() - t0)
            if time.perf_counter() - t0 > 3:
                break
            await asyncio.sleep(0.005)
        await task
    finally:
        client.close()
    for k, v in enumerate(values):
        assert first_seen[round(v, 4)] == pytest.approx(0.2 * k, abs=0.15)
