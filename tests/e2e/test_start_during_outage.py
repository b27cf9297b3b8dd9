"""Starting while the database is down: collect and spool with the cached tag ids, lose nothing.

The database sits behind a loopback proxy the test cuts and restores (a real outage, not
a flag). First run: sync and cache the tag ids. Second run: starts with the proxy cut,
spools, then drains into the database once the proxy is back. Its stop summary accounts
for every row (drained ones included) and the outage it reports is counted from its own
first failed attempt, and says so.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from core.clock import SystemClock
from core.errors import DatabaseUnavailable
from core.plant import Plant
from core.quality import Quality
from hazardwatch.runtime import Runtime, RuntimeOptions
from tests.e2e.helpers import in_data_dir
from tests.support.plants import fast_polling
from tests.support.proxy import TcpProxy
from tests.support.simulator_fixture import SimulatorFactory
from tests.support.waiting import eventually


def with_spool(plant: Plant, spool: Path) -> Plant:
    storage = plant.settings.storage.model_copy(update={"spool_dir": str(spool)})
    return plant.model_copy(update={"settings": plant.settings.model_copy(update={"storage": storage})})


async def test_start_with_the_database_down_spools_then_drains(
    simulator: SimulatorFactory, tsdb: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sim = await simulator("config/demo", seed=7, opcua=False)
    await sim.step(1)
    # An explicit spool_dir outside the data directory still works (and is locked too).
    plant = with_spool(
        in_data_dir(fast_polling(sim.plant_for_clients()), tmp_path / "data"), tmp_path / "spool"
    )
    modbus_tags = [
        t
        for t in plant.tags()
        if t.source.device in {d.id for d in plant.devices() if d.protocol == "MODBUS"}
    ]
    proxy = TcpProxy(int(conninfo_to_dict(tsdb)["port"] or 5433))
    await proxy.start()
    via_proxy = make_conninfo(tsdb, port=str(proxy.port))
    options = RuntimeOptions(metrics_port=None)
    try:
        first = Runtime(plant, via_proxy, options=options)
        await first.start()
        await first.stop()
        assert (tmp_path / "spool" / "tag-ids.json").exists()

        await proxy.cut()
        outage_start = SystemClock().now_us()
        second = Runtime(plant, via_proxy, options=options)
        started = time.monotonic()
        await second.start()  # must not need the database
        assert second.writer is not None
        idx = second.registry.indexes_of([t.key for t in modbus_tags])
        await eventually(lambda: bool((second.live.quality[idx] == Quality.GOOD).all()))
        await sim.step(1)
        await eventually(lambda: second.writer is not None and second.writer.metrics()["pending_rows"] > 0)
        assert second.writer.metrics()["db_up"] == 0
        await proxy.restore()
        restored = time.monotonic()
        async with asyncio.timeout(60):
            await second.writer.wait_drained()  # spool and buffer empty, database connected
        assert second.writer.metrics()["drained_rows"] > 0
        await second.stop()
        summary = second.summary()
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

    # Every row collected is stored: directly or drained from the spool, and the summary says so.
    assert summary.readings > 0 and summary.drained_rows > 0 and summary.pending_rows == 0
    assert summary.spooled_at_start == 0 and summary.gap_markers == 0  # the first run stopped cleanly
    assert summary.to_historian == summary.collected and summary.unaccounted == 0
    assert summary.written_rows + summary.drained_rows == summary.collected
    text = summary.text()
    assert f"{summary.readings} readings collected" in text
    assert (
        f"{summary.written_rows} rows written directly, {summary.drained_rows} drained from the spool" in text
    )

    # The outage is counted from this process's first failed attempt (at start), and says so.
    (back,) = [r.getMessage() for r in caplog.records if "database back after" in r.getMessage()]
    m = re.search(r"database back after ([\d.]+) s \(counted from this process's first failed attempt", back)
    assert m is not None, back
    failed_at = second._db_failed_at  # SystemClock.monotonic is time.monotonic
    assert failed_at is not None and started <= failed_at < restored
    assert float(m.group(1)) >= restored - failed_at - 0.05, back


async def test_markers_of_a_lost_device_are_counted_apart_from_readings(tsdb: str, tmp_path: Path) -> None:
    from core.config import load_plant

    config = tmp_path / "plant.yaml"  # a Modbus device on port 1, where nothing answers
    config.write_text(Path("tests/storage/data/plant.yaml").read_text(encoding="utf-8").replace("5020", "1"))
    plant = in_data_dir(load_plant(config), tmp_path / "data")
    runtime = Runtime(plant, tsdb, options=RuntimeOptions(metrics_port=None))
    await runtime.start()
    try:
        await eventually(lambda: bool((runtime.live.quality == Quality.BAD_COMM_FAILURE).all()))
        stored = ("written_rows", "drained_rows")  # drained: spooled before the writer's first connect
        await eventually(
            lambda: runtime.writer is not None and sum(runtime.writer.metrics()[k] for k in stored) == 3
        )
    finally:
        await runtime.stop()
    summary = runtime.summary()
    assert (summary.readings, summary.comm_markers) == (0, 3)
    assert summary.written_rows + summary.drained_rows == summary.collected == 3 and summary.unaccounted == 0
    assert "0 readings collected, 3 comm-failure markers" in summary.text()


async def test_without_cached_ids_a_start_during_an_outage_fails_clearly(tmp_path: Path) -> None:
    from core.config import load_plant

    plant = in_data_dir(load_plant("tests/core/data/two_enterprises.yaml"), tmp_path / "data")
    runtime = Runtime(
        plant, "postgresql://postgres@127.0.0.1:1/nowhere", options=RuntimeOptions(metrics_port=None)
    )
    with pytest.raises(DatabaseUnavailable):
        await runtime.start()
