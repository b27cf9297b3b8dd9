"""The plant model: Enterprise > HazardSource > Unit > Equipment, with Tags and Devices.

Pydantic models with ``extra="forbid"``: an unknown key is an error, not silently ignored.
Enum values are UPPER_CASE and accepted in any case. Every number is finite and bounded for
its meaning (``core.units``: values, durations, percentages). Everything is frozen after
loading; ``core.plant_checks`` adds the cross-reference rules (unique keys, known devices,
Modbus overlaps, GB/T 50493 limits) on the document as validation reads it, and
``core.plant_build`` resolves each tag's effective limits.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from enum import StrEnum
from functools import cache
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    TypeAdapter,
    ValidationError,
)
from pydantic import Tag as UnionTag
from pydantic.fields import FieldInfo

from core.redact import mask_phone
from core.settings import Settings
from core.units import (
    DAY_S,
    Delay,
    Interval,
    Magnitude,
    Percent,
    PositiveMagnitude,
    Timeout,
    Value,
    WatchTime,
    Window,
    bounded,
)

__all__ = [
    "AlarmRationale",
    "BaoBao",
    "ByteOrder",
    "DataQuality",
    "DataType",
    "Detector",
    "Deviation",
    "Device",
    "Enterprise",
    "Equipment",
    "FinalElement",
    "GasMethod",
    "GasSpec",
    "HazardKind",
    "HazardSource",
    "Interlock",
    "InterlockInput",
    "InterlockRationalization",
    "Limits",
    "ModbusDevice",
    "ModbusTable",
    "ModbusTransport",
    "OpcUaDevice",
    "Parity",
    "Person",
    "Plant",
    "RateOfChange",
    "ResponseTime",
    "Scale",
    "StateAlarm",
    "Substance",
    "SuppressWhen",
    "Tag",
    "TagKind",
    "TagRationalization",
    "TagSource",
    "Unit",
    "enum_name",
    "given_or_default",
    "normalise",
    "resolve_key",
    "updated",
]

CODE = r"^[A-Za-z0-9_-]+$"  # no dots: tag keys are ENTERPRISE.EQUIPMENT.TAG
PHONE = re.compile(r"^(\+?86)?1[3-9]\d{9}$|^0\d{2,3}-?\d{7,8}$")


def enum_name(v: Any) -> Any:
    """An enum value as written (``sign-and-encrypt``) in the model's spelling (``SIGN_AND_ENCRYPT``)."""
    return v.upper().replace("-", "_") if isinstance(v, str) else v


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


M = TypeVar("M", bound=_Model)


def updated(model: M, update: dict[str, Any]) -> M:
    """``model.model_copy(update=update)`` at a fraction of its cost (plant_build copies every
    tag and its limits): the same field values and fields set, ``update`` unvalidated as there.
    Leaner because every model here forbids extra keys and has no private attributes."""
    cls = type(model)
    copy = cls.__new__(cls)
    object.__setattr__(copy, "__dict__", {**model.__dict__, **update})
    object.__setattr__(copy, "__pydantic_fields_set__", model.__pydantic_fields_set__.union(update))
    object.__setattr__(copy, "__pydantic_extra__", None)
    object.__setattr__(copy, "__pydantic_private__", None)
    return copy


class HazardKind(StrEnum):
    PRODUCTION = "PRODUCTION"
    STORAGE = "STORAGE"


class TagKind(StrEnum):
    TEMPERATURE = "TEMPERATURE"
    PRESSURE = "PRESSURE"
    LEVEL = "LEVEL"
    FLOW = "FLOW"
    COMPOSITION = "COMPOSITION"
    GAS = "GAS"
    DISCRETE = "DISCRETE"
    # Run-hour counters, flow totalisers, energy meters: a value that only accumulates. No
    # ISA-18.2 default deadband or on-delay (alarm_defaults), no range required.
    COUNTER = "COUNTER"


class ModbusTable(StrEnum):
    HOLDING = "HOLDING"
    INPUT = "INPUT"
    COIL = "COIL"
    DISCRETE_INPUT = "DISCRETE_INPUT"


class DataType(StrEnum):
    INT16 = "INT16"
    UINT16 = "UINT16"
    INT32 = "INT32"
    UINT32 = "UINT32"
    FLOAT32 = "FLOAT32"
    FLOAT64 = "FLOAT64"
    BOOL = "BOOL"

    @property
    def registers(self) -> int:
        return {"INT32": 2, "UINT32": 2, "FLOAT32": 2, "FLOAT64": 4}.get(self.value, 1)


class ByteOrder(StrEnum):
    ABCD = "ABCD"  # big-endian words, big-endian bytes (Modbus standard)
    DCBA = "DCBA"
    BADC = "BADC"
    CDAB = "CDAB"  # word-swapped: common on Schneider/Siemens float32


class Detector(StrEnum):
    COMBUSTIBLE = "COMBUSTIBLE"
    TOXIC = "TOXIC"
    OXYGEN = "OXYGEN"


class GasMethod(StrEnum):
    POINT = "POINT"
    OPEN_PATH = "OPEN_PATH"


class SecurityPolicy(StrEnum):
    NONE = "NONE"
    BASIC256SHA256 = "BASIC256SHA256"


class SecurityMode(StrEnum):
    NONE = "NONE"
    SIGN = "SIGN"
    SIGN_AND_ENCRYPT = "SIGN_AND_ENCRYPT"


class TimestampSource(StrEnum):
    SOURCE = "SOURCE"
    SERVER = "SERVER"
    GATHER = "GATHER"


class OpcUaMode(StrEnum):
    SUBSCRIPTION = "SUBSCRIPTION"
    POLLING = "POLLING"


class ModbusTransport(StrEnum):
    TCP = "TCP"
    RTU = "RTU"  # binary framing over a serial line (RS-485/RS-232)


class Parity(StrEnum):
    EVEN = "EVEN"  # Modbus over Serial Line v1.02 §2.5.1: the required default
    ODD = "ODD"
    NONE = "NONE"  # the spec then asks for 2 stop bits; many devices use 8N1 anyway

    @property
    def letter(self) -> str:
        return self.value[0]


def _parity(v: Any) -> Any:
    """Serial parity as the device manual writes it: EVEN/ODD/NONE, or the E/O/N of "8E1"."""
    short = {"E": "EVEN", "O": "ODD", "N": "NONE"}
    return short.get(v.upper(), v.upper()) if isinstance(v, str) else v


def protocol_name(v: Any) -> Any:
    return v.upper().replace("_", "").replace("-", "").replace(" ", "") if isinstance(v, str) else v


def _enum(e: type[StrEnum]) -> Any:
    return Annotated[e, BeforeValidator(enum_name)]


Code = Annotated[str, Field(pattern=CODE, min_length=1, max_length=64)]
Range = tuple[Value, Value]  # plant_checks: low < high


# --- people and substances --------------------------------------------------------


def _phone(v: str) -> str:
    if not PHONE.match(v.replace(" ", "")):
        raise ValueError(f"{v!r} is not a mainland mobile (1xxxxxxxxxx) or landline (0xxx-xxxxxxx) number")
    return v


Phone = Annotated[str, AfterValidator(_phone)]


class Person(_Model):
    name: str = Field(min_length=1)
    phone: Phone

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # personal data: a logged model (a hazard source, its 包保 trio) shows no full number
        yield "name", self.name
        yield "phone", mask_phone(self.phone)


class BaoBao(_Model):
    """包保责任人: the three people answerable for one hazard source."""

    principal: Person  # 主要负责人
    technical: Person  # 技术负责人
    operational: Person  # 操作负责人


class Substance(_Model):
    name: str
    cas: str | None = None
    # tonnes: design-maximum quantity q and GB 18218 critical quantity Q (10 Mt is no single site)
    design_t: Annotated[float, bounded(0, 1e7, " t", above=True)]
    critical_t: Annotated[float, bounded(0, 1e7, " t", above=True)] | None = None
    # GB 18218 correction factor: 1 to 4 in the standard's tables
    beta: Annotated[float, bounded(0, 10, above=True)] | None = None


# --- structure -------------------------------------------------------------------


class Equipment(_Model):
    code: Code
    name: str
    kind: str | None = None


class SuppressWhen(_Model):
    """ISA-18.2 suppression by design: while the unit's ``tag`` is ``below``, ``above`` or
    ``equals`` (exactly one; plant_checks) its process alarms are suppressed (alarms.model
    ``SUPPRESSIBLE_KINDS``; gas, data-quality, interlock and SIF-disabled alarms never are)."""

    tag: str = Field(min_length=1)  # CODE within the hazard source, EQUIPMENT.CODE or the full key
    below: Value | None = None
    above: Value | None = None
    equals: Value | None = None
    on_delay_s: Delay = 0.0  # the condition held this long before the unit counts as shut down
    off_delay_s: Delay = 0.0  # and not held this long before it counts as running again
    reason: str = Field(default="装置停车/unit shut down", min_length=1)


class Unit(_Model):
    code: Code
    name: str
    equipment: list[Equipment] = []
    suppress_when: SuppressWhen | None = None


# --- devices --------------------------------------------------------------------


def _endpoint(v: str) -> str:
    """``opc.tcp://host:port[/path]``: a port asyncua cannot cast fails every connect, for ever."""
    usage = "write opc.tcp://host:port/path"
    if any(c.isspace() for c in v):
        raise ValueError(f"endpoint {v!r} contains white space: {usage}")
    scheme, sep, rest = v.partition("://")
    if not sep or scheme.lower() != "opc.tcp":
        raise ValueError(f"endpoint {v!r} is not an OPC UA TCP address: {usage}")
    netloc = rest.split("/", 1)[0].rpartition("@")[2]
    port: str | None
    if netloc.startswith("["):  # IPv6 literal: opc.tcp://[::1]:4840
        host, _, after = netloc[1:].partition("]")
        port = after[1:] if after.startswith(":") else None
    else:
        host, colon, port = netloc.rpartition(":")
        if not colon:
            host, port = netloc, None
    if not host:
        raise ValueError(f"endpoint {v!r} names no host: {usage}")
    if not port:
        raise ValueError(f"endpoint {v!r} names no port: {usage} (OPC UA servers usually listen on 4840)")
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"endpoint {v!r} has port {port!r}: a port is a number from 1 to 65535")
    return v


class OpcUaHeartbeat(_Model):
    """A node that must change within ``max_age_s``: a PLC counter or clock, or ``i=2258``
    (the server's own ServerStatus.CurrentTime) when the server is the PLC itself."""

    node: str = Field(pattern=r"^[isgb]=.+")
    namespace_uri: str | None = None  # default: the device's; none for i= nodes in namespace 0
    max_age_s: float = Field(default=10.0, ge=0.1, le=3600, allow_inf_nan=False)


class ModbusHeartbeat(_Model):
    """A register or bit that must change within ``max_age_s`` (a PLC counter or clock)."""

    table: _enum(ModbusTable)  # type: ignore[valid-type]
    address: int = Field(ge=0, le=65535)
    type: _enum(DataType) | None = None  # type: ignore[valid-type]  # default: BOOL for bits, else UINT16
    unit_id: int | None = Field(default=None, ge=0, le=255)  # default: the device's
    byte_order: _enum(ByteOrder) | None = None  # type: ignore[valid-type]
    max_age_s: float = Field(default=10.0, ge=0.1, le=3600, allow_inf_nan=False)

    @property
    def data_type(self) -> DataType:
        return heartbeat_type(self.table, self.type)


def heartbeat_type(table: Any, dtype: Any) -> DataType:
    """A heartbeat's type as given, else BOOL on bit tables and UINT16 on register tables
    (plant_checks checks the point with the same default)."""
    if dtype is not None:
        return DataType(dtype)
    return DataType.BOOL if table in (ModbusTable.COIL, ModbusTable.DISCRETE_INPUT) else DataType.UINT16


class OpcUaDevice(_Model):
    protocol: Annotated[Literal["OPCUA"], BeforeValidator(protocol_name)]
    id: Code
    endpoint: Annotated[str, AfterValidator(_endpoint)]
    namespace_uri: str | None = None
    mode: _enum(OpcUaMode) = OpcUaMode.SUBSCRIPTION  # type: ignore[valid-type]
    interval_s: Interval = 1.0
    queue_size: int = Field(default=10, ge=1, le=1000)
    security_policy: _enum(SecurityPolicy) = SecurityPolicy.NONE  # type: ignore[valid-type]
    security_mode: _enum(SecurityMode) = SecurityMode.NONE  # type: ignore[valid-type]
    # Trust list of one: the server certificate (DER or PEM) we accept when signing/encrypting.
    server_certificate: str | None = None
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    timestamp_source: _enum(TimestampSource) = TimestampSource.SOURCE  # type: ignore[valid-type]
    timeout_s: Timeout = 5.0
    # Subscription declared dead after this many publishing intervals without any message.
    publish_watchdog_intervals: float = Field(default=2.0, ge=1.5, le=60, allow_inf_nan=False)
    heartbeat: OpcUaHeartbeat | None = None
    max_silence_s: float | None = Field(default=None, ge=1, le=86400, allow_inf_nan=False)


class ModbusDevice(_Model):
    """A Modbus TCP device, or one unit on an RTU serial bus (plant_checks: which keys fit which)."""

    protocol: Annotated[Literal["MODBUS"], BeforeValidator(protocol_name)]
    id: Code
    transport: _enum(ModbusTransport) = ModbusTransport.TCP  # type: ignore[valid-type]
    # TCP
    host: str | None = None
    port: int = Field(default=502, ge=1, le=65535)
    # RTU: devices on one serial_port share one bus, so they must agree on these settings.
    serial_port: str | None = Field(default=None, min_length=1)
    baudrate: int = Field(default=9600, ge=300, le=1_000_000)
    parity: Annotated[Parity, BeforeValidator(_parity)] = Parity.EVEN
    stopbits: Literal[1, 2] = 1
    bytesize: int = Field(default=8, ge=5, le=8)  # plant_checks: RTU needs 8
    pause_s: Annotated[float, bounded(0, 10, " s")] = 0.05  # bus silence before each request
    unit_id: int = Field(default=1, ge=0, le=255)
    poll_interval_s: Interval = 1.0
    timeout_s: Timeout = 1.0
    retries: int = Field(default=1, ge=0, le=10)
    byte_order: _enum(ByteOrder) = ByteOrder.ABCD  # type: ignore[valid-type]
    max_registers: int = Field(default=125, ge=1, le=125)
    max_bits: int = Field(default=2000, ge=1, le=2000)
    gap_tolerance: int = Field(default=8, ge=0, le=100)
    heartbeat: ModbusHeartbeat | None = None
    max_silence_s: float | None = Field(default=None, ge=1, le=86400, allow_inf_nan=False)


def _protocol(v: Any) -> str | None:
    raw = v.get("protocol") if isinstance(v, dict) else getattr(v, "protocol", None)
    name = protocol_name(raw)
    return name if isinstance(name, str) else None


Device = Annotated[
    Annotated[OpcUaDevice, UnionTag("OPCUA")] | Annotated[ModbusDevice, UnionTag("MODBUS")],
    Discriminator(
        _protocol,
        custom_error_type="protocol",
        custom_error_message="protocol must be OPCUA or MODBUS",
    ),
]


# --- tags -----------------------------------------------------------------------


class Scale(_Model):
    """Linear map from raw device counts to engineering units (eng defaults to the tag range)."""

    raw: Range
    eng: Range | None = None


class TagSource(_Model):
    device: Code
    # OPC UA: node identifier without namespace index ("s=LT01", "i=1001") + namespace URI
    node: str | None = None
    namespace_uri: str | None = None
    # Modbus
    table: _enum(ModbusTable) | None = None  # type: ignore[valid-type]
    address: int | None = Field(default=None, ge=0, le=65535)
    type: _enum(DataType) | None = None  # type: ignore[valid-type]
    byte_order: _enum(ByteOrder) | None = None  # type: ignore[valid-type]
    unit_id: int | None = Field(default=None, ge=0, le=255)
    scale: Scale | None = None


class Limits(_Model):
    """Alarm limits in the tag's unit. Deadband is absolute, or ``deadband_pct`` of range."""

    ll: Value | None = None
    l: Value | None = None  # noqa: E741 — the plant's own name for the low limit
    h: Value | None = None
    hh: Value | None = None
    deadband: Magnitude | None = None  # plant_checks: below the range span
    deadband_pct: Percent | None = None
    on_delay_s: Delay | None = None
    off_delay_s: Delay | None = None
    latched: bool = False


class DataQuality(_Model):
    """Data-quality checks of one tag (the bureau tracks offline, out-of-range and frozen points)."""

    # None: by source (polled tags 10 polls, at least 60 s; OPC UA subscriptions report only
    # changes, so off); 0: off.
    stale_s: WatchTime | None = None
    frozen_s: WatchTime | None = None  # None or 0: off
    frozen_band_pct: Percent = 2.0  # of range, around each alarm limit
    range_margin_pct: Percent = 1.25  # NAMUR NE 43: 3.8 mA is -1.25 %


class RateOfChange(_Model):
    """Rate-of-change alarm: the value moved faster than ``max_per_min`` over ``window_s``."""

    max_per_min: PositiveMagnitude
    window_s: Window = 60.0
    # Clears once the windowed rate is below max_per_min − deadband (tag unit per minute).
    deadband: Magnitude = 0.0
    on_delay_s: Delay = 0.0


class Deviation(_Model):
    """Deviation alarm between this tag and a redundant transmitter of the same quantity."""

    tag: str  # key, or EQUIPMENT.CODE within the enterprise
    max: PositiveMagnitude  # absolute, in the tag's unit; plant_checks: at most the range span
    on_delay_s: Delay = 10.0


class StateAlarm(_Model):
    """Discrete tags: alarm in a state, and/or when the feedback disagrees with its command."""

    alarm_value: Value | None = None  # e.g. 1 for a high-level switch
    on_delay_s: Delay = 0.0
    command: str | None = None  # command tag: pump run command, valve open command
    tolerance: Magnitude = 0.5
    # time the feedback may take to follow
    travel_s: Annotated[float, bounded(0, DAY_S, " s", above=True)] = 10.0


class GasLevel(_Model):
    value: Value
    unit: str


class GasSpec(_Model):
    """A gas detector: GB/T 50493 two-level alarm, from a preset, explicit levels or defaults."""

    gas: str
    detector: _enum(Detector)  # type: ignore[valid-type]
    method: _enum(GasMethod) = GasMethod.POINT  # type: ignore[valid-type]
    preset: str | None = None
    level1: Value | None = None
    level2: Value | None = None


# --- alarm rationalization (ISA-18.2 §10, EEMUA 191) ------------------------------------

# the time an operator has to respond to an alarm: above 0, at most a day
ResponseTime = Annotated[float, bounded(0, DAY_S, " s", above=True)]


class AlarmRationale(_Model):
    """What an alarm means and what to do, as the master alarm table records it; a key not
    given is the rationalization defaults' for the alarm's kind and gas (alarms/rationale.py)."""

    cause: str | None = Field(default=None, min_length=1)
    consequence: str | None = Field(default=None, min_length=1)
    action: str | None = Field(default=None, min_length=1)  # 处置措施
    response_s: ResponseTime | None = None


class TagRationalization(_Model):
    """A tag's alarms by the name of the setting that makes them (plant_checks: only alarms the
    tag has); GAS tags name their levels, every tag its data-quality alarms."""

    ll: AlarmRationale | None = None
    l: AlarmRationale | None = None  # noqa: E741 — the plant's own name for the low limit
    h: AlarmRationale | None = None
    hh: AlarmRationale | None = None
    level1: AlarmRationale | None = None  # gas level 1 (oxygen: the low alarm)
    level2: AlarmRationale | None = None  # gas level 2 (oxygen: the high alarm)
    rate: AlarmRationale | None = None
    deviation: AlarmRationale | None = None
    state: AlarmRationale | None = None  # state.alarm_value
    mismatch: AlarmRationale | None = None  # state.command
    bad_quality: AlarmRationale | None = None
    stale: AlarmRationale | None = None
    out_of_range: AlarmRationale | None = None
    frozen: AlarmRationale | None = None
    clock_ahead: AlarmRationale | None = None


class InterlockRationalization(_Model):
    """An interlock's alarms (every interlock has all of them)."""

    trip_demand: AlarmRationale | None = None
    no_action: AlarmRationale | None = None
    input_bypassed: AlarmRationale | None = None
    bypass_overdue: AlarmRationale | None = None
    out_of_service: AlarmRationale | None = None
    sif_disabled: AlarmRationale | None = None


class Tag(_Model):
    code: Code
    name: str = Field(min_length=1)
    equipment: Code
    kind: _enum(TagKind)  # type: ignore[valid-type]
    unit: str = ""
    range: Range | None = None
    resolution: PositiveMagnitude | None = None  # plant_checks: below the range span
    source: TagSource
    limits: Limits | None = None
    gas: GasSpec | None = None
    data_quality: DataQuality | None = None
    rate: RateOfChange | None = None
    deviation: Deviation | None = None
    state: StateAlarm | None = None
    in_service: bool = True
    description: str | None = None
    rationalization: TagRationalization | None = None
    # Filled in by plant_build: ENTERPRISE.EQUIPMENT.CODE
    key: str = ""


# --- interlocks (SIS) -------------------------------------------------------------


class InterlockInput(_Model):
    tag: str  # key, or EQUIPMENT.CODE within the enterprise
    op: Literal[">", ">=", "<", "<=", "==", "!="]
    value: Value  # plant_checks: inside the input tag's range
    bypass: str | None = None  # bypass switch tag (1 = bypassed)


class FinalElement(_Model):
    tag: str  # position feedback tag
    safe_value: Value  # e.g. 0 = closed
    tolerance: Magnitude = 0.5


class Interlock(_Model):
    code: Code
    name: str
    voting: str = Field(pattern=r"^\d+oo\d+$")
    inputs: list[InterlockInput] = Field(min_length=1)
    final_element: FinalElement
    # a final element that needs more than an hour is no safety function's final element
    response_s: Annotated[float, bounded(0, 3600, " s", above=True)] = 10.0
    max_bypass_h: Annotated[float, bounded(0, 720, " h", above=True)] = 8.0  # 30 days at most
    in_service: bool = True
    rationalization: InterlockRationalization | None = None


class HazardSource(_Model):
    code: Code
    name: str
    kind: _enum(HazardKind)  # type: ignore[valid-type]
    grade: int = Field(ge=1, le=4)
    substances: list[Substance] = []
    baobao: BaoBao | None = None
    units: list[Unit] = []
    tags: list[Tag] = []
    interlocks: list[Interlock] = []


class Enterprise(_Model):
    code: Code
    name: str
    county: str  # 属地县(市、区): which county bureau supervises it
    city: str = ""
    industry: str = ""
    credit_code: str | None = Field(default=None, pattern=r"^[0-9A-HJ-NPQRTUWXY]{18}$")
    population_500m: int | None = Field(default=None, ge=0, le=100_000_000)
    duty_phone: Phone | None = None
    devices: list[Device] = []
    hazard_sources: list[HazardSource] = []

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, mask_phone(value) if name == "duty_phone" and value else value


class Plant(_Model):
    name: str = "HazardWatch"
    reference: str | None = None  # folder with gases.yaml / gb18218.yaml, relative to the file
    settings: Settings = Settings()
    enterprises: list[Enterprise] = Field(min_length=1)

    # --- navigation (no state: derived on demand) ---------------------------------

    def tags(self) -> list[Tag]:
        return [t for e in self.enterprises for h in e.hazard_sources for t in h.tags]

    def devices(self) -> list[OpcUaDevice | ModbusDevice]:
        return [d for e in self.enterprises for d in e.devices]

    def tag(self, key: str) -> Tag:
        for t in self.tags():
            if t.key == key:
                return t
        raise KeyError(key)


def resolve_key(enterprise: str, ref: str) -> str:
    """A tag reference is a full key, or EQUIPMENT.CODE within the referring enterprise."""
    return ref if ref.count(".") >= 2 else f"{enterprise}.{ref}"


# --- normal form ------------------------------------------------------------------


def given_or_default(block: dict[str, Any], model: type[BaseModel], key: str) -> Any:
    """``block[key]`` as written, or the model's default for it: each default lives here only."""
    return block[key] if key in block else _defaults(model)[key]


@cache
def _defaults(model: type[BaseModel]) -> dict[str, Any]:
    return {name: info.default for name, info in _field_infos(model).items()}


@cache
def _field_infos(model: type[BaseModel]) -> dict[str, FieldInfo]:
    # model_fields is a property that builds its answer on every access: once per model, not per tag
    return dict(model.model_fields)


def normalise(data: Any, model: type[BaseModel] = Plant) -> Any:
    """The raw document as the model reads it, for the cross-checks (``core.plant_checks``) of a
    document that does not validate (one that does is checked as its validated model dumps it).

    Each known key's value is validated on its own by the field's own type (``opc-ua`` ->
    ``OPCUA``, ``e`` -> ``EVEN``, ``"502"`` from ``${PORT}`` -> 502, ``[0, "100"]`` -> (0.0, 100.0));
    a value its field refuses is kept as written, for validation to report. Keys, lists and
    nesting are unchanged, so every document path still finds its file:line.
    """
    if not isinstance(data, dict):
        return data
    return {k: _normal_field(model, k, v) for k, v in data.items()}


def _normal_field(model: type[BaseModel], key: str, v: Any) -> Any:
    info = _field_infos(model).get(key)
    if info is None:
        return v  # an unknown key: validation reports it
    if not _field_holds_model(model, key):
        try:
            return _field_adapter(model, key).validate_python(v)
        except ValidationError:
            return v
    return _normal(info.annotation, _before(info.metadata, v))


def _normal(tp: Any, v: Any) -> Any:
    """Walk a model-holding type: models field by field, lists item by item, unions by their tag."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        inner, *meta = args
        v = _before(meta, v)
        tag = next((m.discriminator for m in meta if isinstance(m, Discriminator)), None)
        if callable(tag):
            chosen = tag(v)
            for member in get_args(inner):
                if any(isinstance(m, UnionTag) and m.tag == chosen for m in get_args(member)[1:]):
                    return _normal(member, v)
            return v
        return _normal(inner, v)
    if origin in (Union, UnionType):
        members = [a for a in args if a is not type(None)]
        return v if v is None or len(members) != 1 else _normal(members[0], v)
    if origin is list:
        return [_normal(args[0], x) for x in v] if isinstance(v, list) else v
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return normalise(v, tp)
    return v


def _before(meta: Any, v: Any) -> Any:
    for m in meta:
        if isinstance(m, BeforeValidator):
            try:
                v = m.func(v)  # type: ignore[call-arg]
            except (TypeError, ValueError):
                return v  # validation reports it
    return v


@cache
def _field_holds_model(model: type[BaseModel], key: str) -> bool:
    return _holds_model(model.model_fields[key].annotation)


def _holds_model(tp: Any) -> bool:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return True
    return any(_holds_model(a) for a in get_args(tp))


@cache
def _field_adapter(model: type[BaseModel], key: str) -> TypeAdapter[Any]:
    info = model.model_fields[key]
    tp: Any = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    return TypeAdapter(tp)
