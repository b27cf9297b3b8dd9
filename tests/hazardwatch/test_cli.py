"""The hazardwatch CLI: --version, check on a good config and on a broken one (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import hazardwatch
from hazardwatch.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"hazardwatch {hazardwatch.__version__}"


def test_check_summarises_a_valid_plant() -> None:
    result = runner.invoke(
        app, ["check", str(ROOT / "tests/core/data/two_enterprises.yaml")], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert (
        "2 enterprises, 3 hazard sources, 6 tags, 3 devices (1 OPC UA, 2 Modbus), 0 interlocks"
        in result.output
    )
    assert "tags per kind:   DISCRETE 1, GAS 2, LEVEL 1, PRESSURE 1, TEMPERATURE 1" in result.output
    assert "tags per source: Modbus 4, OPC UA 2" in result.output
    assert "AA 甲化工" in result.output


def test_check_lists_every_error_with_exit_code_2(tmp_path: Path) -> None:
    plant = tmp_path / "plant.yaml"
    plant.write_text(
        (ROOT / "tests/core/data/two_enterprises.yaml")
        .read_text(encoding="utf-8")
        .replace("reference: ../../../config/reference", f"reference: {ROOT / 'config/reference'}")
        .replace("limits: {h: 8, hh: 9}", "limits: {h: 8, hh: 7}")
        .replace("range: [-20, 80]", "range: [80, -20]"),
        encoding="utf-8",
    )
    result = runner.invoke(app, ["check", str(tmp_path)], env={"COLUMNS": "300"})
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert (
        f"{plant}:27 enterprises[0].hazard_sources[0].tags[0].limits.hh: must be above h (8), is 7" in lines
    )
    assert (
        f"{plant}:39 enterprises[0].hazard_sources[1].tags[0].range: range low 80 must be below high -20"
        in lines
    )
    assert lines[-1] == f"2 error(s) in {tmp_path}"


def test_check_missing_file_is_a_config_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "no such file" in result.output


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).parent / "hazardwatch"
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("hazardwatch ")


def test_run_without_a_database_says_so_with_exit_code_2() -> None:
    result = runner.invoke(
        app,
        ["run", str(ROOT / "tests/core/data/two_enterprises.yaml"), "--duration", "1"],
        env={"DATABASE_URL": ""},
    )
    assert result.exit_code == 2
    assert "no database configured: set DATABASE_URL or settings.storage.dsn" in " ".join(
        result.output.split()
    )


def test_run_with_an_unreachable_database_fails_clearly(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere"}
    plant = str(ROOT / "tests/core/data/two_enterprises.yaml")
    result = runner.invoke(app, ["run", plant, "--duration", "1", "--data-dir", str(tmp_path)], env=env)
    assert result.exit_code == 1
    assert "hazardwatch run: connect" in result.output and "127.0.0.1" in result.output


def test_run_compiles_the_plant_once_and_starts_with_the_checked_compile(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run`` checks the config by compiling it (as ``check`` does) and the Runtime starts with
    that compile: a province's compile is seconds, not to be paid twice before the first reading."""
    import hazardwatch.compile_all
    import hazardwatch.runtime

    compiles: list[str] = []
    real = hazardwatch.compile_all.compile_plant

    def counted(plant: Any, clock: Any = None, pki_dir: str = "var/pki") -> Any:
        compiles.append(pki_dir)
        return real(plant, clock, pki_dir)

    monkeypatch.setattr(hazardwatch.compile_all, "compile_plant", counted)
    monkeypatch.setattr(hazardwatch.runtime, "compile_plant", counted)
    plant = str(ROOT / "tests/core/data/two_enterprises.yaml")
    args = ["run", plant, "--duration", "0", "--data-dir", str(tmp_path), "--metrics-port", "0", "--no-view"]
    result = runner.invoke(app, args, env={"DATABASE_URL": dsn})
    assert result.exit_code == 0, result.output
    assert compiles == [str(tmp_path / "pki")]  # once, with the run's own PKI directory


def test_the_checked_plant_and_its_compile_are_frozen_out_of_the_collectors_scans() -> None:
    """What ``check``, ``demo`` and ``run`` load and compile lives as long as the command: it is
    frozen (gc.freeze) instead of being rescanned by every later collection."""
    import gc

    from hazardwatch.cli_common import load_compiled_or_exit

    assert gc.get_freeze_count() == 0
    try:
        plant, compiled = load_compiled_or_exit(ROOT / "config" / "demo")
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0
        young = {id(o) for g in range(3) for o in gc.get_objects(g)}
        assert id(plant) not in young and id(compiled) not in young
    finally:
        gc.unfreeze()


def test_demo_runs_with_the_plants_rationalization(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The demo compiles the config for its check and hands the rationalization defaults on to
    the run (which compiles again for the simulator's ports), so alarms show their actions."""
    import hazardwatch.demo

    given: dict[str, Any] = {}

    async def fake_demo(plant: Any, console: Any, **kw: Any) -> None:
        given.update(kw)

    monkeypatch.setattr(hazardwatch.demo, "demo", fake_demo)
    root = Path(__file__).resolve().parents[2]
    result = runner.invoke(app, ["demo", str(root / "config/demo"), "--no-view", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    gas = given["rationale"].of("GAS_L2")
    assert gas.action and gas.source == "default for GAS_L2"
