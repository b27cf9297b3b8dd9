"""Starting while the database is down: collect and spool with the cached tag ids, lose nothing.

The database sits behind a loopback proxy the test cuts and restores (a real outage, not
a flag). First run: sync and cache the tag ids. Second run: starts with the proxy cut,
spools, then drains into the database once the proxy is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from core.clock import SystemClock
from core.errors import DatabaseUnavailable
from core.plant import Plant
from core.quality import Quality
from hazardwatch.runtime import Runtime, RuntimeOptions
from simulators.fixtures import SimulatorFactory
from tests.support.plants import fast_polling
from tests.support.proxy import TcpProxy


async def until(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.05)


def with_spool(plant: Plant, spool: Path) -> Plant:
    storage = plant.settings.storage.model_copy(update={"spool_dir": str(spool)})
    return plant.model_copy(update={"settings": plant.settings.model_copy(update={"storage": storage})})


async def test_start_with_the_database_down_spools_then_drains(
    simulator: SimulatorFactory, tsdb: str, tmp_path: Path
) -> None:
    sim = await simulator("config/demo", seed=7, opcua=False)
    await sim.step(1)
    plant = with_spool(fast_polling(sim.plant_for_clients()), tmp_path / "spool")
    modbus_tags = [
        t
        for t in plant.tags()
        if t.source.device in {d.id for d in plant.devices() if d.protocol == "MODBUS"}
    ]
    proxy = TcpProxy(int(conninfo_to_dict(tsdb)["port"] or 5433))
    await proxy.start()
    via_proxy = make_conninfo(tsdb, port=str(proxy.port))
    options = RuntimeOptions(metrics_port=None, rule_state_file=str(tmp_path / "rules.json"))
    try:
        first = Runtime(plant, via_proxy, options=options)
        await first.start()
        await first.stop()
        assert (tmp_path / "spool" / "tag-ids.json").exists()

        await proxy.cut()
        outage_start = SystemClock().now_us()
        second = Runtime(plant, via_proxy, options=options)
        await second.start()  # must not need the database
        assert second.writer is not None
        idx = second.registry.indexes_of([t.key for t in modbus_tags])
        await until(lambda: bool((second.live.quality[idx] == Quality.GOOD).all()))
        await sim.step(1)
        await until(lambda: second.writer is not None and second.writer.metrics()["pending_rows"] > 0)
        assert second.writer.metrics()["db_up"] == 0
        await proxy.restore()
        async with asyncio.timeout(60):
            await second.writer.wait_drained()  # spool and buffer empty, database connected
        assert second.writer.metrics()["drained_rows"] > 0
        await second.stop()
    finally:
        await proxy.stop()

    async with await psycopg.AsyncConnection.connect(tsdb) as conn:
        cur = await conn.execute(
            "SELECT t.key, count(*) FROM reading r JOIN tag t ON t.id = r.tag_id"
            " WHERE r.time >= to_timestamp(%s / 1e6) GROUP BY t.key",
            [outage_start],
        )
        counts = dict(await cur.fetchall())
    missing = [t.key for t in modbus_tags if not counts.get(t.key)]
    assert not missing, f"no readings from the outage for {missing[:5]}"
    metrics = second.writer.metrics()
    assert metrics["dropped_rows"] == 0


async def test_without_cached_ids_a_start_during_an_outage_fails_clearly(tmp_path: Path) -> None:
    from core.config import load_plant

    plant = with_spool(load_plant("tests/core/data/two_enterprises.yaml"), tmp_path / "spool")
    runtime = Runtime(
        plant, "postgresql://postgres@127.0.0.1:1/nowhere", options=RuntimeOptions(metrics_port=None)
    )
    with pytest.raises(DatabaseUnavailable):
        await runtime.start()
