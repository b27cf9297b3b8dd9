"""hazardwatch.live_view.alarm_lines: the live view's alarm list, in an operator's order (awaiting
acknowledgement first and flashing, then priority and GB/T 50493 rank, newest first), one line per
alarm, capped, with the counts of what is not listed."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from rich.console import Console

from alarms.journal import AlarmRow
from alarms.model import Catalog
from alarms.rationale import load_defaults
from core.clock import FakeClock
from core.config import load_plant
from core.live import LiveSnapshot
from core.registry import TagRegistry
from hazardwatch.live_view import alarm_lines, render_view
from hazardwatch.runtime import Runtime
from rules.compile import compile_rules

PLANT = Path(__file__).resolve().parents[1] / "rules" / "data" / "plant.yaml"
NOW = 1_700_000_000_000_000
S = 1_000_000
TOXIC_L2 = "E1.V1.AT1:GAS_L2"  # critical, rank 2
TOXIC_L1 = "E1.V1.AT1:GAS_L1"  # high, rank 1
COMBUSTIBLE_L2 = "E1.P1.AT2:GAS_L2"  # high, rank 2
HH = "E1.V1.LT1:HH"  # high, rank 0
PT_HH = "E1.V1.PT1:HH"  # high, rank 0
FROZEN = "E1.V1.LT1:FROZEN"  # low
AWAITING = {"unacknowledged": False, "returned_unacknowledged": False, "acknowledged": True}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    plant = load_plant(PLANT)
    return Catalog(plant, compile_rules(plant))


def row(
    catalog: Catalog, key: str, status: str, age_s: float = 10, *, acked: bool | None = None,
    value: float = 85.2, limit: float = 50.0,
) -> AlarmRow:  # fmt: skip
    """A row of ``key`` raised ``age_s`` ago; ``acked`` defaults to what ``status`` implies."""
    alarm = catalog.by_key(key)
    assert alarm is not None
    at = NOW - int(age_s * S)
    return AlarmRow(
        key, "E1", "孝义市", "H1", None, alarm.subject, key.partition(":")[2], alarm.priority.value, status,
        True, AWAITING.get(status, True) if acked is None else acked, alarm.latching, at, None, None, None,
        value, limit, at, None, None,
    )  # fmt: skip


def render(rows: list[AlarmRow], catalog: Catalog, max_lines: int = 15, *, styles: bool = False) -> str:
    console = Console(record=True, width=100, force_terminal=styles, color_system="standard")
    console.print(alarm_lines(rows, catalog, NOW, max_lines))
    return console.export_text(styles=styles)


def alarm_keys(text: str) -> list[str]:
    """The alarms listed, top to bottom, as "tag-key condition-label"."""
    return [f"{k} {label}" for k, label in re.findall(r"(E1\.\w+\.\w+)\s+(\S+)", text)]


def flashing(text: str) -> dict[str, bool]:
    """Whether each listed alarm's line ("tag-key condition-label") blinks (SGR 5) anywhere."""
    out = {}
    for line in text.splitlines():
        listed = alarm_keys(re.sub(r"\x1b\[[0-9;]*m", "", line))
        if listed:
            out[listed[0]] = any("5" in sgr.split(";") for sgr in re.findall(r"\x1b\[([0-9;]*)m", line))
    return out


def test_awaiting_acknowledgement_comes_first_then_priority_then_rank_then_newest(catalog: Catalog) -> None:
    rows = [
        row(catalog, TOXIC_L2, "acknowledged", 5),
        row(catalog, HH, "acknowledged", 50),
        row(catalog, PT_HH, "acknowledged", 20),  # newer than HH: above it
        row(catalog, TOXIC_L1, "acknowledged", 1),
        row(catalog, COMBUSTIBLE_L2, "acknowledged", 100),  # level 2 above toxic level 1 at high
        row(catalog, FROZEN, "unacknowledged", 300),  # a low awaiting acknowledgement tops them all
    ]
    assert alarm_keys(render(rows, catalog)) == [
        "E1.V1.LT1 数据冻结",
        "E1.V1.AT1 二级报警",
        "E1.P1.AT2 二级报警",
        "E1.V1.AT1 一级报警",
        "E1.V1.PT1 高高报",
        "E1.V1.LT1 高高报",
    ]


def test_toxic_level_2_outranks_combustible_level_2_as_the_catalog_prioritises_them(catalog: Catalog) -> None:
    rows = [row(catalog, COMBUSTIBLE_L2, "unacknowledged", 1), row(catalog, TOXIC_L2, "unacknowledged", 60)]
    assert alarm_keys(render(rows, catalog)) == ["E1.V1.AT1 二级报警", "E1.P1.AT2 二级报警"]


def test_each_line_has_priority_status_tag_condition_value_limit_and_age(catalog: Catalog) -> None:
    text = render(
        [
            row(catalog, TOXIC_L2, "latched", 125, acked=False, value=85.2, limit=50),
            row(catalog, COMBUSTIBLE_L2, "latched", 3 * 3600 + 65, acked=True),
            row(catalog, HH, "returned_unacknowledged", 2, value=float("nan"), limit=90),
            row(catalog, PT_HH, "acknowledged", 2 * 86400),
        ],
        catalog,
    )
    assert re.search(
        r"紧急 crit +保持未确认 latch unack +罐区氨气浓度 E1.V1.AT1 +二级报警 +85.2 / 50 ppm +2m05s", text
    )
    assert re.search(r"高 high +保持 latched +泵房可燃气体浓度 E1.P1.AT2 +二级报警 .* %LEL +3h01m", text)
    assert re.search(r"高 high +未确认恢复 RTN unack +储罐液位 A E1.V1.LT1 +高高报 +— / 90 % +2s", text)
    assert re.search(r"高 high +已确认 ack +储罐压力 E1.V1.PT1 +高高报 .* MPa +2d00h", text)
    assert len(alarm_keys(text)) == 4 == sum(" E1." in line for line in text.splitlines())  # one line each


def test_only_alarms_awaiting_acknowledgement_flash(catalog: Catalog) -> None:
    rows = [
        row(catalog, TOXIC_L2, "acknowledged"),
        row(catalog, COMBUSTIBLE_L2, "latched", acked=True),
        row(catalog, TOXIC_L1, "latched", acked=False),
        row(catalog, HH, "unacknowledged"),
        row(catalog, PT_HH, "returned_unacknowledged"),
    ]
    assert flashing(render(rows, catalog, styles=True)) == {
        "E1.V1.LT1 高高报": True,
        "E1.V1.PT1 高高报": True,
        "E1.V1.AT1 一级报警": True,
        "E1.V1.AT1 二级报警": False,
        "E1.P1.AT2 二级报警": False,
    }


def test_the_list_is_capped_with_how_many_more(catalog: Catalog) -> None:
    rows = [
        row(catalog, k, "unacknowledged", i) for i, k in enumerate((TOXIC_L2, TOXIC_L1, HH, PT_HH, FROZEN))
    ]
    text = render(rows, catalog, max_lines=2)
    assert alarm_keys(text) == ["E1.V1.AT1 二级报警", "E1.V1.AT1 一级报警"]
    assert "+3 more 另有 3 条" in text
    assert "紧急 crit 1 · 高 high 3 · 中 med 0 · 低 low 1" in text  # the counts are of all of them
    assert "more" not in render(rows, catalog, max_lines=5)


def test_hidden_statuses_are_counted_not_listed(catalog: Catalog) -> None:
    rows = [
        row(catalog, TOXIC_L2, "shelved"),
        row(catalog, TOXIC_L1, "suppressed"),
        row(catalog, HH, "out_of_service"),
        row(catalog, PT_HH, "out_of_service"),
        row(catalog, FROZEN, "normal"),
        row(catalog, COMBUSTIBLE_L2, "acknowledged"),
    ]
    text = render(rows, catalog)
    assert alarm_keys(text) == ["E1.P1.AT2 二级报警"]
    assert (
        "紧急 crit 0 · 高 high 1 · 中 med 0 · 低 low 0 │ 搁置 shelved 1 · 抑制 suppressed 1 · 停用 OOS 2"
        in text
    )


def test_no_alarms_says_so_and_still_counts_the_hidden(catalog: Catalog) -> None:
    text = render([row(catalog, HH, "normal"), row(catalog, PT_HH, "shelved")], catalog)
    assert "无报警" in text and "搁置 shelved 1" in text
    assert "无报警" in render([], catalog)


def test_an_alarm_gone_from_the_config_is_listed_from_its_row(catalog: Catalog) -> None:
    gone = replace(row(catalog, HH, "unacknowledged"), key="E1.V9.LT9:H", subject="E1.V9.LT9", kind="H")
    text = render([gone, row(catalog, TOXIC_L2, "acknowledged")], catalog)
    assert alarm_keys(text) == ["E1.V9.LT9 H", "E1.V1.AT1 二级报警"]


def test_the_live_view_lists_the_alarm_service_s_alarms_once_it_runs(catalog: Catalog) -> None:
    """render_view reads only the runtime's state: a stand-in with the attributes it reads."""
    registry = TagRegistry.from_plant(catalog.plant)
    runtime = SimpleNamespace(
        plant=catalog.plant, registry=registry, live=LiveSnapshot(len(registry)), runners=[], rules=None,
        alarms=None, writer=None, clock=FakeClock(NOW),
    )  # fmt: skip
    console = Console(record=True, width=100)
    console.print(render_view(cast(Runtime, runtime)))
    assert "报警 alarms" not in console.export_text()  # not started: nothing to show yet
    unacked = row(catalog, TOXIC_L2, "unacknowledged", 75)
    runtime.alarms = SimpleNamespace(manager=SimpleNamespace(alarms={unacked.key: unacked}), catalog=catalog)
    console.print(render_view(cast(Runtime, runtime)))
    assert re.search(
        r"紧急 crit +未确认 unack +罐区氨气浓度 E1.V1.AT1 +二级报警 +85.2 / 50 ppm +1m15s",
        console.export_text(),
    )


def test_the_top_alarm_shows_its_corrective_action_and_response_time() -> None:
    """The rationalization is shown with the alarm: what to do now for the alarm at the top."""
    plant = load_plant(PLANT)
    reference = Path(__file__).resolve().parents[2] / "config" / "reference" / "rationalization.yaml"
    catalog = Catalog(plant, compile_rules(plant), load_defaults(reference))
    text = render([row(catalog, HH, "acknowledged"), row(catalog, TOXIC_L2, "unacknowledged")], catalog)
    action = catalog.by_key(TOXIC_L2).rationale.action  # type: ignore[union-attr]
    assert action.startswith("立即疏散现场及下风向人员")
    line = " ".join(text.split())  # the action wraps at the console's width
    assert f"处置 action 罐区氨气浓度 二级报警: {action}（1m00s 内响应 respond within）" in line
    # without a rationalization there is nothing to show, and no empty line for it
    bare = render([row(catalog, TOXIC_L2, "unacknowledged")], Catalog(plant, compile_rules(plant)))
    assert "处置" not in bare
