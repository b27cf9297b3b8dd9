"""compile_plant: what check and Runtime.start both compile; a failure is a file:line config error.

The failing compile steps here are stand-ins (the config model now refuses the values that
used to reach them, e.g. ``poll_interval_s: 1e308``): the point is what ``check`` and ``run``
do when a step fails for a config the model accepted.
"""

from __future__ import annotations

import asyncio
import math
import socket
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from core.config import load_plant, load_plant_located
from core.errors import ConfigError
from core.plant import ModbusDevice, Plant
from core.registry import TagRegistry
from hazardwatch import compile_all
from hazardwatch.cli import app
from hazardwatch.compile_all import CompileError, compile_checked, compile_plant
from hazardwatch.runtime import Runtime, RuntimeOptions
from rules import RuleSet
from rules.compile import compile_rules

ROOT = Path(__file__).resolve().parents[2]
PLANT = ROOT / "tests" / "core" / "data" / "two_enterprises.yaml"
PT1 = "AA.V1.PT1"  # a Modbus tag of device "plc" (two_enterprises.yaml line 28)


def _overflow_on(key: str) -> Any:
    """compile_rules, failing on one tag the way a 1e308 poll interval once did (rules/compile.py)."""

    def fake(plant: Plant, registry: TagRegistry | None = None) -> RuleSet:
        assert registry is not None
        for tag in registry.tags:
            if tag.key == key:
                round(math.inf)
        return compile_rules(plant, registry)

    return fake


def _set(model: Any, field: str, value: Any) -> None:
    object.__setattr__(model, field, value)  # the model refuses it now; this reaches past


def test_demo_compiles_without_connecting_or_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("compiling must not connect")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(asyncio.BaseEventLoop, "create_connection", refuse)
    monkeypatch.chdir(tmp_path)
    plant = load_plant(ROOT / "config" / "demo")
    compiled = compile_plant(plant, pki_dir=str(tmp_path / "pki"))
    assert compiled.registry.keys == TagRegistry.from_plant(plant).keys
    assert compiled.engine.rules.n_tags == len(plant.tags())
    assert sorted(s.name for s in compiled.sources) == sorted(d.id for d in plant.devices())
    assert sum(len(s.tags) for s in compiled.sources) == len(plant.tags())
    assert list(tmp_path.iterdir()) == []  # no certificate, spool or state file made


def test_check_reports_a_compile_failure_at_file_line_with_exit_code_2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(compile_all, "compile_rules", _overflow_on(PT1))
    result = CliRunner().invoke(app, ["check", str(PLANT)], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert "config OK" not in result.output
    lines = result.output.splitlines()
    assert lines[0].endswith(
        "two_enterprises.yaml:28 enterprises[0].hazard_sources[0].tags[1]: tag AA.V1.PT1 cannot be compiled "
        "(rules: OverflowError: cannot convert float infinity to integer)"
    ), lines
    assert lines[-1] == f"1 error(s) in {PLANT}"


def test_a_compile_failure_points_at_the_absurd_number_of_the_tag_or_its_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plant, source = load_plant_located(PLANT)
    device = next(d for d in plant.devices() if d.id == "plc")
    assert isinstance(device, ModbusDevice)
    _set(device, "poll_interval_s", 1e308)  # issue 9: it passed check, and run died compiling stale times
    monkeypatch.setattr(compile_all, "compile_rules", _overflow_on(PT1))
    with pytest.raises(ConfigError) as info:
        compile_checked(plant, source)
    (issue,) = info.value.issues
    assert (issue.line, issue.path) == (13, "enterprises[0].devices[1].poll_interval_s")
    assert issue.message == (
        "1e+308 is out of any sane range: tag AA.V1.PT1 cannot be compiled "
        "(rules: OverflowError: cannot convert float infinity to integer)"
    )


def test_a_compile_failure_points_at_a_key_written_without_a_value() -> None:
    plant, source = load_plant_located(PLANT)
    _set(plant.tag(PT1).source, "type", None)  # `type:` with nothing after it
    with pytest.raises(ConfigError) as info:
        compile_checked(plant, source)  # the real read-plan step fails on it
    (issue,) = info.value.issues
    assert (issue.line, issue.path) == (28, "enterprises[0].hazard_sources[0].tags[1].source.type")
    assert issue.message.startswith(f"has no value: tag {PT1} cannot be compiled (sources and read plans: ")


async def test_run_compiles_before_it_touches_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compile_all, "compile_rules", _overflow_on(PT1))
    plant = load_plant(PLANT)
    plant = plant.model_copy(
        update={"settings": plant.settings.model_copy(update={"data_dir": str(tmp_path)})}
    )
    # Nothing listens on port 1: reaching the database step would raise DatabaseUnavailable.
    runtime = Runtime(
        plant, "postgresql://postgres@127.0.0.1:1/unused", options=RuntimeOptions(metrics_port=None)
    )
    with pytest.raises(CompileError) as info:
        await runtime.start()
    assert info.value.stage == "rules"
    assert getattr(info.value.subject, "key", None) == PT1
    assert runtime.writer is None and runtime.runners == []
