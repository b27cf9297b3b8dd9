"""`hazardwatch run` wiring against the simulated demo plant and a real TimescaleDB.

Every demo tag must reach the historian with the simulated value (within what the wire
carries), GOOD quality, and the timestamp its device is configured to give: the
server's source timestamp for OPC UA (timestamp_source SOURCE, read back by an independent
client), gather time for Modbus.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC
from pathlib import Path

import psycopg
from asyncua import Client, ua
from prometheus_client.parser import text_string_to_metric_families

from core.clock import SystemClock, from_datetime
from core.plant import ModbusDevice, OpcUaDevice, Plant
from core.quality import Quality
from hazardwatch.runtime import Runtime, RuntimeOptions
from tests.e2e.helpers import in_data_dir
from tests.support.plants import fast_polling, mismatches, tolerance
from tests.support.simulator_fixture import SimulatorFactory
from tests.support.waiting import eventually


async def opcua_source_timestamps(plant: Plant) -> dict[str, int]:
    """SourceTimestamp of every OPC UA tag as an independent asyncua client reads it."""
    out: dict[str, int] = {}
    for dev in plant.devices():
        if not isinstance(dev, OpcUaDevice):
            continue
        tags = [t for t in plant.tags() if t.source.device == dev.id]
        async with Client(dev.endpoint) as client:
            ns = (await client.get_namespace_array()).index(dev.namespace_uri)
            ids = [ua.NodeId.from_string(f"ns={ns};{t.source.node}") for t in tags]
            values = await client.uaclient.read_attributes(ids, ua.AttributeIds.Value)
        for t, dv in zip(tags, values, strict=True):
            out[t.key] = from_datetime(dv.SourceTimestamp.replace(tzinfo=dv.SourceTimestamp.tzinfo or UTC))
    return out


async def test_every_demo_tag_reaches_the_historian(
    simulator: SimulatorFactory, tsdb: str, tmp_path: Path
) -> None:
    sim = await simulator("config/demo", seed=5)
    # Source times that lie before the runtime starts, so they cannot be mistaken for gather times.
    await sim.step(1, now_us=SystemClock().now_us() - 3_000_000)
    plant = in_data_dir(fast_polling(sim.plant_for_clients()), tmp_path / "data")
    runtime = Runtime(plant, tsdb, options=RuntimeOptions(metrics_port=0))
    started_us = SystemClock().now_us()
    await runtime.start()
    try:
        await eventually(lambda: bool((runtime.live.quality == Quality.GOOD).all()))
        # Every device polled once more after the step: the live values are the simulator's.
        keys = runtime.registry.keys
        await eventually(lambda: not mismatches(plant, keys, runtime.live.value.tolist(), sim.value))
        assert runtime.metrics_server is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", runtime.metrics_server.port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        head, body = (await reader.read()).decode().split("\r\n\r\n", 1)
        writer.close()
        assert head.split()[1] == "200"
        up = [
            s
            for f in text_string_to_metric_families(body)
            if f.name == "hazardwatch_source_up"
            for s in f.samples
        ]
        assert {s.labels["source"]: s.value for s in up} == {d.id: 1.0 for d in plant.devices()}
    finally:
        await runtime.stop()
    stopped_us = SystemClock().now_us()
    assert runtime.writer is not None and runtime.writer.metrics()["pending_rows"] == 0
    for local in ("spool/tag-ids.json", "rule-state.json", "heartbeat.json", "hazardwatch.lock"):
        assert (tmp_path / "data" / local).exists(), local  # every local file under the data directory

    protocol = {d.id: type(d) for d in plant.devices()}
    source_ts = await opcua_source_timestamps(plant)
    async with await psycopg.AsyncConnection.connect(tsdb) as conn:
        cur = await conn.execute(
            "SELECT t.key, l.value, l.quality, (extract(epoch FROM l.time) * 1000000)::bigint"
            " FROM tag_latest l JOIN tag t ON t.id = l.tag_id"
        )
        latest = {k: (v, q, ts) for k, v, q, ts in await cur.fetchall()}
        cur = await conn.execute("SELECT count(*) FROM reading")
        (rows,) = await cur.fetchone()  # type: ignore[misc]
    assert len(latest) == len(plant.tags()) == 87
    assert rows >= 87
    problems = []
    for tag in plant.tags():
        value, quality, ts = latest[tag.key]
        want = sim.value(tag.key)
        if quality != Quality.GOOD or not math.isclose(value, want, abs_tol=tolerance(plant, tag.key, want)):
            problems.append((tag.key, want, value, quality))
        kind = protocol[tag.source.device]
        if kind is OpcUaDevice and (ts != source_ts[tag.key] or ts >= started_us):
            problems.append((tag.key, "source timestamp", source_ts[tag.key], ts))
        if kind is ModbusDevice and not started_us <= ts <= stopped_us:
            problems.append((tag.key, "gather timestamp", ts))
    assert not problems
