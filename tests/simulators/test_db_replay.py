"""``hazardwatch export`` and ``replay --from db``: history written by the BatchWriter into a
real, migrated scratch database (registry synced from the test plant), read back by the CLI.

The recording: two Modbus tags with different spacing (``A`` irregular, ``B`` every 2 s),
an UNCERTAIN row, a BAD row with a NaN value, a microsecond timestamp, a third tag, and rows
just outside the window [START, END) on both sides (one exactly at END, which is exclusive).
"""

from __future__ import annotations

import asyncio
import csv
import math
import os
import socket
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from typer.testing import CliRunner

from core.batch import ReadingBatch
from core.clock import US_PER_S, FakeClock, from_datetime
from core.plant import Plant
from core.quality import Quality
from core.registry import TagRegistry
from hazardwatch.cli import app
from simulators.replay import Recording, Replayer, read_csv
from storage.db import Backend
from storage.queries import raw_history
from storage.registry_sync import active_tag_ids, sync_registry
from storage.writer import BatchWriter
from tests.simulators.clients import decode, read_modbus
from tests.simulators.conftest import DATA
from tests.support.databases import create_scratch_db, drop_scratch_db, migrate
from tests.support.simulator_fixture import SimulatorFactory

ROOT = Path(__file__).resolve().parents[2]
PLANT = DATA / "plant.yaml"
A = "E1.V101.PT02"  # PLC1 holding 0, FLOAT32
B = "E1.XV101.ZT01"  # PLC1 holding 20, FLOAT64 DCBA
C = "E1.V101.TT01"  # OPC UA; only in the all-tags exports
GOOD, UNCERTAIN, BAD = int(Quality.GOOD), int(Quality.UNCERTAIN), int(Quality.BAD)
NAN = math.nan

START, END = "2026-09-21T14:13:20Z", "2026-09-21T14:13:30Z"
# (time as export writes it, key, value, quality); values are exact in float32
BEFORE = [
    ("2026-09-21T14:13:10Z", A, 9.0, GOOD),
    ("2026-09-21T14:13:19.999999Z", B, 9.25, GOOD),  # 1 µs before START
]
INCIDENT = [
    ("2026-09-21T14:13:20Z", A, 0.125, GOOD),  # exactly START: inclusive
    ("2026-09-21T14:13:23Z", C, 21.5, GOOD),
    ("2026-09-21T14:13:24Z", A, 0.375, GOOD),
    ("2026-09-21T14:13:24.500000Z", B, 10.5, GOOD),
    ("2026-09-21T14:13:25.000123Z", A, 0.625, UNCERTAIN),
    ("2026-09-21T14:13:26.500000Z", B, 20.25, GOOD),
    ("2026-09-21T14:13:27Z", A, NAN, BAD),
    ("2026-09-21T14:13:28Z", A, 0.875, GOOD),
    ("2026-09-21T14:13:28.500000Z", B, 30.75, GOOD),
]
AFTER = [
    ("2026-09-21T14:13:30Z", A, 9.5, GOOD),  # exactly END: exclusive
    ("2026-09-21T14:13:31Z", B, 9.75, GOOD),
]
ALL = BEFORE + INCIDENT + AFTER
WIDE = {"COLUMNS": "250"}  # rich must not wrap the messages the tests look for


def us(text: str) -> int:
    return from_datetime(datetime.fromisoformat(text))


T0 = us(START)


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env={**WIDE, **(env or {})})


async def _fill(dsn: str, plant: Plant) -> None:
    await migrate(dsn)
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        await sync_registry(conn, plant, now_us=T0)
        await conn.commit()
        ids = await active_tag_ids(conn)
    reg = TagRegistry.from_plant(plant)
    writer = await BatchWriter.connect(dsn, np.array([ids[k] for k in reg.keys], np.int32))
    try:
        rows = [(reg.index_of(k), us(t), v, q) for t, k, v, q in ALL]
        # two batches in scrambled arrival order: the historian, not the writer, orders them
        await writer.write(ReadingBatch.from_rows(rows[::2][::-1]))
        await writer.write(ReadingBatch.from_rows(rows[1::2]))
    finally:
        await writer.close()


@pytest.fixture
def historian(request: pytest.FixtureRequest, plant: Plant) -> Iterator[str]:
    """DSN of a fresh migrated database holding ALL for the test plant (PostgreSQL unless
    parametrized indirectly with a Backend)."""
    kind: Backend = getattr(request, "param", Backend.POSTGRES)
    dsn = create_scratch_db(kind)
    try:
        asyncio.run(_fill(dsn, plant))
        yield dsn
    finally:
        drop_scratch_db(kind, dsn)


def _read(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


@pytest.mark.parametrize("historian", [Backend.POSTGRES, Backend.TIMESCALEDB], indirect=True)
def test_export_writes_the_window_oldest_first_in_replay_format(
    historian: str, tmp_path: Path, plant: Plant
) -> None:
    out = tmp_path / "incident.csv"
    res = invoke(
        "export", "--config", str(PLANT), "--start", START, "--end", END,
        "--tags", f"{B},{A}", "--out", str(out), "--dsn", historian,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    want = [r for r in INCIDENT if r[1] in (A, B)]
    assert f"wrote {len(want)} rows to {out}" in res.output
    header, *rows = _read(out)
    assert header == ["time", "tag", "value", "quality"]
    # exactly the window's rows of those tags, oldest first, times ISO 8601 UTC
    assert [(t, k, q) for t, k, _, q in rows] == [(t, k, str(q)) for t, k, _, q in want]
    assert all(same(float(v), w[2]) for (_, _, v, _), w in zip(rows, want, strict=True))
    assert rows[5][2:] == ["nan", str(BAD)]  # the BAD reading keeps its NaN and its quality
    for t, *_ in rows:
        parsed = datetime.fromisoformat(t)
        assert t.endswith("Z") and parsed.utcoffset() is not None and not parsed.utcoffset()
    # it is what replay reads
    rec = read_csv(out, TagRegistry.from_plant(plant))
    assert list(rec.ts) == [us(t) for t, *_ in want]
    assert rec.duration_s == pytest.approx(8.5)

    # the database may come from $DATABASE_URL instead: same file
    again = tmp_path / "again.csv"
    res = invoke(
        "export", "--config", str(PLANT), "--start", START, "--end", END, "--tags", f"{B},{A}",
        "--out", str(again), env={"DATABASE_URL": historian},
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert again.read_bytes() == out.read_bytes()


def test_export_help_states_the_window_bounds() -> None:
    res = invoke("export", "--help")
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert "inclusive" in text and "exclusive" in text and "--dsn" in text


def test_export_refuses_unknown_tags_and_bad_windows(historian: str, tmp_path: Path) -> None:
    out = tmp_path / "h.csv"
    base = ["export", "--config", str(PLANT), "--dsn", historian, "--out", str(out)]

    res = invoke(*base, "--start", START, "--end", END, "--tags", f"{A},E1.NOPE.X")
    assert res.exit_code == 2 and "E1.NOPE.X" in res.output, res.output
    assert not out.exists()

    res = invoke(*base, "--start", END, "--end", START)
    assert res.exit_code == 2 and "--end" in res.output, res.output
    assert not out.exists()

    # a key the plant defines but the historian was never told about: exit 1, named
    with psycopg.connect(historian, autocommit=True) as conn:
        conn.execute("UPDATE tag SET key = 'E1.RENAMED' WHERE key = %s", [B])
    res = invoke(*base, "--start", START, "--end", END, "--tags", f"{A},{B}")
    assert res.exit_code == 1, res.output
    assert B in res.output and "not in the historian" in res.output
    assert not out.exists()

    res = invoke("replay", "--config", str(PLANT), "--from", "db", "--dsn", historian, "--tags", "E1.NOPE.X")
    assert res.exit_code == 2 and "E1.NOPE.X" in res.output, res.output


@pytest.mark.parametrize("speed", [1.0, 4.0])
async def test_replay_from_db_on_a_fake_clock_read_over_modbus(
    historian: str, simulator: SimulatorFactory, plant: Plant, speed: float
) -> None:
    """In process, deterministic: each recorded instant is published at (t - t0) / speed and
    is on the Modbus wire at that moment, BAD as NaN; SHIFTED stamps keep the scaled spacing."""
    rows = await asyncio.to_thread(raw_history, plant, [A, B], T0, us(END), dsn=historian)
    want = [r for r in INCIDENT if r[1] in (A, B)]
    assert [(ts, k, q) for ts, k, _, q in rows] == [(us(t), k, q) for t, k, _, q in want]
    clock = FakeClock(start_us=T0 + 3600 * US_PER_S)
    sim = await simulator(plant, opcua=False, clock=clock)
    reg = sim.sim.registry
    rec = Recording.from_rows((ts, reg.index_of(k), v, q) for ts, k, v, q in rows)
    clients_plant = sim.plant_for_clients()
    host, port = sim.modbus_address("PLC1")
    client = AsyncModbusTcpClient(host, port=port, timeout=1, retries=0)
    assert await client.connect()
    seen: list[tuple[float, float, float, int, int]] = []
    orig, st, ia = sim.publish, sim.sim.state, reg.index_of(A)

    async def spy() -> None:
        await orig()
        a = await read_modbus(client, clients_plant, clients_plant.tag(A))
        b = await read_modbus(client, clients_plant, clients_plant.tag(B))
        seen.append((clock.monotonic(), a, b, int(st.quality[ia]), int(st.ts[ia])))

    sim.publish = spy  # type: ignore[method-assign]
    start_us = clock.now_us()
    try:
        await Replayer(sim, rec, speed=speed).run()
    finally:
        client.close()
    offsets = [(us(t) - T0) / US_PER_S for t, *_ in want]
    assert [s[0] for s in seen] == pytest.approx([o / speed for o in offsets], abs=1e-9)
    a_vals = [s[1] for s, w in zip(seen, want, strict=True) if w[1] == A]
    b_vals = [s[2] for s, w in zip(seen, want, strict=True) if w[1] == B]
    assert all(same(x, w[2]) for x, w in zip(a_vals, [w for w in want if w[1] == A], strict=True))
    assert b_vals == [w[2] for w in want if w[1] == B]
    a_rows = [(s, w) for s, w in zip(seen, want, strict=True) if w[1] == A]
    assert [s[3] for s, _ in a_rows] == [w[3] for _, w in a_rows]
    assert [s[4] - start_us for s, _ in a_rows] == [
        round((us(w[0]) - T0) / speed) for _, w in a_rows
    ]  # source times: the replay's clock, spacing scaled by the speed


def test_export_then_replay_csv_equals_replay_db(
    historian: str, tmp_path: Path, plant: Plant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same window replayed from the database and from a wider export of it hands the
    Replayer identical recordings (times, tags, values with NaN, qualities) and options."""
    got: list[tuple[Recording, float, str]] = []

    class Capture:
        def __init__(self, sim: object, rec: Recording, speed: float, timestamps: str) -> None:
            got.append((rec, speed, timestamps))

        async def run(self) -> None:
            return None

    class NoServers:
        def __init__(self, plant: Plant, **kwargs: object) -> None:
            self.opcua: list[object] = []
            self.modbus: list[object] = []

        async def __aenter__(self) -> NoServers:
            return self

        async def __aexit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr("simulators.replay.Replayer", Capture)
    monkeypatch.setattr("simulators.runner.Simulator", NoServers)
    csv_file = tmp_path / "all.csv"
    exported = invoke(
        "export", "--config", str(PLANT), "--dsn", historian, "--out", str(csv_file),
        "--start", "2026-09-21T14:00:00Z", "--end", "2026-09-21T15:00:00+00:00",
    )  # fmt: skip
    assert exported.exit_code == 0 and f"wrote {len(ALL)} rows" in exported.output, exported.output
    window = ["--config", str(PLANT), "--start", START, "--end", END, "--speed", "7", "--original-timestamps"]
    from_db = invoke("replay", "--from", "db", "--dsn", historian, *window)
    from_csv = invoke("replay", "--from", "csv", "--file", str(csv_file), *window)
    assert from_db.exit_code == 0, from_db.output
    assert from_csv.exit_code == 0, from_csv.output
    line = f"replaying {len(INCIDENT)} values over 8.5 s at 7x"
    assert line in from_db.output and line in from_csv.output
    (db_rec, *db_opts), (csv_rec, *csv_opts) = got
    assert db_opts == csv_opts == [7.0, "ORIGINAL"]
    reg = TagRegistry.from_plant(plant)
    assert list(db_rec.ts) == [us(t) for t, *_ in INCIDENT]
    assert list(db_rec.tag) == [reg.index_of(k) for _, k, _, _ in INCIDENT]
    for name in ("ts", "tag", "value", "quality"):
        np.testing.assert_array_equal(getattr(csv_rec, name), getattr(db_rec, name), err_msg=name)

    # --tags narrows both paths the same way
    got.clear()
    for src in (["--from", "db", "--dsn", historian], ["--from", "csv", "--file", str(csv_file)]):
        res = invoke("replay", *src, *window, "--tags", B)
        assert res.exit_code == 0 and "replaying 3 values over 4 s at 7x" in res.output, res.output
    np.testing.assert_array_equal(got[0][0].value, got[1][0].value)
    assert list(got[0][0].value) == [10.5, 20.25, 30.75]


# --- the whole CLI, live: a subprocess serving the replay, read by a real Modbus client ----


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _plant_on_free_ports(tmp_path: Path) -> tuple[Path, int]:
    """The test plant with its servers on free ports (DCS1 via $HW_SIM_DCS1_PORT); PLC1's port."""
    plc1 = _free_port()
    text = PLANT.read_text(encoding="utf-8").replace(
        "../../../config/reference", str(ROOT / "config/reference")
    )
    for old, new in (("port: 15021", f"port: {plc1}"), ("port: 15022", f"port: {_free_port()}"),
                     (":48402", f":{_free_port()}")):  # fmt: skip
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "plant.yaml"
    path.write_text(text, encoding="utf-8")
    return path, plc1


async def test_replay_from_db_through_the_cli_keeps_spacing_scaled_on_the_wire(
    historian: str, tmp_path: Path
) -> None:
    """``hazardwatch replay --from db --speed 5`` in a subprocess; a pymodbus client polls
    A and B in one request every ~5 ms. Every value arrives (BAD as NaN), in recorded order
    across both tags, with its recorded spacing divided by 5, within ±0.05 s (events are
    0.1 s apart or more, observed jitter ~5 ms; 1x or a wrong factor misses by far more)."""
    config, port = _plant_on_free_ports(tmp_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from hazardwatch.cli import main; main()",
        "replay", "--from", "db", "--dsn", historian, "--config", str(config),
        "--start", START, "--end", END, "--tags", f"{A},{B}", "--speed", "5", "--hold", "0.3",
        cwd=ROOT, env={**os.environ, "HW_SIM_DCS1_PORT": str(_free_port()), **WIDE},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    changes: dict[str, list[tuple[float, float]]] = {A: [], B: []}
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=0.5, retries=0)
    try:
        deadline = time.monotonic() + 30
        while not await client.connect():
            assert proc.returncode is None and time.monotonic() < deadline, "simulator never came up"
            await asyncio.sleep(0.02)
        while proc.returncode is None and time.monotonic() < deadline:
            try:  # the server accepts before its event loop is free (OPC UA start-up): retry
                rr = await client.read_holding_registers(0, count=24, slave=1)
            except ModbusException:
                if not client.connected:
                    await client.connect()
                await asyncio.sleep(0.01)
                continue
            now = time.monotonic()
            if rr.isError():
                continue
            a = decode(rr.registers[0:2], "FLOAT32", "ABCD")
            b = decode(rr.registers[20:24], "FLOAT64", "DCBA")
            for key, v in ((A, a), (B, b)):
                if not changes[key] or not same(changes[key][-1][1], v):
                    changes[key].append((now, v))
            await asyncio.sleep(0.005)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        client.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, (out + err).decode()
    assert "replaying 8 values over 8.5 s at 5x" in out.decode()

    start_value = {A: 0.7, B: 100.0}  # the model's values, served until the replay sets them
    events: list[tuple[float, str, float]] = []
    for key in (A, B):
        got = changes[key]
        if got and got[0][1] == pytest.approx(start_value[key], rel=1e-6):
            got = got[1:]  # (the first polls may be answered only once the replay has begun)
        events += [(t, key, v) for t, v in got]
    events.sort()
    expected = [w for w in INCIDENT if w[1] in (A, B)]
    # every value, in recorded order across both tags, nothing else in between
    assert [k for _, k, _ in events] == [k for _, k, _, _ in expected], events
    assert all(same(v, w[2]) for (_, _, v), w in zip(events, expected, strict=True)), events
    # spacing (±0.05 s), from A's second value on: the first is published the moment the
    # servers are up, while a poll sent during their start-up may still be waiting out its timeout
    t_ref, rel = events[1][0], [(us(w[0]) - us(expected[1][0])) / US_PER_S / 5 for w in expected]
    assert [t - t_ref for t, _, _ in events[1:]] == pytest.approx(rel[1:], abs=0.05), events
