"""Alarm identity and content (alarms/model.py): priorities and their GB/T 50493 order, labels,
keys that survive a config edit, messages in Chinese and English, and a catalog that builds
nothing until asked."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from alarms import model
from alarms.model import AlarmDef, Catalog, Priority, messages
from alarms.rationale import defaults_for
from alarms.state import Action
from core.conditions import RuleKind, Severity
from core.config import load_plant
from core.plant import Plant
from rules.compile import compile_rules

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config/demo"
TWO = ROOT / "tests/core/data/two_enterprises.yaml"


@pytest.fixture(scope="module")
def demo() -> Catalog:
    plant = load_plant(DEMO, env={})
    return Catalog(plant, compile_rules(plant), defaults_for(DEMO, plant))


def _alarm(catalog: Catalog, key: str) -> AlarmDef:
    alarm = catalog.by_key(key)
    assert alarm is not None, key
    return alarm


def _two(folder: Path, *edits: tuple[str, str]) -> Path:
    """two_enterprises.yaml with ``edits`` in ``folder``."""
    text = TWO.read_text(encoding="utf-8").replace(
        "reference: ../../../config/reference", f"reference: {ROOT / 'config/reference'}"
    )
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    folder.mkdir(exist_ok=True)
    path = folder / "plant.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --- priority and order --------------------------------------------------------------


@pytest.mark.parametrize(
    ("severity", "priority"),
    [
        (Severity.CRITICAL, Priority.CRITICAL),
        (Severity.HIGH, Priority.HIGH),
        (Severity.MEDIUM, Priority.MEDIUM),
        (Severity.LOW, Priority.LOW),
    ],
)
def test_priority_is_the_rules_severity(severity: Severity, priority: Priority) -> None:
    assert Priority.of(severity) is priority
    assert priority.severity is severity
    assert priority.value == priority.name.lower()


def test_gas_alarms_order_level_2_over_level_1_and_toxic_over_combustible(demo: Catalog) -> None:
    toxic = "LHJH.G101.AT-101"  # CO, TOXIC
    combustible = "LHJH.G101.AT-103"  # H2, COMBUSTIBLE
    ranked = sorted(
        (_alarm(demo, f"{tag}:{kind}") for tag in (toxic, combustible) for kind in ("GAS_L1", "GAS_L2")),
        key=lambda a: a.order,
        reverse=True,
    )
    assert [(a.subject, a.kind) for a in ranked] == [
        (toxic, RuleKind.GAS_L2),
        (combustible, RuleKind.GAS_L2),
        (toxic, RuleKind.GAS_L1),
        (combustible, RuleKind.GAS_L1),
    ]
    assert [a.priority for a in ranked] == [Priority.CRITICAL, Priority.HIGH, Priority.HIGH, Priority.MEDIUM]
    assert all(a.latching for a in ranked)


def test_demand_without_action_is_critical_and_a_process_limit_is_not(demo: Catalog) -> None:
    assert _alarm(demo, "LHJH-H01.IL-101:NO_ACTION").priority is Priority.CRITICAL
    assert _alarm(demo, "LHJH.G101.LT-101A:HH").priority is Priority.HIGH
    assert _alarm(demo, "LHJH.G101.LT-101A:H").priority is Priority.MEDIUM


# --- labels --------------------------------------------------------------------------


def test_a_tag_alarms_labels_name_where_it_is(demo: Catalog) -> None:
    a = _alarm(demo, "LHJH.G101.LT-101A:HH")
    assert dict(a.labels) == {
        "enterprise": "LHJH",
        "county": "孝义市",
        "hazard_source": "LHJH-H01",
        "unit": "LHJH-U01",
        "tag": "LHJH.G101.LT-101A",
        "kind": "HH",
        "priority": "high",
    }
    assert (a.name, a.unit, a.subject, a.kind) == (
        "煤气柜柜位（雷达）",
        "m",
        "LHJH.G101.LT-101A",
        RuleKind.HH,
    )
    with pytest.raises(TypeError):
        a.labels["unit"] = "x"  # type: ignore[index]


def test_an_interlock_alarm_has_no_unit_label(demo: Catalog) -> None:
    a = _alarm(demo, "LHJH-H01.IL-101:TRIP_DEMAND")
    assert dict(a.labels) == {
        "enterprise": "LHJH",
        "county": "孝义市",
        "hazard_source": "LHJH-H01",
        "unit": None,
        "interlock": "LHJH-H01.IL-101",
        "kind": "TRIP_DEMAND",
        "priority": "high",
    }


def test_sif_disabled_is_a_critical_alarm_of_its_own_per_interlock(demo: Catalog) -> None:
    a = demo.sif_disabled("LHJH-H01.IL-101")
    assert (a.key, a.rule, a.kind, a.priority, a.subject) == (
        "LHJH-H01.IL-101.sif_disabled",
        -1,
        None,
        Priority.CRITICAL,
        "LHJH-H01.IL-101",
    )
    assert a.labels["kind"] == "SIF_DISABLED" and a.labels["interlock"] == "LHJH-H01.IL-101"
    assert a.rationale.source == "default for SIF_DISABLED" and a.rationale.response_s == 60
    assert demo.sif_disabled("LHJH-H01.IL-101") is a
    assert demo.by_key("LHJH-H01.IL-101.sif_disabled") is a
    assert [s.key for s in demo.sif_alarms()][:2] == [
        "LHJH-H01.IL-101.sif_disabled",
        "LHJH-H02.IL-201.sif_disabled",
    ]
    with pytest.raises(KeyError):
        demo.sif_disabled("LHJH-H01.NOPE")


# --- identity --------------------------------------------------------------------------


def test_keys_are_the_rule_keys_and_unknown_ones_are_none(demo: Catalog) -> None:
    rules = demo.rules
    assert [a.key for a in demo] == list(rules.keys)
    assert len(demo) == len(rules)
    assert demo[3] is demo[3] is demo.by_key(rules.keys[3])
    assert demo.by_key("LHJH.G101.LT-101A:NOPE") is None
    assert demo.by_key("LHJH-H01.NOPE.sif_disabled") is None
    with pytest.raises(IndexError):
        demo[len(rules)]


def test_keys_survive_a_config_edit_that_moves_the_rule_indexes(tmp_path: Path) -> None:
    before = load_plant(_two(tmp_path / "before"))
    after = load_plant(
        _two(
            tmp_path / "after",
            # a tag inserted before LT1, and LT1's limits edited
            (
                "        tags:\n          - {code: LT1,",
                "        tags:\n          - {code: LT0, name: 新液位, equipment: V1, kind: LEVEL, unit: m, range: [0, 10], "
                "source: {device: dcs, node: s=V1.LT0}, limits: {hh: 9}}\n          - {code: LT1,",
            ),
            ("limits: {h: 8, hh: 9}", "limits: {l: 1, h: 7, hh: 9.5}"),
        )
    )
    old, new = Catalog(before, compile_rules(before)), Catalog(after, compile_rules(after))
    moved = 0
    for a in old:
        b = new.by_key(a.key)
        assert b is not None, a.key
        assert (b.key, b.subject, b.kind, b.priority, dict(b.labels)) == (
            a.key,
            a.subject,
            a.kind,
            a.priority,
            dict(a.labels),
        )
        moved += a.rule != b.rule
    assert moved > 0
    assert new.by_key("AA.V1.LT1:L") is not None and old.by_key("AA.V1.LT1:L") is None


# --- messages --------------------------------------------------------------------------


def test_messages_in_chinese_and_english_with_value_unit_and_limit(demo: Catalog) -> None:
    a = _alarm(demo, "LHJH.G101.AT-101:GAS_L2")
    zh, en = messages(a, Action.RAISED, 180.5, 34.9161)
    assert zh == (
        "【报警】吕梁恒嘉焦化化工有限公司 焦炉煤气柜 煤气柜柜顶一氧化碳浓度（LHJH.G101.AT-101）二级报警："
        "当前值 180.5 ppm，限值 34.9161 ppm"
    )
    assert en == (
        "[alarm] LHJH LHJH-H01 LHJH.G101.AT-101 (煤气柜柜顶一氧化碳浓度): GAS_L2, value 180.5 ppm, "
        "limit 34.9161 ppm (critical)"
    )


@pytest.mark.parametrize(
    ("key", "event", "value", "limit", "zh_part", "en_part"),
    [
        # NaN (a BAD reading, a rule without limit) is a dash, never "nan"
        (
            "LHJH.G101.LT-101A:BAD_QUALITY",
            Action.RAISED,
            math.nan,
            math.nan,
            "当前值 —，限值 —",
            "value —, limit —",
        ),
        ("LHJH.G101.LT-101A:HH", Action.CLEARED, 40.2, 41.0, "【消警】", "value 40.2 m, limit 41 m"),
        ("LHJH.G101.LT-101C:STALE", Action.RERAISED, 75.0, 60.0, "数据中断", "value 75 s, limit 60 s"),
        ("LHJH-H01.IL-101:TRIP_DEMAND", Action.ACKED, 2.0, 2.0, "【已确认】", "value 2, limit 2 (high)"),
        ("LHJH.G101.LT-101A:LL", Action.RETURNED, 1e-7, 4.0, "当前值 1e-07 m", "[returned, unacknowledged]"),
    ],
)
def test_message_values_units_and_events(
    demo: Catalog, key: str, event: Action, value: float, limit: float, zh_part: str, en_part: str
) -> None:
    zh, en = messages(_alarm(demo, key), event, value, limit)
    assert zh_part in zh and en_part in en
    assert "nan" not in zh + en


def test_every_event_has_text_and_a_sif_alarm_has_its_label(demo: Catalog) -> None:
    sif = demo.sif_disabled("LHJH-H01.IL-101")
    for event in Action:
        zh, en = messages(sif, event, math.nan, math.nan)
        assert "安全仪表功能失效" in zh and "SIF disabled" in en


def test_a_rate_alarm_reports_per_minute() -> None:
    assert model._unit(RuleKind.ROC, _tag(unit="MPa")) == "MPa/min"
    assert model._unit(RuleKind.ROC, _tag(unit="")) == ""
    assert model._unit(RuleKind.CLOCK_AHEAD, _tag(unit="MPa")) == "s"


def _tag(**given: Any) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(**given)


# --- laziness ----------------------------------------------------------------------------


def _big_plant(tmp_path: Path, n: int) -> Plant:
    tags = "\n".join(
        f"          - {{code: T{i}, name: 温度{i}, equipment: V1, kind: TEMPERATURE, unit: °C, range: [0, 100], "
        f"source: {{device: dcs, node: s=T{i}}}, limits: {{ll: 5, l: 10, h: 80, hh: 90}}}}"
        for i in range(n)
    )
    path = tmp_path / "plant.yaml"
    path.write_text(
        f"""\
enterprises:
  - code: BIG
    name: 大型化工
    county: 孝义市
    devices:
      - {{protocol: OPCUA, id: dcs, endpoint: "opc.tcp://127.0.0.1:4840", namespace_uri: "urn:big"}}
    hazard_sources:
      - code: BIG-H1
        name: 罐区
        kind: STORAGE
        grade: 2
        units:
          - {{code: U1, name: 储罐, equipment: [{{code: V1, name: 储罐1}}]}}
        tags:
{tags}
""",
        encoding="utf-8",
    )
    return load_plant(path)


def test_building_a_catalog_makes_no_alarm_and_no_lookup_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant = _big_plant(tmp_path, 3000)
    rules = compile_rules(plant)
    assert len(rules) == 3000 * 7  # 4 limits, bad quality, clock ahead, out of range
    made = []
    init = AlarmDef.__init__

    def counting(self: AlarmDef, *args: Any, **kwargs: Any) -> None:
        made.append(1)
        init(self, *args, **kwargs)

    monkeypatch.setattr(AlarmDef, "__init__", counting)
    catalog = Catalog(plant, rules)
    assert made == [] and len(catalog) == len(rules)
    assert not {"_index", "_tags", "_interlocks"} & set(vars(catalog))
    last = catalog[len(rules) - 1]
    assert len(made) == 1 and catalog[len(rules) - 1] is last
    assert catalog.by_key(last.key) is last and len(made) == 1
    # no defaults given: overrides only, else empty text saying so
    assert (last.rationale.cause, last.rationale.response_s, last.rationale.source) == ("", None, "none")
