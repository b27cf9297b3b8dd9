"""The demo plant (config/demo) and the GB 18218 reference data load and say what the site is.

Two Lüliang enterprises, ~80 tags split between OPC UA and Modbus, gas detectors resolved
to latched GB/T 50493 levels, ISA-18.2 default deadbands and delays, hazard grades that
follow from GB 18218 (config/reference/gb18218.yaml), ``${ENV}`` ports and ``!include``d
enterprise files whose lines show in errors.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.config import load_plant
from core.errors import ConfigError
from core.plant import ModbusDevice, OpcUaDevice, Plant, Tag
from core.yaml_loader import load_document

CONFIG = Path(__file__).resolve().parents[2] / "config"
DEMO = CONFIG / "demo"
GB18218 = CONFIG / "reference" / "gb18218.yaml"
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def plant() -> Plant:
    return load_plant(DEMO, env={})


@pytest.fixture(scope="module")
def gb18218() -> dict[str, Any]:
    data = yaml.safe_load(GB18218.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _devices(plant: Plant) -> dict[str, OpcUaDevice | ModbusDevice]:
    return {d.id: d for d in plant.devices()}


def _tags_of(plant: Plant, enterprise: str) -> list[Tag]:
    return [t for t in plant.tags() if t.key.startswith(f"{enterprise}.")]


# --- shape of the site --------------------------------------------------------------


def test_demo_has_a_coking_and_a_steel_enterprise_in_luliang(plant: Plant) -> None:
    assert [(e.code, e.industry, e.county) for e in plant.enterprises] == [
        ("LHJH", "焦化", "孝义市"),
        ("LGGT", "钢铁", "文水县"),
    ]
    assert {e.city for e in plant.enterprises} == {"吕梁市"}


def test_about_80_tags_with_unique_keys(plant: Plant) -> None:
    tags = plant.tags()
    assert 75 <= len(tags) <= 95
    keys = [t.key for t in tags]
    assert len(set(keys)) == len(keys)
    ent_of = {t.key: e.code for e in plant.enterprises for h in e.hazard_sources for t in h.tags}
    assert all(t.key == f"{ent_of[t.key]}.{t.equipment}.{t.code}" for t in tags)


def test_every_kind_of_measurement_is_present(plant: Plant) -> None:
    kinds = Counter(t.kind.value for t in plant.tags())
    assert set(kinds) >= {"LEVEL", "PRESSURE", "TEMPERATURE", "FLOW", "GAS", "DISCRETE"}
    assert kinds["GAS"] >= 20


def test_each_enterprise_splits_its_tags_between_opcua_and_modbus(plant: Plant) -> None:
    devices = _devices(plant)
    for ent in plant.enterprises:
        protocols = Counter(type(devices[t.source.device]).__name__ for t in _tags_of(plant, ent.code))
        total = sum(protocols.values())
        assert 0.4 <= protocols["OpcUaDevice"] / total <= 0.6, (ent.code, protocols)
        kinds = Counter(type(d).__name__ for d in ent.devices)
        assert kinds["OpcUaDevice"] == 1 and 1 <= kinds["ModbusDevice"] <= 2, (ent.code, kinds)


def test_human_facing_names_are_chinese(plant: Plant) -> None:
    names = [e.name for e in plant.enterprises]
    for ent in plant.enterprises:
        for hs in ent.hazard_sources:
            names += [hs.name, *(u.name for u in hs.units), *(il.name for il in hs.interlocks)]
            names += [eq.name for u in hs.units for eq in u.equipment]
            names += [t.name for t in hs.tags]
            assert hs.baobao is not None
            names += [hs.baobao.principal.name, hs.baobao.technical.name, hs.baobao.operational.name]
    assert all(CJK.search(n) for n in names), [n for n in names if not CJK.search(n)]


# --- device bindings -----------------------------------------------------------------


def test_opcua_nodes_are_equipment_dot_tag_in_the_device_namespace(plant: Plant) -> None:
    devices = _devices(plant)
    for tag in plant.tags():
        dev = devices[tag.source.device]
        if isinstance(dev, OpcUaDevice):
            assert tag.source.node == f"s={tag.equipment}.{tag.code}"
            assert dev.namespace_uri is not None and dev.namespace_uri.startswith("urn:hazardwatch:sim:")


def test_modbus_bindings_cover_tables_types_byte_orders_and_unit_ids(plant: Plant) -> None:
    devices = _devices(plant)
    seen: set[tuple[str, str, str]] = set()
    unit_ids: dict[str, set[int]] = {}
    for tag in plant.tags():
        dev, src = devices[tag.source.device], tag.source
        if not isinstance(dev, ModbusDevice):
            continue
        assert src.table is not None and src.type is not None
        order = src.byte_order or dev.byte_order
        seen.add((src.table.value, src.type.value, order.value))
        unit_ids.setdefault(dev.id, set()).add(dev.unit_id if src.unit_id is None else src.unit_id)
        if src.type.value in ("INT16", "UINT16") and src.scale is not None:
            assert src.scale.raw == (0, 27648)  # 4-20 mA as analog-input counts
    tables = {t for t, _, _ in seen}
    types = {ty for _, ty, _ in seen}
    assert tables == {"HOLDING", "INPUT", "COIL", "DISCRETE_INPUT"}
    assert {"FLOAT32", "INT16", "UINT16", "BOOL"} <= types and types & {"INT32", "UINT32"}
    assert {o for _, ty, o in seen if ty == "FLOAT32"} == {"ABCD", "CDAB"}
    assert any(len(ids) >= 2 for ids in unit_ids.values())


def test_modbus_registers_do_not_overlap(plant: Plant) -> None:
    devices = _devices(plant)
    spans: dict[tuple[str, int, str], list[tuple[int, int, str]]] = {}
    for tag in plant.tags():
        dev, src = devices[tag.source.device], tag.source
        if isinstance(dev, ModbusDevice):
            assert src.table is not None and src.type is not None and src.address is not None
            unit = dev.unit_id if src.unit_id is None else src.unit_id
            start = src.address
            spans.setdefault((dev.id, unit, src.table.value), []).append(
                (start, start + src.type.registers, tag.key)
            )
    for where, items in spans.items():
        items.sort()
        end, last = 0, ""
        for start, stop, key in items:  # against every earlier span, not just the previous one
            assert start >= end, f"{key} overlaps {last} on {where}"
            if stop > end:
                end, last = stop, key


# --- environment and includes -----------------------------------------------------------


def test_env_defaults_give_the_simulator_ports(plant: Plant) -> None:
    devices = _devices(plant)
    opc, mb = devices["LHJH-OPC"], devices["LHJH-MB1"]
    assert isinstance(opc, OpcUaDevice) and isinstance(mb, ModbusDevice)
    assert opc.endpoint == "opc.tcp://127.0.0.1:4841/hazardwatch"
    assert mb.port == 15020


def test_env_overrides_ports() -> None:
    env = {"HW_SIM_OPCUA_PORT_LHJH": "14841", "HW_SIM_MODBUS_PORT_LHJH": "25020"}
    devices = _devices(load_plant(DEMO, env=env))
    opc, mb, other = devices["LHJH-OPC"], devices["LHJH-MB1"], devices["LGGT-GDS"]
    assert isinstance(opc, OpcUaDevice) and isinstance(mb, ModbusDevice) and isinstance(other, ModbusDevice)
    assert opc.endpoint == "opc.tcp://127.0.0.1:14841/hazardwatch"
    assert mb.port == 25020
    assert other.port == 15021


def _line_of(path: Path, text: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, start=1) if text in line)


def test_included_documents_keep_their_own_line_numbers() -> None:
    loaded = load_document(DEMO / "plant.yaml", env={})
    assert loaded.issues == []
    lggt = DEMO / "enterprises" / "lggt.yaml"
    file, line = loaded.source.where(("enterprises", 1, "hazard_sources", 0, "tags", 0))
    assert Path(file).resolve() == lggt
    assert line == _line_of(lggt, "- code: LT-501A")


def test_an_error_in_an_included_file_names_that_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(DEMO, tmp_path / "config" / "demo", ignore=shutil.ignore_patterns("scenarios"))
    shutil.copytree(CONFIG / "reference", tmp_path / "config" / "reference")
    lhjh = tmp_path / "config" / "demo" / "enterprises" / "lhjh.yaml"
    good = "limits: {ll: 0.6, l: 1.0, h: 8.2, hh: 8.6}"  # 1#粗苯储罐 LT-201 comes first
    lhjh.write_text(lhjh.read_text(encoding="utf-8").replace(good, good.replace("8.6", "8.0"), 1), "utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_plant("config/demo", env={})
    line = _line_of(lhjh, "hh: 8.0")
    assert [str(i) for i in info.value.issues] == [
        f"config/demo/enterprises/lhjh.yaml:{line} "
        "enterprises[0].hazard_sources[1].tags[0].limits.hh: must be above h (8.2), is 8"
    ]


# --- alarm limits ----------------------------------------------------------------------


def _limits(plant: Plant, key: str) -> tuple[float | None, ...]:
    lim = plant.tag(key).limits
    assert lim is not None
    return lim.ll, lim.l, lim.h, lim.hh


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("LGGT.G501.AT-501", (None, None, 24.0, 160.0)),  # CO_STEEL, GB 6222 practice
        ("LGGT.T701.AT-701", (None, 19.5, 23.5, None)),  # oxygen low / high %VOL
        ("LHJH.T201.AT-201", (None, None, 20.0, 50.0)),  # combustible point default %LEL
        ("LHJH.G101.AT-103", (None, None, 20.0, 50.0)),
    ],
)
def test_gas_detectors_resolve_to_gbt_50493_levels(
    plant: Plant, key: str, expected: tuple[float | None, ...]
) -> None:
    assert _limits(plant, key) == expected


def test_toxic_default_is_one_and_two_times_the_oel(plant: Plant) -> None:
    # NH3 OEL 20 mg/m³ at 24.45 L/mol: 20 × 24.45 / 17.03 ≈ 28.7 ppm
    _, _, h, hh = _limits(plant, "LHJH.V401.AT-401")
    assert h == pytest.approx(20 * 24.45 / 17.03, rel=1e-6)
    assert hh == pytest.approx(2 * h, rel=1e-6)


def test_ammonia_machine_room_uses_gb_50072_levels_within_range(plant: Plant) -> None:
    tag = plant.tag("LGGT.R801.AT-801")
    _, _, h, hh = _limits(plant, tag.key)
    assert h == 150.0
    assert hh == pytest.approx(25 / 100 * 15.7 / 100 * 1e6)  # 25 %LEL of NH3 in ppm
    assert tag.range is not None and tag.range[0] <= h < hh <= tag.range[1]


def test_gas_alarms_latch_without_delay_or_deadband(plant: Plant) -> None:
    for tag in plant.tags():
        if tag.kind == "GAS":
            assert tag.limits is not None and tag.limits.latched
            assert (tag.limits.deadband, tag.limits.on_delay_s, tag.limits.off_delay_s) == (0, 0, 0)


@pytest.mark.parametrize(
    ("key", "deadband", "on_delay_s"),
    [
        ("LHJH.G101.LT-101A", 0.05 * 45, 60.0),  # level: 5 % of range, 60 s
        ("LHJH.T302.LT-302", 0.05 * 12000, 60.0),
        ("LHJH.G101.PT-101", 0.02 * 8, 15.0),  # pressure: 2 %, 15 s
        ("LHJH.T201.TT-201", 0.01 * 100, 60.0),  # temperature: 1 %, 60 s
        ("LHJH.G101.FT-101", 0.05 * 60000, 15.0),  # flow: 5 %, 15 s
    ],
)
def test_default_deadband_and_on_delay_by_kind(
    plant: Plant, key: str, deadband: float, on_delay_s: float
) -> None:
    lim = plant.tag(key).limits
    assert lim is not None
    assert lim.deadband == pytest.approx(deadband)
    assert lim.on_delay_s == on_delay_s
    assert lim.off_delay_s == 0 and not lim.latched


def test_every_analog_tag_has_limits(plant: Plant) -> None:
    missing = [t.key for t in plant.tags() if t.kind != "DISCRETE" and t.limits is None]
    assert missing == []


# --- hazard sources and interlocks ---------------------------------------------------------


def _q_row(gb18218: dict[str, Any], cas: str | None, name: str) -> dict[str, Any]:
    rows = gb18218["critical_quantities"]
    if cas is not None:
        return next(r for r in rows if r.get("cas") == cas)
    return next(r for r in rows if "cas" not in r and r["name"] in name)  # 焦炉煤气, 高炉煤气 → 煤气


def test_hazard_grades_follow_from_gb_18218(plant: Plant, gb18218: dict[str, Any]) -> None:
    for ent in plant.enterprises:
        assert ent.population_500m is not None
        alpha = next(r["alpha"] for r in gb18218["alpha"] if ent.population_500m >= r["min_population"])
        for hs in ent.hazard_sources:
            s = r = 0.0
            for sub in hs.substances:
                row = _q_row(gb18218, sub.cas, sub.name)
                assert (sub.critical_t, sub.beta) == (row["q_t"], row["beta"]), (hs.code, sub.name)
                s += sub.design_t / row["q_t"]
                r += row["beta"] * sub.design_t / row["q_t"]
            grade = next(g["grade"] for g in gb18218["grades"] if alpha * r >= g["r_min"])
            assert s >= 1, f"{hs.code} is not a major hazard source (S = {s:.2f})"
            assert hs.grade == grade, (hs.code, alpha * r)


def test_interlocks_vote_over_known_tags_with_discrete_bypasses(plant: Plant) -> None:
    interlocks = [(e.code, il) for e in plant.enterprises for h in e.hazard_sources for il in h.interlocks]
    assert len(interlocks) >= 3
    assert {il.voting for _, il in interlocks} >= {"1oo1", "1oo2", "2oo3"}
    for ent, il in interlocks:
        m, n = (int(x) for x in il.voting.split("oo"))
        assert 1 <= m <= n == len(il.inputs), il.code
        for inp in il.inputs:
            plant.tag(f"{ent}.{inp.tag}")
            if inp.bypass is not None:
                assert plant.tag(f"{ent}.{inp.bypass}").kind == "DISCRETE"
        assert plant.tag(f"{ent}.{il.final_element.tag}").kind == "DISCRETE"


# --- GB 18218-2018 reference data -------------------------------------------------------------


@pytest.mark.parametrize(
    ("cas", "name", "q_t"),
    [("7664-41-7", "氨", 10), ("71-43-2", "苯", 50), ("67-56-1", "甲醇", 500), (None, "煤气", 20)],
)
def test_gb18218_critical_quantities(gb18218: dict[str, Any], cas: str | None, name: str, q_t: float) -> None:
    row = _q_row(gb18218, cas, name)
    assert (row["name"], row["q_t"]) == (name, q_t)


def test_gb18218_tables(gb18218: dict[str, Any]) -> None:
    assert gb18218["standard"] == "GB 18218-2018"
    assert [(r["min_population"], r["alpha"]) for r in gb18218["alpha"]] == [
        (100, 2.0),
        (50, 1.5),
        (30, 1.2),
        (1, 1.0),
        (0, 0.5),
    ]
    assert [(g["grade"], g["r_min"]) for g in gb18218["grades"]] == [(1, 100), (2, 50), (3, 10), (4, 0)]
    toxic = {r["name"]: r["beta"] for r in gb18218["beta"]["toxic_gases"]}
    assert (toxic["一氧化碳"], toxic["氨"], toxic["氯"], toxic["硫化氢"], toxic["碳酰氯"]) == (2, 2, 4, 5, 20)
    assert gb18218["beta"]["defaults"] == {
        "toxic_gas": 2,
        "highly_toxic_gas": 4,
        "explosive": 2,
        "flammable_gas": 1.5,
        "other": 1,
    }
    assert set(gb18218["beta"]["categories"]) == set(gb18218["category_quantities"])
    assert gb18218["beta"]["categories"]["W2"]["beta"] == 1.5


def _cas_ok(cas: str) -> bool:
    """CAS number format and check digit (digits weighted 1, 2, 3... from the right, mod 10)."""
    if not re.fullmatch(r"\d{2,7}-\d{2}-\d", cas):
        return False
    body, check = cas.rsplit("-", 1)
    digits = body.replace("-", "")[::-1]
    return sum(i * int(d) for i, d in enumerate(digits, start=1)) % 10 == int(check)


def test_gb18218_rows_are_well_formed(gb18218: dict[str, Any]) -> None:
    # A stray comma in a YAML flow mapping silently adds a key: check every row's keys.
    allowed = {"name", "name_en", "cas", "cas_also", "aliases", "q_t", "beta", "beta_inferred"}
    rows = gb18218["critical_quantities"]
    assert len(rows) >= 25
    for row in rows:
        assert set(row) <= allowed and {"name", "q_t"} <= set(row), row
        assert isinstance(row["name"], str) and row["q_t"] > 0, row
        for cas in [row["cas"], *row.get("cas_also", [])] if "cas" in row else []:
            assert _cas_ok(cas), row
    for row in gb18218["beta"]["toxic_gases"]:
        assert set(row) <= {"name", "name_en", "cas", "beta"}, row
        assert "cas" not in row or _cas_ok(row["cas"]), row
    assert len({r.get("cas") for r in rows if "cas" in r}) == sum("cas" in r for r in rows)
