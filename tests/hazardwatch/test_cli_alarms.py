"""``hazardwatch alarms rationalization``: the master alarm table of config/demo as CSV and
markdown, one enterprise's, and the refusals."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from typer.testing import CliRunner

from core.config import load_plant
from hazardwatch.cli import app
from hazardwatch.cli_alarm_table import COLUMNS
from rules.compile import compile_rules

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config/demo"
runner = CliRunner()


def _table(*args: str) -> list[dict[str, str]]:
    result = runner.invoke(app, ["alarms", "rationalization", str(DEMO), *args])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows and list(rows[0]) == list(COLUMNS)
    return rows


def test_the_csv_table_has_every_alarm_with_settings_and_rationale() -> None:
    plant = load_plant(DEMO, env={})
    rules = compile_rules(plant)
    rows = _table()
    interlocks = [
        f"{h.code}.{il.code}" for e in plant.enterprises for h in e.hazard_sources for il in h.interlocks
    ]
    assert [r["key"] for r in rows] == [*rules.keys, *(f"{k}.sif_disabled" for k in interlocks)]
    by_key = {r["key"]: r for r in rows}
    assert by_key["LHJH.G101.LT-101A:LL"] == {
        "key": "LHJH.G101.LT-101A:LL",
        "enterprise": "LHJH 吕梁恒嘉焦化化工有限公司",
        "hazard_source": "LHJH-H01 焦炉煤气柜",
        "subject": "LHJH.G101.LT-101A",
        "name": "煤气柜柜位（雷达）",
        "condition": "低低报",
        "priority": "high",
        "limit": "4 m",
        "deadband": "2.25",
        "on_delay_s": "60",
        "off_delay_s": "0",
        "latching": "no",
        "cause": "煤气柜柜位过低：用户用气量突增或进气中断",
        "consequence": "柜位继续下降将触发 IL-101 低低联锁关出口切断阀；活塞落底可能吸入空气形成爆炸性混合物",
        "action": "联系调度减少用气或增加进气；确认 IL-101 投用；柜位降至 4 m 前准备手动关闭出口切断阀",
        "response_s": "180",
        "rationale_source": "LHJH.G101.LT-101A rationalization.ll",
    }
    gas = by_key["LHJH.G101.AT-101:GAS_L2"]
    assert (gas["condition"], gas["priority"], gas["latching"], gas["response_s"]) == (
        "二级报警",
        "critical",
        "yes",
        "60",
    )
    assert (
        gas["rationale_source"] == "LHJH.G101.AT-101 rationalization.level2 (rest: default for GAS_L2/TOXIC)"
    )
    overdue = by_key["LHJH-H01.IL-101:BYPASS_OVERDUE"]
    assert (overdue["limit"], overdue["deadband"], overdue["on_delay_s"]) == ("8 h", "", "28800")
    sif = by_key["LHJH-H01.IL-101.sif_disabled"]
    assert (sif["condition"], sif["priority"], sif["limit"], sif["rationale_source"]) == (
        "安全仪表功能失效",
        "critical",
        "",
        "default for SIF_DISABLED",
    )
    assert all(r["cause"] and r["action"] and r["response_s"] for r in rows)


def test_the_table_is_deterministic_and_filters_by_enterprise() -> None:
    rows = _table()
    assert _table() == rows
    lggt = _table("--enterprise", "LGGT")
    assert lggt == [r for r in rows if r["enterprise"].startswith("LGGT ")]
    assert 0 < len(lggt) < len(rows)


def test_markdown_has_the_same_rows() -> None:
    result = runner.invoke(app, ["alarms", "rationalization", str(DEMO), "--format", "markdown"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "| " + " | ".join(COLUMNS) + " |"
    assert lines[1] == "|" + "---|" * len(COLUMNS)
    assert len(lines) - 2 == len(_table())
    assert "| LHJH.G101.LT-101A:LL | LHJH 吕梁恒嘉焦化化工有限公司 | LHJH-H01 焦炉煤气柜 |" in lines[2]
    assert all(line.count(" | ") == len(COLUMNS) - 1 for line in lines[2:])


def test_an_unknown_enterprise_or_a_bad_config_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["alarms", "rationalization", str(DEMO), "--enterprise", "NOPE"])
    assert result.exit_code == 2
    assert "no enterprise 'NOPE' (known: LHJH, LGGT)" in result.output
    result = runner.invoke(app, ["alarms", "rationalization", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "no such file" in result.output
