"""Issue 9 items 1, 4, 5 and 20 beyond the golden cases in ``testcases/``: every number of the
model is finite and bounded, the bounds keep rule compilation in integer microseconds, the
cross-checks read each value as validation does whatever its spelling, and COUNTER tags.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from core.conditions import RuleKind
from core.config import load_plant
from core.errors import ConfigError
from core.plant import Plant, TagKind, normalise
from core.units import KIND_UNITS
from rules.compile import compile_rules
from tests.support.plants import write_small_plant

# --- every number is bounded ------------------------------------------------------------


def _models(model: type[BaseModel], seen: dict[str, type[BaseModel]]) -> dict[str, type[BaseModel]]:
    seen[model.__name__] = model
    for info in model.model_fields.values():
        for sub in _nested_models(info.annotation):
            if sub.__name__ not in seen:
                _models(sub, seen)
    return seen


def _nested_models(tp: Any) -> Iterator[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        yield tp
    for arg in get_args(tp):
        yield from _nested_models(arg)


def _strip(tp: Any) -> Any:
    """The scalar type under Optional/Annotated: float, int, tuple[...], or anything else."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
            continue
        members = [a for a in get_args(tp) if a is not type(None)]
        if get_origin(tp) not in (tuple, Literal) and len(members) == 1 and type(None) in get_args(tp):
            tp = members[0]
            continue
        return tp


_BAD: dict[str, list[Any]] = {
    "float": [math.nan, math.inf, -math.inf, 1e300, -1e300],
    "int": [10**18, -(10**18)],
    "range": [(0.0, math.nan), (0.0, math.inf), (-math.inf, 0.0), (0.0, 1e300)],
}


def _numeric_fields() -> list[tuple[str, Any, str]]:
    out = []
    for name, model in sorted(_models(Plant, {}).items()):
        for field, info in model.model_fields.items():
            tp = _strip(info.annotation)
            if tp is bool:
                continue
            kind = {float: "float", int: "int"}.get(tp)
            if get_origin(tp) is tuple and all(_strip(a) is float for a in get_args(tp)):
                kind = "range"
            if kind is not None:
                annotated = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
                out.append((f"{name}.{field}", annotated, kind))
    return out


NUMERIC_FIELDS = _numeric_fields()


def test_the_walk_finds_the_numbers_of_the_whole_model() -> None:
    names = {n for n, _, _ in NUMERIC_FIELDS}
    assert len(names) >= 50
    assert {
        "Limits.hh",
        "Tag.range",
        "ModbusDevice.poll_interval_s",
        "StorageSettings.spool_max_bytes",
    } <= names


@pytest.mark.parametrize(("name", "annotated", "kind"), NUMERIC_FIELDS, ids=[n for n, _, _ in NUMERIC_FIELDS])
def test_every_number_refuses_nan_infinity_and_absurd_sizes(name: str, annotated: Any, kind: str) -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(annotated)
    for bad in _BAD[kind]:
        with pytest.raises(ValidationError):
            adapter.validate_python(bad)


# --- the bounds keep compilation finite ---------------------------------------------------


def _load(tmp_path: Path, devices: str, tags: str, env: dict[str, str] | None = None) -> Plant:
    plant = load_plant(write_small_plant(tmp_path, devices, tags), env=env or {})
    assert isinstance(plant, Plant)
    return plant


def test_every_duration_at_its_maximum_still_compiles(tmp_path: Path) -> None:
    """The documented maxima are small enough for rules/compile.py's integer microseconds."""
    plant = _load(
        tmp_path,
        "- {protocol: MODBUS, id: MB1, host: 127.0.0.1, poll_interval_s: 86400, timeout_s: 600}\n",
        """\
- code: LT1
  name: 储罐液位
  equipment: V1
  kind: LEVEL
  unit: m
  range: [-1.0e15, 1.0e15]
  resolution: 1.0e14
  source: {device: MB1, table: HOLDING, address: 0, type: FLOAT64}
  limits: {l: -1.0e15, h: 1.0e15, deadband_pct: 50, on_delay_s: 86400, off_delay_s: 86400}
  data_quality: {frozen_s: 604800}
  rate: {max_per_min: 1.0e12, window_s: 86400, on_delay_s: 86400}
- code: LT2
  name: 储罐液位
  equipment: V1
  kind: LEVEL
  unit: m
  range: [-1.0e15, 1.0e15]
  source: {device: MB1, table: HOLDING, address: 4, type: FLOAT64}
  deviation: {tag: V1.LT1, max: 1.0e15, on_delay_s: 86400}
  data_quality: {stale_s: 604800}
- code: XV1
  name: 切断阀
  equipment: V1
  kind: DISCRETE
  source: {device: MB1, table: COIL, address: 0, type: BOOL}
  state: {alarm_value: 1, on_delay_s: 86400, command: V1.XV2, travel_s: 86400}
- code: XV2
  name: 切断阀指令
  equipment: V1
  kind: DISCRETE
  source: {device: MB1, table: COIL, address: 1, type: BOOL}
""",
    )
    rules = compile_rules(plant)
    stale = [rules.on_us[i] for i, k in enumerate(rules.kind) if k == RuleKind.STALE]
    assert 604_800_000_000 in stale  # LT2's own stale time
    assert 864_000_000_000 in stale  # LT1: 10 polls of a day
    assert max(rules.on_us) <= 864_000_000_000 and max(rules.window_us) == 86_400_000_000


# --- one spelling, one rule ---------------------------------------------------------------

_SECURED_NO_MODE = """\
- protocol: {protocol}
  id: OPC1
  endpoint: "opc.tcp://127.0.0.1:4840"
  namespace_uri: "urn:test"
  security_policy: {policy}
  security_mode: none
"""


@pytest.mark.parametrize("protocol", ["OPCUA", "opcua", "opc-ua", "OPC_UA", "Opc-Ua"])
@pytest.mark.parametrize("policy", ["BASIC256SHA256", "basic256sha256"])
def test_every_spelling_of_opc_ua_gets_the_security_check(tmp_path: Path, protocol: str, policy: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, _SECURED_NO_MODE.format(protocol=protocol, policy=policy), "[]")
    assert [i.message for i in info.value.issues] == [
        "security_policy BASIC256SHA256 and security_mode NONE do not go together "
        "(both NONE, or a policy with SIGN / SIGN_AND_ENCRYPT)"
    ]


_RTU_PAIR = """\
- {{protocol: modbus, id: A, transport: rtu, serial_port: /dev/ttyS1, unit_id: 1}}
- {{protocol: Modbus, id: B, transport: RTU, serial_port: /dev/ttyS1, unit_id: 2, {b}}}
"""


@pytest.mark.parametrize(
    "b", ['bytesize: "${BITS:-8}"', "parity: e", "parity: Even", 'baudrate: "9600"', 'pause_s: "0.05"']
)
def test_bus_settings_agree_whatever_their_spelling(tmp_path: Path, b: str) -> None:
    """Every spelling validation reads as the default is the default on the bus, too."""
    plant = _load(tmp_path, _RTU_PAIR.format(b=b), "[]")
    assert len(plant.devices()) == 2


def test_a_bus_setting_that_differs_is_still_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, _RTU_PAIR.format(b="parity: o"), "[]")
    assert [i.message.replace(f"{tmp_path}/", "") for i in info.value.issues] == [
        "device 'B' has parity ODD but device 'A' (plant.yaml:6) has EVEN: devices on serial port "
        "/dev/ttyS1 share one bus and its settings"
    ]


def test_normalise_spells_values_as_validation_reads_them_and_keeps_the_rest() -> None:
    raw: dict[str, Any] = {
        "enterprises": [
            {
                "devices": [{"protocol": "opc-ua", "interval_s": "2", "security_mode": "sign"}],
                "hazard_sources": [
                    {"tags": [{"kind": "level", "range": [0, "45"], "limits": {"hh": "50"}, "colour": "red"}]}
                ],
                "population_500m": "many",
            }
        ]
    }
    data = normalise(raw)
    dev = data["enterprises"][0]["devices"][0]
    assert (dev["protocol"], dev["interval_s"], dev["security_mode"]) == ("OPCUA", 2.0, "SIGN")
    tag = data["enterprises"][0]["hazard_sources"][0]["tags"][0]
    assert (tag["kind"], tag["range"], tag["limits"], tag["colour"]) == (
        "LEVEL",
        (0.0, 45.0),
        {"hh": 50.0},
        "red",
    )
    assert data["enterprises"][0]["population_500m"] == "many"  # refused by validation, not here
    assert raw["enterprises"][0]["devices"][0]["protocol"] == "opc-ua"  # the input is not changed


# --- counters and totalisers ----------------------------------------------------------------


def test_a_counter_needs_no_range_and_gets_no_analog_defaults(tmp_path: Path) -> None:
    plant = _load(
        tmp_path,
        "- {protocol: MODBUS, id: MB1, host: 127.0.0.1}\n",
        """\
- code: P1_HOURS
  name: 进料泵运行小时
  equipment: V1
  kind: COUNTER
  unit: h
  source: {device: MB1, table: HOLDING, address: 0, type: UINT32}
  limits: {h: 8000}
- code: FQ1
  name: 进料累计流量
  equipment: V1
  kind: counter
  unit: m³
  range: [0, 999999]
  source: {device: MB1, table: HOLDING, address: 2, type: UINT32}
  limits: {h: 900000}
  rate: {max_per_min: 50}
""",
    )
    hours, total = plant.tag("E1.V1.P1_HOURS"), plant.tag("E1.V1.FQ1")
    assert hours.kind == total.kind == TagKind.COUNTER and hours.range is None
    for tag in (hours, total):
        assert tag.limits is not None
        assert (tag.limits.deadband, tag.limits.on_delay_s) == (0.0, 0.0)  # no ISA-18.2 FLOW defaults
    keys = set(compile_rules(plant).keys)
    assert "E1.V1.P1_HOURS:H" in keys and "E1.V1.P1_HOURS:OUT_OF_RANGE" not in keys
    assert {"E1.V1.FQ1:H", "E1.V1.FQ1:OUT_OF_RANGE", "E1.V1.FQ1:ROC"} <= keys
    assert {"h", "m³", "t", "kWh", ""} <= KIND_UNITS["COUNTER"]


def test_a_default_deadband_never_clears_a_limit_outside_the_range(tmp_path: Path) -> None:
    plant = _load(
        tmp_path,
        "- {protocol: MODBUS, id: MB1, host: 127.0.0.1}\n",
        """\
- {code: LT1, name: 低位罐液位, equipment: V1, kind: LEVEL, unit: m, range: [0, 45], limits: {h: 1},
   source: {device: MB1, table: HOLDING, address: 0, type: FLOAT32}}
- {code: LT2, name: 储罐液位, equipment: V1, kind: LEVEL, unit: m, range: [0, 45], limits: {h: 38},
   source: {device: MB1, table: HOLDING, address: 2, type: FLOAT32}}
""",
    )
    # 5 % of 45 m (2.25 m) would clear H = 1 m at -1.25 m: halved room instead; LT2 keeps the default
    assert plant.tag("E1.V1.LT1").limits.deadband == 0.5  # type: ignore[union-attr]
    assert plant.tag("E1.V1.LT2").limits.deadband == 2.25  # type: ignore[union-attr]
