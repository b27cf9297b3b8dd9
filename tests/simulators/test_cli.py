"""The typer commands, mounted on a bare app as hazardwatch.cli will mount them."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from hazardwatch.cli_logging import stop_logging
from hazardwatch.cli_sim import register
from simulators.replay import write_csv
from tests.simulators.conftest import DATA

app = typer.Typer()


@app.callback()
def _root(ctx: typer.Context) -> None:
    ctx.call_on_close(stop_logging)  # as hazardwatch.cli's callback does


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _plant_on_free_ports(tmp_path: Path) -> Path:
    """The test plant with free ports: a test must not depend on the configured ones being unused
    (DCS1's port is ``$HW_SIM_DCS1_PORT``)."""
    plant = tmp_path / "plant.yaml"
    text = (
        (DATA / "plant.yaml")
        .read_text()
        .replace("../../../config/reference", str(Path(DATA).parents[2] / "config/reference"))
    )
    for old in ("port: 15021", "port: 15022", ":48402"):
        new = f"port: {_free_port()}" if old.startswith("port") else f":{_free_port()}"
        text = text.replace(old, new)
    plant.write_text(text)
    return plant


register(app)


def test_commands_are_registered() -> None:
    names = {c.name for c in app.registered_commands}
    assert names == {"simulate", "replay", "export"}


def test_simulate_rejects_a_bad_scenario_with_file_line() -> None:
    res = CliRunner().invoke(
        app, ["simulate", str(DATA / "plant.yaml"), "--scenario", str(DATA / "bad-scenario.yaml")]
    )
    assert res.exit_code == 2
    assert "bad-scenario.yaml:8" in res.output


def test_replay_a_csv(tmp_path: Path) -> None:
    write_csv(
        tmp_path / "h.csv",
        [
            (1_715_000_000_000_000, "E1.V101.PT02", 1.0, 192),
            (1_715_000_000_100_000, "E1.V101.PT02", 1.1, 192),
        ],
    )
    plant = _plant_on_free_ports(tmp_path)
    res = CliRunner().invoke(
        app,
        [
            "replay",
            "--config",
            str(plant),
            "--from",
            "csv",
            "--file",
            str(tmp_path / "h.csv"),
            "--speed",
            "10",
        ],
        env={"HW_SIM_DCS1_PORT": str(_free_port())},
    )
    assert res.exit_code == 0, res.output
    assert "replaying 2 values" in res.output


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a shell does to a background job (cmd &)


@pytest.mark.parametrize(
    ("sig", "background"),
    [(signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["SIGTERM", "SIGINT-background"],
)
def test_simulate_stops_cleanly_on_a_signal(tmp_path: Path, sig: signal.Signals, background: bool) -> None:
    """`hazardwatch simulate` started as a service or a shell's background job: a signal closes
    the servers and the process exits 0 promptly."""
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "hazardwatch"), "simulate", str(_plant_on_free_ports(tmp_path))],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HW_SIM_DCS1_PORT": str(_free_port())},
        preexec_fn=_ignore_sigint if background else None,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=lambda: [*map(lines.put, proc.stdout or ()), lines.put(None)])
    reader.start()
    out: list[str] = []
    try:
        # Serving once every server is announced: 2 OPC UA endpoints and 2 Modbus servers.
        while sum(line.startswith(("OPC UA", "Modbus")) for line in out) < 4:
            line = lines.get(timeout=60)
            assert line is not None, "".join(out)
            out.append(line)
        sent = time.monotonic()
        proc.send_signal(sig)
        code = proc.wait(timeout=10)
        stopped_s = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)
        assert proc.stdout is not None
        proc.stdout.close()
    while (line := lines.get_nowait()) is not None:
        out.append(line)
    text = "".join(out)
    assert code == 0, text
    assert "stopped on a signal: servers closed" in text
    assert stopped_s < 5, f"took {stopped_s:.1f} s to stop"
