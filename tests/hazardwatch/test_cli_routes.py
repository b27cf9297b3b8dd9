"""``hazardwatch routes test`` on the demo plant (routes, escalation steps, people on duty,
masked) and on bad input (exit 2 naming the problem); ``hazardwatch check`` compiles the
routes.yaml beside the plant."""

from __future__ import annotations

import shutil
from pathlib import Path

from typer.testing import CliRunner

from hazardwatch.cli import app

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config/demo"
AT = "2026-11-30T16:00:00Z"  # 00:00 in Asia/Shanghai: night shifts, inside the demo's quiet hours
runner = CliRunner()


def routes_test(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["routes", "test", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_a_critical_toxic_alarm_reaches_every_step_with_people_masked() -> None:
    code, out = routes_test(
        str(DEMO),
        "--label", "enterprise=LGGT",
        "--label", "hazard_source=LGGT-H01",
        "-l", "tag=LGGT.G501.AT-501",
        "-l", "priority=critical",
        "--at", AT,
    )  # fmt: skip
    assert code == 0, out
    assert "gas=toxic" in out  # derived from the plant's detector
    assert "route.routes[0]" in out and "bureau-mqtt" in out  # continue: true
    assert "route.routes[1]" in out and "lggt-duty" in out
    rows = [line for line in out.splitlines() if "critical" in line]
    assert any("at once" in r and "baobao" in r and "139****1101" in r for r in rows), out
    assert any("2m" in r and "county_desk" in r and "bureau_desk COUNTY: sms" in r for r in rows), out
    assert any("10m" in r and "city_desk" in r for r in rows), out
    assert "13903581101" not in out  # phones never printed whole


def test_a_low_alarm_at_night_is_held_to_the_end_of_quiet_hours() -> None:
    code, out = routes_test(str(DEMO), "-l", "enterprise=LHJH", "-l", "priority=low", "--at", AT)
    assert code == 0, out
    assert "22:00-07:00 Asia/Shanghai" in out
    assert "held to 2026-11-30 23:00 UTC" in out
    assert "county_desk" not in out  # low stays with the enterprise


def test_an_unknown_label_is_exit_2_naming_it() -> None:
    code, out = routes_test(str(DEMO), "-l", "device=X")
    assert code == 2
    assert "unknown label 'device'" in out


def test_a_label_without_value_is_exit_2() -> None:
    code, out = routes_test(str(DEMO), "-l", "priority")
    assert code == 2
    assert "write it as name=value" in out


def test_a_bad_routes_file_is_exit_2_at_file_line(tmp_path: Path) -> None:
    bad = tmp_path / "routes.yaml"
    bad.write_text("route:\n  receiver: duty_room\n  group_wait: 2 minutes\n", encoding="utf-8")
    code, out = routes_test(str(DEMO), "--routes", str(bad), "-l", "priority=high")
    assert code == 2
    assert f"{bad}:3 route.group_wait: '2 minutes' is not a duration" in out
    assert f"1 error(s) in {bad}" in out


def _copy_demo(tmp_path: Path) -> Path:
    shutil.copytree(DEMO, tmp_path / "demo")
    shutil.copytree(ROOT / "config/reference", tmp_path / "reference")
    return tmp_path / "demo"


def test_check_compiles_the_routes_beside_the_plant(tmp_path: Path) -> None:
    demo = _copy_demo(tmp_path)
    result = runner.invoke(app, ["check", str(demo)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "routes: 6 routes, 6 receivers, 2 escalation policies" in result.output
    routes = demo / "routes.yaml"
    routes.write_text(
        routes.read_text(encoding="utf-8").replace("receiver: lggt-duty\n", "receiver: lggt-dutty\n", 1),
        encoding="utf-8",
    )
    result = runner.invoke(app, ["check", str(demo)], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert "route.routes[1].receiver: unknown receiver 'lggt-dutty'" in result.output
    assert "config OK" not in result.output
