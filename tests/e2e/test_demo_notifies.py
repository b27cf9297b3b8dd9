"""`hazardwatch demo` tells people: the ammonia-leak scenario's gas alarms reach the duty room and
the hazard source's 包保 trio by SMS (the demo's SMS channel is the file outbox) and the
bureau's MQTT bus, with the evidence in the delivery tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from storage.migrate import Backend
from tests.support.databases import create_scratch_db, drop_scratch_db, fetch_all

ROOT = Path(__file__).resolve().parents[2]


async def test_the_demo_scenario_notifies_the_duty_room_and_the_baobao_trio(tmp_path: Path) -> None:
    dsn = create_scratch_db(Backend.POSTGRES)
    try:
        env = {**os.environ, "DATABASE_URL": dsn, "COLUMNS": "200"}
        exe = Path(sys.executable).parent / "hazardwatch"
        proc = subprocess.run(
            [str(exe), "demo", str(ROOT / "config/demo"), "--duration", "40", "--speed", "8", "--no-view"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lines = [
            json.loads(x) for x in (tmp_path / "var/notifications.jsonl").read_text("utf-8").splitlines()
        ]
        sms = [x for x in lines if "-sms-" in x["idempotency_key"]]
        assert sms, lines
        gas = [x for x in sms if x["event"]["labels"]["kind"].startswith("GAS_")]
        assert gas and all("*" in x["recipient"] for x in gas)  # a phone number never in clear in the file
        rows = await fetch_all(
            dsn, "SELECT receiver, channel, state FROM delivery WHERE step = 0 AND alarm_key LIKE '%GAS_L2'"
        )
        receivers = {r[0] for r in rows if r[2] in ("sent", "grouped")}
        assert {"duty_room", "baobao", "bureau-mqtt"} <= receivers, rows
        journal = await fetch_all(dsn, "SELECT count(*) FROM delivery_journal WHERE what = 'planned'")
        outbox = await fetch_all(dsn, "SELECT count(*) FROM notification")
        assert journal == outbox and outbox[0][0] > 0
    finally:
        drop_scratch_db(Backend.POSTGRES, dsn)
