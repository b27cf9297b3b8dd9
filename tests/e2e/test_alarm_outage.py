"""A database outage under a running engine: alarms keep coming and going in memory, their
transitions wait in the local alarm log, and reach the database in order when it returns,
even across a restart made during the outage (issue 11, database outage).

The database sits behind a loopback proxy the test cuts and restores (a real outage, not a
flag). While it is cut the simulated level crosses its high limit three times; the engine's
alarm list shows each change at once, and nothing reaches the database. The first runtime
stops during the outage (what it could not store stays in its log); a second one starts after
the database is back, stores the log first, in order, and does not announce again the alarm
whose condition is still active.
"""

from __future__ import annotations

from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from core.clock import SystemClock
from core.config import load_plant
from hazardwatch.runtime import Runtime, RuntimeOptions
from tests.e2e.helpers import in_data_dir
from tests.support.databases import fetch_all
from tests.support.plants import fast_polling
from tests.support.proxy import TcpProxy
from tests.support.simulator_fixture import SimulatorFactory
from tests.support.waiting import eventually

PLANT = Path(__file__).resolve().parents[1] / "storage" / "data" / "plant.yaml"  # 3 Modbus tags
TAG = "SY.V1.LT1"
HIGH = "SY.V1.LT1:H"


def _status(runtime: Runtime) -> str | None:
    assert runtime.alarms is not None
    row = runtime.alarms.manager.alarms.get(HIGH)
    return None if row is None else row.status


async def test_alarms_keep_working_through_an_outage_and_reach_the_database_in_order(
    simulator: SimulatorFactory, tsdb: str, tmp_path: Path
) -> None:
    config = tmp_path / "plant.yaml"
    config.write_text(
        PLANT.read_text(encoding="utf-8").replace(
            "range: [0, 10], source:",
            "range: [0, 10], limits: {h: 8.0, deadband: 0.1, on_delay_s: 0, off_delay_s: 0}, source:",
        ),
        encoding="utf-8",
    )
    sim = await simulator(load_plant(config), seed=1, opcua=False, autostep=True)
    sim.set_value(TAG, 5.0, hold=True)
    plant = in_data_dir(fast_polling(sim.plant_for_clients()), tmp_path / "data")
    log_dir = plant.settings.local_path(plant.settings.alarms.log_dir)
    proxy = TcpProxy(int(conninfo_to_dict(tsdb)["port"] or 5433))
    await proxy.start()
    via_proxy = make_conninfo(tsdb, port=str(proxy.port))
    options = RuntimeOptions(metrics_port=None)
    try:
        first = Runtime(plant, via_proxy, options=options)
        await first.start()
        assert first.alarms is not None
        await eventually(lambda: first.alarms is not None and first.alarms.recovered, timeout=30)

        await proxy.cut()
        cut_at = SystemClock().now_us()
        # the engine keeps evaluating and alarming: each change is in the alarm list at once
        for value, status in (
            (9.0, "unacknowledged"),
            (5.0, "returned_unacknowledged"),
            (9.0, "unacknowledged"),
        ):
            sim.set_value(TAG, value, hold=True)
            await eventually(lambda s=status: _status(first) == s, timeout=15)
        assert first.alarms.manager.seq > first.alarms.stored_seq  # none of it stored
        assert any(log_dir.glob("*.log"))  # but all of it on local disk
        await first.stop()  # during the outage: the log keeps what could not be stored
        assert any(log_dir.glob("*.log"))
        assert await fetch_all(tsdb, "SELECT count(*) FROM alarm_journal") == [(0,)]

        await proxy.restore()
        second = Runtime(plant, via_proxy, options=options)
        await second.start()
        try:
            await eventually(lambda: second.alarms is not None and second.alarms.recovered, timeout=30)
            assert second.alarms is not None
            await eventually(
                lambda: second.alarms is not None and second.alarms.stored_seq >= second.alarms.manager.seq,
                timeout=30,
            )
            assert _status(second) == "unacknowledged"  # still active: resumed, not raised again
        finally:
            await second.stop()
    finally:
        await proxy.stop()

    journal = await fetch_all(
        tsdb,
        "SELECT seq, action, old_status, new_status, (extract(epoch FROM at) * 1e6)::bigint FROM alarm_journal "
        "WHERE alarm_key = %s ORDER BY seq, n",
        (HIGH,),
    )
    assert [(a, o, n) for _, a, o, n, _ in journal] == [
        ("RAISED", "normal", "unacknowledged"),
        ("RETURNED", "unacknowledged", "returned_unacknowledged"),
        ("RERAISED", "returned_unacknowledged", "unacknowledged"),
    ]
    seqs = [r[0] for r in journal]
    assert seqs == sorted(seqs) and all(at >= cut_at for *_, at in journal)  # in order, from the outage
    outbox = await fetch_all(
        tsdb, "SELECT event FROM notification WHERE alarm_key = %s ORDER BY seq, n", (HIGH,)
    )
    assert outbox == [("raised",), ("reraised",)]  # RETURNED is not announced; nothing twice
    assert await fetch_all(tsdb, "SELECT status, condition FROM alarm_state WHERE key = %s", (HIGH,)) == [
        ("unacknowledged", True)
    ]
    assert not any(log_dir.glob("*.log"))  # all stored: a clean stop leaves no log behind
