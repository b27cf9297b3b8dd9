"""Collector and historian health beside the engine heartbeat (storage/engine_beat.py), for
Grafana's data-quality board: what one beat writes, updates and deletes, and the real runtime
reporting a Modbus gateway that goes away and comes back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import psycopg
import pytest

from collector.base import Source
from core.clock import SystemClock
from core.config import load_plant
from core.plant import ModbusDevice
from hazardwatch.compile_all import compile_plant
from hazardwatch.runtime import Runtime, RuntimeOptions, _source_info
from storage.db import Backend
from storage.engine_beat import (
    LAST_ERROR_CHARS,
    CollectionGap,
    CollectorStatus,
    HistorianStatus,
    StatusSnapshot,
    engine_beat_loop,
    write_status,
)
from tests.e2e.helpers import in_data_dir
from tests.support.databases import fetch_all, migrated_db
from tests.support.plants import fast_polling
from tests.support.simulator_fixture import SimulatorFactory
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def pg() -> Iterator[str]:
    with migrated_db(Backend.POSTGRES) as dsn:
        yield dsn


def collector(source: str, **changes: Any) -> CollectorStatus:
    row = CollectorStatus(
        source=source, enterprise="E1", protocol="modbus", state="ok", up=True, devices_up=1,
        devices_total=1, tags=12, readings=100, errors=0, reconnects=0, restarts=0,
        last_ok=T0, failed_since=None, last_error="",
    )  # fmt: skip
    return replace(row, **changes)


HISTORIAN = HistorianStatus(
    db_up=True, pending_rows=0, pending_bytes=0, written_rows=500, drained_rows=0, dropped_rows=0,
    quarantined_rows=0, gap_markers=0,
)  # fmt: skip


async def write(dsn: str, engine: str, snapshot: StatusSnapshot, now: datetime = T0) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn, conn.transaction():
        await write_status(conn, engine, snapshot, now)


COLUMNS = [
    "enterprise", "protocol", "state", "up", "devices_up", "devices_total", "tags", "readings",
    "errors", "reconnects", "restarts", "last_ok", "failed_since", "last_error", "at",
]  # fmt: skip


async def collectors(dsn: str, engine: str = "site") -> dict[str, dict[str, Any]]:
    """collector_status of ``engine``: source -> column -> value."""
    sql = f"SELECT source, {', '.join(COLUMNS)} FROM collector_status WHERE engine = %s"
    return {r[0]: dict(zip(COLUMNS, r[1:], strict=True)) for r in await fetch_all(dsn, sql, (engine,))}


def values(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row.values())


async def test_a_beat_writes_updates_and_deletes_the_rows_of_its_engine(pg: str) -> None:
    other = StatusSnapshot([collector("PLC9")], HISTORIAN)
    await write(pg, "other-site", other)
    await write(
        pg, "site", StatusSnapshot([collector("PLC1"), collector("DCS1", protocol="opcua")], HISTORIAN)
    )
    assert values((await collectors(pg))["PLC1"]) == (
        "E1", "modbus", "ok", True, 1, 1, 12, 100, 0, 0, 0, T0, None, "", T0,
    )  # fmt: skip
    assert (await collectors(pg))["DCS1"]["protocol"] == "opcua"

    # PLC1 fails; DCS1 is no longer configured; GDS1 is new and reads several enterprises.
    later = T0 + timedelta(seconds=5)
    failed = collector(
        "PLC1", state="failed", up=False, devices_up=0, errors=3, reconnects=2, failed_since=later,
        last_error="SourceError: PLC1: cannot connect to 127.0.0.1:502",
    )  # fmt: skip
    historian = replace(HISTORIAN, db_up=False, pending_rows=40, pending_bytes=4096, gap_markers=7)
    await write(pg, "site", StatusSnapshot([failed, collector("GDS1", enterprise=None)], historian), later)
    rows = await collectors(pg)
    assert set(rows) == {"PLC1", "GDS1"}
    assert values(rows["PLC1"]) == (
        "E1", "modbus", "failed", False, 0, 1, 12, 100, 3, 2, 0, T0, later,
        "SourceError: PLC1: cannot connect to 127.0.0.1:502", later,
    )  # fmt: skip
    assert rows["GDS1"]["enterprise"] is None
    assert await fetch_all(pg, "SELECT * FROM historian_status WHERE engine = 'site'") == [
        ("site", False, 40, 4096, 500, 0, 0, 0, 7, later)
    ]
    # Another engine's rows are its own.
    assert set(await collectors(pg, "other-site")) == {"PLC9"}
    assert len(await fetch_all(pg, "SELECT 1 FROM historian_status")) == 2

    # No sources left, no historian: nothing of this engine remains.
    await write(pg, "site", StatusSnapshot([], None), later)
    assert await collectors(pg) == {}
    assert await fetch_all(pg, "SELECT engine FROM historian_status") == [("other-site",)]


async def test_a_crash_gap_is_recorded_once_whatever_the_number_of_beats(pg: str) -> None:
    gap = CollectionGap(T0 - timedelta(minutes=7), T0, 87)
    for n in range(3):  # every beat of the run carries it until one commits
        await write(pg, "site", StatusSnapshot([], HISTORIAN, gap), T0 + timedelta(seconds=5 * n))
    await write(
        pg, "site", StatusSnapshot([], HISTORIAN), T0 + timedelta(seconds=20)
    )  # a run without a crash
    assert await fetch_all(pg, "SELECT engine, gap_from, gap_to, points, marked_at FROM collection_gap") == [
        ("site", gap.start, gap.end, 87, T0)
    ]


async def test_awkward_rows_are_written_rather_than_failing_the_heartbeat(pg: str) -> None:
    """A library's error text with a NUL (a text column refuses it) or of any length, a source
    named twice, a counter past 2^31: none may fail the transaction the heartbeat is in."""
    rows = [
        collector("PLC1", last_error="OSError: bad\x00frame " + "x" * 5000, readings=2**40),
        collector("PLC1", readings=7),  # the same name again: the last one counts
        collector("PLC2", last_error="OSError: bad\x00frame"),
    ]
    await write(pg, "site", StatusSnapshot(rows, HISTORIAN))
    got = await collectors(pg)
    assert got["PLC1"]["readings"] == 7
    assert got["PLC2"]["last_error"] == "OSError: bad\ufffdframe"
    await write(pg, "site", StatusSnapshot([collector("PLC1", last_error="E" + "x" * 5000)], HISTORIAN))
    assert len((await collectors(pg))["PLC1"]["last_error"]) == LAST_ERROR_CHARS


async def test_a_thousand_sources_are_one_statement(pg: str) -> None:
    """Row by row, 1,000 sources would be 1,000 round trips every beat (seconds over a WAN link
    to the bureau's database); unnested arrays are one. A statement-level trigger counts them."""
    async with await psycopg.AsyncConnection.connect(pg, autocommit=True) as conn:
        await conn.execute(
            """CREATE TABLE statements (n integer NOT NULL);
               INSERT INTO statements VALUES (0);
               CREATE FUNCTION count_statement() RETURNS trigger LANGUAGE plpgsql AS
                   $$ BEGIN UPDATE statements SET n = n + 1; RETURN NULL; END $$;
               CREATE TRIGGER counted AFTER INSERT ON collector_status
                   FOR EACH STATEMENT EXECUTE FUNCTION count_statement();"""
        )
    many = [collector(f"GW{i:04d}", readings=i) for i in range(1000)]
    await write(pg, "site", StatusSnapshot(many, HISTORIAN))  # first inserts
    await write(pg, "site", StatusSnapshot(many[:999], HISTORIAN))  # then updates, one deleted
    rows = await collectors(pg)
    assert len(rows) == 999 and rows["GW0998"]["readings"] == 998
    assert await fetch_all(pg, "SELECT n FROM statements") == [(2,)]


async def test_the_loop_beats_with_its_snapshot_and_without_a_broken_one(
    pg: str, caplog: pytest.LogCaptureFixture
) -> None:
    snapshots: list[StatusSnapshot | Exception] = [
        StatusSnapshot([collector("PLC1")], HISTORIAN),
        RuntimeError("a bug in the snapshot"),
        RuntimeError("the same bug"),
        StatusSnapshot([collector("PLC1", readings=200)], HISTORIAN),
    ]
    taken: list[int] = []

    def status() -> StatusSnapshot:
        taken.append(1)
        item = snapshots[min(len(taken), len(snapshots)) - 1]
        if isinstance(item, Exception):
            raise item
        return item

    task = asyncio.create_task(engine_beat_loop(pg, "site", SystemClock(), interval_s=0.05, status=status))
    try:
        await eventually(lambda: len(taken) >= 3, timeout=10)
        beat = await fetch_all(pg, "SELECT at FROM engine_heartbeat WHERE name = 'site'")
        await eventually(lambda: len(taken) >= 5, timeout=10)
        rows = await collectors(pg)
        later = await fetch_all(pg, "SELECT at FROM engine_heartbeat WHERE name = 'site'")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert rows["PLC1"]["readings"] == 200
    assert later[0][0] > beat[0][0]  # it kept beating through the broken snapshots
    logged = [r for r in caplog.records if "status snapshot failed" in r.getMessage()]
    assert len(logged) == 1  # once, on the transition


def test_protocol_enterprise_and_tags_come_from_the_config() -> None:
    plant = load_plant(ROOT / "tests" / "core" / "data" / "two_enterprises.yaml")
    compiled = compile_plant(plant)
    info = _source_info(plant, compiled.registry, compiled.sources)
    assert {n: (i.protocol, i.enterprise, i.tags) for n, i in info.items()} == {
        "dcs": ("opcua", "AA", 2),
        "plc": ("modbus", "AA", 2),
        "plc2": ("modbus", "BB", 2),
    }
    # A source whose tags belong to two enterprises (one serial bus shared by both) names none.
    by_name = {s.name: s for s in compiled.sources}
    bus = SimpleNamespace(name="plc", tags=np.concatenate([by_name["plc"].tags, by_name["plc2"].tags]))
    shared = _source_info(plant, compiled.registry, (cast(Source, bus),))
    assert shared["plc"].enterprise is None and shared["plc"].tags == 4


async def test_the_runtime_reports_a_gateway_that_goes_away_and_comes_back(
    simulator: SimulatorFactory, pg: str, tmp_path: Path
) -> None:
    sim = await simulator("tests/simulators/data/plant.yaml", seed=3)
    await sim.step(1)
    plant = in_data_dir(fast_polling(sim.plant_for_clients()), tmp_path / "data")
    opcua = {d.id for d in plant.devices() if not isinstance(d, ModbusDevice)}
    down = "PLC1"
    server = next(m for m in sim.modbus if down in m.device_ids)
    options = RuntimeOptions(metrics_port=None, engine_beat_s=0.2)
    runtime = Runtime(plant, pg, options=options)
    rows: dict[str, dict[str, Any]] = {}

    async def until(cond: Callable[[], bool], timeout: float = 15) -> None:
        """Until collector_status (read into ``rows``) shows ``cond``; the beat is every 0.2 s."""
        async with asyncio.timeout(timeout):
            while True:
                rows.clear()
                rows.update(await collectors(pg, plant.name))
                if rows and cond():
                    return
                await asyncio.sleep(0.1)

    def healthy(name: str) -> bool:
        return bool(rows[name]["state"] == "ok" and rows[name]["up"])

    await runtime.start()
    try:
        await until(lambda: all(map(healthy, rows)))
        assert {n: (r["enterprise"], r["protocol"], r["tags"]) for n, r in rows.items()} == {
            d.id: (
                "E1",
                "opcua" if d.id in opcua else "modbus",
                len([t for t in plant.tags() if t.source.device == d.id]),
            )
            for d in plant.devices()
        }
        assert all(
            r["failed_since"] is None and r["devices_up"] == r["devices_total"] >= 1 for r in rows.values()
        )

        await server.stop()  # the gateway goes away: connections reset, new ones refused
        await until(lambda: rows[down]["state"] == "failed")
        failed = rows[down]
        assert failed["up"] is False and failed["devices_up"] == 0
        assert failed["failed_since"] >= failed["last_ok"]
        assert down in failed["last_error"] and failed["errors"] >= 1
        assert all(healthy(n) for n in rows if n != down)

        await server.start()  # back on the same port
        await until(lambda: healthy(down), timeout=30)
        assert rows[down]["failed_since"] is None and rows[down]["last_ok"] > failed["failed_since"]
        assert rows[down]["reconnects"] >= 1

        historian: list[tuple[Any, ...]] = []
        async with asyncio.timeout(15):  # the writer's first transaction may take a moment
            while not historian or historian[0][1] == 0:
                historian = await fetch_all(
                    pg, "SELECT db_up, written_rows, gap_markers FROM historian_status"
                )
                await asyncio.sleep(0.1)
        assert runtime.writer is not None
        assert historian[0][0] is True and historian[0][2] == 0
        assert historian[0][1] <= runtime.writer.metrics()["written_rows"]
    finally:
        await runtime.stop()


async def test_heartbeat_and_status_are_one_transaction_and_a_failure_never_stops_the_loop(
    pg: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Readers see the heartbeat and the rows of one moment: a status that cannot be written (a
    database whose schema lacks the table) holds the heartbeat back too, logged once, and both
    resume when it can."""
    beats = 0

    def status() -> StatusSnapshot:
        nonlocal beats
        beats += 1
        return StatusSnapshot([collector("PLC1", readings=beats)], HISTORIAN)

    async def ddl(sql: str) -> None:
        async with await psycopg.AsyncConnection.connect(pg, autocommit=True) as conn:
            await conn.execute(sql.encode())

    async def heartbeat() -> list[tuple[Any, ...]]:
        return await fetch_all(pg, "SELECT at FROM engine_heartbeat WHERE name = 'site'")

    task = asyncio.create_task(engine_beat_loop(pg, "site", SystemClock(), interval_s=0.05, status=status))
    try:
        await eventually(lambda: beats >= 2, timeout=10)
        await ddl("ALTER TABLE collector_status RENAME TO collector_status_away")
        seen = beats
        await eventually(lambda: beats >= seen + 2, timeout=10)  # one beat may have been under way
        held = await heartbeat()
        await eventually(lambda: beats >= seen + 5, timeout=10)
        assert await heartbeat() == held
        await ddl("ALTER TABLE collector_status_away RENAME TO collector_status")
        seen = beats
        await eventually(lambda: beats >= seen + 3, timeout=10)
        assert (await heartbeat())[0][0] > held[0][0]
        assert (await collectors(pg))["PLC1"]["readings"] > seen
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    messages = [r.getMessage() for r in caplog.records if r.name == "storage.engine_beat"]
    assert [m.split(" (")[0] for m in messages] == [
        "engine heartbeat: cannot write",
        "engine heartbeat: database reachable again",
    ]


async def _beats(dsn: str, snapshot: StatusSnapshot, until_written: bool) -> list[StatusSnapshot]:
    """Run the loop with ``snapshot`` for three beats (or until one committed); the snapshots
    it reported written."""
    taken: list[StatusSnapshot] = []
    written: list[StatusSnapshot] = []

    def status() -> StatusSnapshot:
        taken.append(snapshot)
        return snapshot

    task = asyncio.create_task(
        engine_beat_loop(dsn, "site", SystemClock(), interval_s=0.05, status=status, written=written.append)
    )
    try:
        await eventually(lambda: len(taken) >= 3 and (bool(written) or not until_written), timeout=10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return written


async def test_written_is_told_only_of_snapshots_that_committed(pg: str) -> None:
    snapshot = StatusSnapshot([], HISTORIAN, CollectionGap(T0 - timedelta(minutes=3), T0, 12))
    assert await _beats("postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=1", snapshot, False) == []
    written = await _beats(pg, snapshot, True)
    assert written and all(w is snapshot for w in written)
    assert await fetch_all(pg, "SELECT points FROM collection_gap") == [(12,)]


async def test_a_password_in_a_collectors_error_is_masked(pg: str) -> None:
    error = "SourceError: opc.tcp://operator:s3cret@10.1.2.3:4840 refused; dsn password=hunter2"
    await write(pg, "site", StatusSnapshot([collector("DCS1", state="failed", last_error=error)], HISTORIAN))
    stored = (await collectors(pg))["DCS1"]["last_error"]
    assert "s3cret" not in stored and "hunter2" not in stored and "10.1.2.3:4840" in stored
