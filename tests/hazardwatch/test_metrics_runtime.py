"""A running Runtime's /metrics over real HTTP: every metric docs/operations.md lists is there, from
the components' own registrations, and the endpoint's thread ends with the runtime."""

from __future__ import annotations

import asyncio
import re
import threading
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from core.config import load_plant
from hazardwatch.runtime import Runtime, RuntimeOptions

ROOT = Path(__file__).resolve().parents[2]
PLANT = ROOT / "tests" / "core" / "data" / "two_enterprises.yaml"  # nothing listens at its devices


def documented() -> set[str]:
    """Metric names in docs/operations.md's Metrics table (``hazardwatch_historian_*`` excepted)."""
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `hazardwatch_")]
    names = {n for row in rows for n in re.findall(r"`(hazardwatch_[a-z0-9_]+)", row.split(" | ")[0])}
    return {n for n in names if not n.endswith("_")}


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        assert response.status == 200
        return str(response.read().decode())


async def test_every_documented_metric_is_served(dsn: str, tmp_path: Path) -> None:
    plant = load_plant(PLANT)
    plant = plant.model_copy(
        update={"settings": plant.settings.model_copy(update={"data_dir": str(tmp_path)})}
    )
    runtime = Runtime(plant, dsn, options=RuntimeOptions(metrics_port=0))
    before = set(threading.enumerate())
    await runtime.start()
    try:
        assert runtime.metrics_server is not None
        text = await asyncio.to_thread(get, runtime.metrics_server.port, "/metrics")
        assert runtime.writer is not None
        historian = {f"hazardwatch_historian_{key}" for key in runtime.writer.metrics()}
    finally:
        await runtime.stop()
    families = list(text_string_to_metric_families(text))
    served = {f.name for f in families} | {s.name for f in families for s in f.samples}
    assert len(documented()) >= 20  # the table was found
    assert documented() - served == set()
    assert historian - served == set()
    sources = {s.labels["source"] for f in families if f.name == "hazardwatch_source_up" for s in f.samples}
    assert sources == {d.id for d in plant.devices()}
    # The endpoint's threads (server loop, one per request) end with the runtime.
    left = [t.name for t in threading.enumerate() if t not in before]
    assert [n for n in left if n == "metrics-http" or "process_request_thread" in n] == []
