"""The typer commands, mounted on a bare app as hazardwatch.cli will mount them."""

from __future__ import annotations

import socket
from pathlib import Path

import typer
from typer.testing import CliRunner

from hazardwatch.cli_sim import register
from simulators.replay import write_csv
from tests.simulators.conftest import DATA

app = typer.Typer()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    plant = tmp_path / "plant.yaml"
    # free the configured ports: the test must not depend on them being unused
    text = (
        (DATA / "plant.yaml")
        .read_text()
        .replace("../../../config/reference", str(Path(DATA).parents[2] / "config/reference"))
    )
    for old in ("port: 15021", "port: 15022", ":48402"):
        new = f"port: {_free_port()}" if old.startswith("port") else f":{_free_port()}"
        text = text.replace(old, new)
    plant.write_text(text)
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
