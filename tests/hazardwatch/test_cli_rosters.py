"""``hazardwatch rosters show``: who is on duty at each desk of the demo at a moment (across a
handover), phones masked; a bad desk, a missing or malformed rosters file exit 2."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from typer.testing import CliRunner

from hazardwatch.cli import app

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo"
runner = CliRunner()


def show(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["rosters", "show", *args])
    return result.exit_code, result.output


def test_the_handover_changes_who_is_on_duty_and_phones_are_masked() -> None:
    code, before = show(str(DEMO), "--desk", "LHJH", "--at", "2026-11-30T07:59:59+08:00")
    assert code == 0, before
    code, after = show(str(DEMO), "--desk", "LHJH", "--at", "2026-11-30T08:00:00+08:00")
    assert code == 0, after
    assert before.startswith("LHJH\t") and "NIGHT 2026-11-29 20:00–2026-11-30 08:00 CST" in before
    assert "2026-11-30 08:00–2026-11-30 20:00 CST" in after
    assert before.split("\t")[-1] != after.split("\t")[-1]  # another person
    code, everyone = show(str(DEMO), "--at", "2026-11-30T12:00:00+08:00")
    assert code == 0 and len(everyone.splitlines()) == 5
    assert not re.search(r"1\d{10}", everyone) and "****" in everyone  # no full mobile number


def test_bad_input_exits_2_naming_it(tmp_path: Path) -> None:
    code, out = show(str(DEMO), "--desk", "NOPE")
    assert code == 2 and "unknown desk 'NOPE'" in out
    code, out = show(str(DEMO), "--at", "tomorrow")
    assert code == 2 and "--at" in out
    shutil.copytree(DEMO.parent, tmp_path / "config")  # the demo refers to ../reference
    plant = tmp_path / "config" / "demo"
    (plant / "rosters.yaml").unlink()
    code, out = show(str(plant))
    assert code == 2 and "no rosters file" in out
    (plant / "rosters.yaml").write_text("desks:\n  - code: X\n    nonsense: 1\n", encoding="utf-8")
    code, out = show(str(plant))
    assert code == 2 and "rosters.yaml:" in out
