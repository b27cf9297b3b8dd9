"""`hazardwatch demo` end to end, as `make demo` runs it: no DATABASE_URL, embedded PostgreSQL."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_collects_the_simulated_plant_into_an_embedded_database(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["COLUMNS"] = "200"
    exe = Path(sys.executable).parent / "hazardwatch"
    proc = subprocess.run(
        [str(exe), "demo", str(ROOT / "config/demo"), "--duration", "8"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "database: embedded PostgreSQL in var/pg" in out
    assert "重大危险源 hazard sources" in out and "collectors" in out  # the live view rendered
    assert "12/12 GOOD" in out
    m = re.search(
        r"stopped: (\d+) readings collected, (\d+) comm-failure markers, (\d+) crash-gap markers; "
        r"(\d+) rows written directly, (\d+) drained from the spool, (\d+) still spooled, (\d+) dropped",
        out,
    )
    assert m is not None, out
    readings, markers, gap, written, drained, left, dropped = map(int, m.groups())
    assert readings >= 87 and written + drained == readings + markers + gap and left == dropped == 0
    assert (tmp_path / "var/pg/PG_VERSION").exists()  # kept for the next start
