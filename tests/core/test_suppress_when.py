"""A unit's ``suppress_when`` (ISA-18.2 suppression by design) in a good config: its tag named by
code within the hazard source, EQUIPMENT.CODE or full key; one of below/above/equals; the default
reason and no delays. The refused forms are golden cases (testcases/suppress_when_*)."""

from __future__ import annotations

from pathlib import Path

from core.config import load_plant
from core.plant import SuppressWhen

PLANT = """
enterprises:
  - code: E1
    name: 测试化工有限公司
    county: 孝义市
    devices:
      - {protocol: MODBUS, id: MB1, host: 127.0.0.1}
    hazard_sources:
      - code: H1
        name: 合成装置
        kind: PRODUCTION
        grade: 2
        units:
          - code: U1
            name: 合成单元
            equipment: [{code: R1, name: 合成塔}]
            suppress_when: {tag: FI-101, below: 0.5, reason: 装置停车检修}
          - code: U2
            name: 循环单元
            equipment: [{code: P1, name: 循环泵}]
            suppress_when: {tag: P1.XS-101, equals: 0, on_delay_s: 30, off_delay_s: 300}
          - code: U3
            name: 冷却单元
            equipment: [{code: E1, name: 冷却器}]
            suppress_when: {tag: E1.R1.FI-101, above: 99.5}
          - code: U4
            name: 储罐区
            equipment: [{code: T1, name: 中间罐}]
        tags:
          - code: FI-101
            name: 合成气流量
            equipment: R1
            kind: FLOW
            unit: m³/h
            range: [0, 100]
            source: {device: MB1, table: HOLDING, address: 0, type: FLOAT32}
          - code: XS-101
            name: 循环泵运行状态
            equipment: P1
            kind: DISCRETE
            source: {device: MB1, table: DISCRETE_INPUT, address: 0, type: BOOL}
"""


def test_suppress_when_forms_load_with_their_defaults(tmp_path: Path) -> None:
    (tmp_path / "plant.yaml").write_text(PLANT, encoding="utf-8")
    units = load_plant(tmp_path, env={}).enterprises[0].hazard_sources[0].units
    assert [u.suppress_when for u in units] == [
        SuppressWhen(tag="FI-101", below=0.5, reason="装置停车检修"),
        SuppressWhen(tag="P1.XS-101", equals=0.0, on_delay_s=30.0, off_delay_s=300.0),
        SuppressWhen(tag="E1.R1.FI-101", above=99.5),
        None,
    ]
    third = units[2].suppress_when
    assert third is not None and (third.reason, third.on_delay_s) == ("装置停车/unit shut down", 0.0)
