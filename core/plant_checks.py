"""Cross-reference rules of a plant config: what no single key's validation can see.

Unique codes and keys, known equipment and devices, Modbus points that fit their table and
do not overlap, devices sharing a serial bus that agree on it, limits inside the instrument
range and in order, deadbands that let an alarm clear, GB/T 50493 gas levels, interlock
voting and references. ``check_plant`` runs them all and returns every finding at its
file:line.

The rules read the document as validation reads it: the validated model's own dump when
the document validates, else ``core.plant.normalise``'s form of it, so that a structural
error in one tag never hides a cross-reference error in another. Either way every value is
spelled and typed as the model holds it and every default is the model's.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.alarm_defaults import LOW_LIMITS
from core.errors import ConfigIssue
from core.gas_levels import GasReference, resolve_gas
from core.plant import (
    DataType,
    ModbusDevice,
    OpcUaDevice,
    RateOfChange,
    Tag,
    TagSource,
    given_or_default,
    heartbeat_type,
    resolve_key,
)
from core.units import KIND_UNITS, finite, finite_pair
from core.yaml_loader import PathKey, SourceMap

__all__ = ["PlantChecker", "check_plant"]

_BIT_TABLES = {"COIL", "DISCRETE_INPUT"}
# Keys that belong to one Modbus transport only; the settings every device on a bus must share.
_TCP_KEYS = ("host", "port")
_RTU_KEYS = ("serial_port", "baudrate", "parity", "stopbits", "bytesize", "pause_s")
_BUS_KEYS = ("baudrate", "parity", "stopbits", "bytesize", "pause_s")
_NODE_PREFIXES = ("i=", "s=", "g=", "b=")
# Integer registers hold only these raw counts (floats: any); a scale beyond them is unreachable.
_RAW_SPAN = {
    "INT16": (-(2**15), 2**15 - 1),
    "UINT16": (0, 2**16 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "UINT32": (0, 2**32 - 1),
}
_NO_RANGE_KINDS = ("DISCRETE", "COUNTER")  # a switch or a counter has no instrument range


class PlantChecker:
    """The cross-reference rules over one plant document; ``issues`` collects every finding."""

    def __init__(self, data: dict[str, Any], source: SourceMap, ref: GasReference) -> None:
        self.data = data
        self.source = source
        self.ref = ref
        self.issues: list[ConfigIssue] = []
        self.keys: dict[str, PathKey] = {}
        self.tag_kind: dict[str, str] = {}
        # (device, unit id, table) -> [(start, end, key, path)]
        self.registers: dict[tuple[str, int, str], list[tuple[int, int, str, PathKey]]] = defaultdict(list)
        self.tag_unit: dict[str, str] = {}
        self.tag_range: dict[str, tuple[float, float]] = {}
        # rule references (deviation partner, state command) checked once every key is known
        self.rule_refs: list[tuple[str, str, Any, PathKey]] = []
        # RTU buses: serial port -> [(device, path)], and the unit ids tags address on them
        self.buses: dict[str, list[tuple[dict[str, Any], PathKey]]] = defaultdict(list)
        self.bus_units: list[tuple[str, int, str, PathKey]] = []  # (port, unit, device, tag path)

    def err(self, path: PathKey, message: str) -> None:
        self.issues.append(self.source.issue(path, message))

    def run(self) -> None:
        ent_codes: dict[str, PathKey] = {}
        hs_codes: dict[str, PathKey] = {}
        device_ids: dict[str, PathKey] = {}
        equipment_codes: dict[tuple[str, str], PathKey] = {}
        interlocks: list[tuple[str, PathKey, dict[str, Any]]] = []
        for i, ent in _items(self.data.get("enterprises")):
            at: PathKey = ("enterprises", i)
            code = ent.get("code")
            self._unique(ent_codes, code, (*at, "code"), "enterprise code")
            devices: dict[str, dict[str, Any]] = {}
            for d, dev in _items(ent.get("devices")):
                self._unique(device_ids, dev.get("id"), (*at, "devices", d, "id"), "device id")
                self._security(dev, (*at, "devices", d))
                self._transport(dev, (*at, "devices", d))
                if isinstance(dev.get("id"), str):
                    devices[dev["id"]] = dev
            for h, hs in _items(ent.get("hazard_sources")):
                hat: PathKey = (*at, "hazard_sources", h)
                self._unique(hs_codes, hs.get("code"), (*hat, "code"), "hazard source code")
                equipment = set()
                for u, unit in _items(hs.get("units")):
                    for k, e in _items(unit.get("equipment")):
                        equipment.add(e.get("code"))
                        where = (*hat, "units", u, "equipment", k, "code")
                        if isinstance(e.get("code"), str):
                            first = equipment_codes.setdefault((str(code), e["code"]), where)
                            if first != where:
                                self.err(
                                    where,
                                    f"duplicate equipment code {e['code']!r} (first at {self._where(first)})",
                                )
                for t, tag in _items(hs.get("tags")):
                    self._tag(str(code), tag, (*hat, "tags", t), equipment, devices)
                interlocks += [
                    (str(code), (*hat, "interlocks", k), il) for k, il in _items(hs.get("interlocks"))
                ]
        self._overlaps()
        self._buses()
        for ent_code, at, il in interlocks:
            self._interlock(ent_code, il, at)
        for ent_code, key, ref, at in self.rule_refs:
            self._rule_ref(ent_code, key, ref, at)

    def _security(self, dev: dict[str, Any], at: PathKey) -> None:
        if dev.get("protocol") != "OPCUA":
            return
        policy = given_or_default(dev, OpcUaDevice, "security_policy")
        mode = given_or_default(dev, OpcUaDevice, "security_mode")
        if (policy == "NONE") != (mode == "NONE"):
            self.err(
                (*at, "security_mode"),
                f"security_policy {policy} and security_mode {mode} do not go together "
                "(both NONE, or a policy with SIGN / SIGN_AND_ENCRYPT)",
            )
        elif policy != "NONE" and not dev.get("server_certificate"):
            self.err(at, "a secured endpoint needs server_certificate: the server certificate to trust")
        cert = dev.get("server_certificate")
        if isinstance(cert, str) and cert:
            problem = _certificate_problem(Path(cert))
            if problem:
                self.err((*at, "server_certificate"), f"{cert}: {problem}")

    def _transport(self, dev: dict[str, Any], at: PathKey) -> None:
        """Modbus TCP needs host; RTU needs serial_port, 8 data bits and no TCP keys."""
        if dev.get("protocol") != "MODBUS":
            return
        hb = dev.get("heartbeat")
        if isinstance(hb, dict):  # the same rules as a tag's point
            given = hb.get("type")
            dtype = given if given is not None else heartbeat_type(hb.get("table"), None).value
            self._point(hb.get("table"), dtype, hb.get("address"), hb.get("byte_order"), (*at, "heartbeat"))
        transport = given_or_default(dev, ModbusDevice, "transport")
        dev_id = dev.get("id")
        if transport == "TCP":
            if dev.get("host") is None:
                self.err(at, "a Modbus TCP device needs host: (or transport: RTU with serial_port:)")
            for k in _RTU_KEYS:
                if k in dev:
                    self.err((*at, k), f"{k} is a serial (RTU) setting but device {dev_id!r} uses TCP")
        elif transport == "RTU":
            for k in _TCP_KEYS:
                if k in dev:
                    self.err((*at, k), f"{k} is a TCP setting but device {dev_id!r} uses RTU (serial_port:)")
            port = dev.get("serial_port")
            if port is None:
                self.err(at, "a Modbus RTU device needs serial_port: (e.g. /dev/ttyS1)")
            elif isinstance(port, str) and port:
                self.buses[port].append((dev, at))
            if given_or_default(dev, ModbusDevice, "bytesize") != 8:
                self.err(
                    (*at, "bytesize"),
                    "RTU frames are 8-bit binary: bytesize must be 8 (7 bits is Modbus ASCII)",
                )
            if given_or_default(dev, ModbusDevice, "unit_id") == 0:
                self.err(
                    (*at, "unit_id"),
                    "unit_id 0 is the RTU broadcast address: no device answers a read (use 1..247)",
                )

    def _buses(self) -> None:
        """Devices on one serial port share the bus: same line settings, one device per unit id."""
        owner: dict[tuple[str, int], tuple[str, PathKey]] = {}
        for port, members in self.buses.items():
            (first, first_at), rest = members[0], members[1:]
            for dev, at in rest:
                for k in _BUS_KEYS:
                    mine, theirs = (
                        given_or_default(dev, ModbusDevice, k),
                        given_or_default(first, ModbusDevice, k),
                    )
                    if mine != theirs:
                        self.err(
                            (*at, k) if k in dev else at,
                            f"device {dev.get('id')!r} has {k} {mine} but device {first.get('id')!r} "
                            f"({self._where(first_at)}) has {theirs}: devices on serial port {port} "
                            "share one bus and its settings",
                        )
            for dev, at in members:
                unit = given_or_default(dev, ModbusDevice, "unit_id")
                if not isinstance(unit, int) or isinstance(unit, bool):
                    continue
                seen = owner.setdefault((port, unit), (str(dev.get("id")), at))
                if seen[1] != at:
                    self.err(
                        (*at, "unit_id") if "unit_id" in dev else at,
                        f"devices {seen[0]!r} ({self._where(seen[1])}) and {dev.get('id')!r} both use "
                        f"unit_id {unit} on serial port {port}: each unit on a bus is one device",
                    )
        for port, unit, dev_id, at in self.bus_units:
            seen = owner.setdefault((port, unit), (dev_id, at))
            if seen[0] != dev_id:
                self.err(
                    (*at, "unit_id"),
                    f"unit {unit} on serial port {port} is device {seen[0]!r}, not {dev_id!r}: "
                    "bind the tag to that device",
                )

    def _unique(self, seen: dict[str, PathKey], value: Any, at: PathKey, what: str) -> None:
        if not isinstance(value, str):
            return
        if value in seen:
            self.err(at, f"duplicate {what} {value!r} (first at {self._where(seen[value])})")
        else:
            seen[value] = at

    def _where(self, at: PathKey) -> str:
        file, line = self.source.where(at)
        return f"{file}:{line}"

    # --- tags ----------------------------------------------------------------------

    def _tag(
        self,
        ent: str,
        tag: dict[str, Any],
        at: PathKey,
        equipment: set[Any],
        devices: dict[str, dict[str, Any]],
    ) -> None:
        eq, code, kind = tag.get("equipment"), tag.get("code"), tag.get("kind")
        if isinstance(eq, str) and eq not in equipment:
            known = ", ".join(sorted(str(e) for e in equipment)) or "none"
            self.err(
                (*at, "equipment"), f"unknown equipment {eq!r} (this hazard source's units have: {known})"
            )
        key = f"{ent}.{eq}.{code}"
        if isinstance(eq, str) and isinstance(code, str):
            self._unique(self.keys, key, (*at, "code"), "tag key")
            if isinstance(kind, str):
                self.tag_kind[key] = kind
            if isinstance(given_or_default(tag, Tag, "unit"), str):
                self.tag_unit[key] = given_or_default(tag, Tag, "unit")
        unit = given_or_default(tag, Tag, "unit")
        if (
            isinstance(kind, str)
            and kind in KIND_UNITS
            and isinstance(unit, str)
            and unit not in KIND_UNITS[kind]
        ):
            allowed = ", ".join(repr(u) for u in sorted(KIND_UNITS[kind]))
            self.err((*at, "unit"), f"unit mismatch: {unit!r} is not a {kind} unit (use one of {allowed})")
        rng = finite_pair(tag.get("range"))
        if tag.get("range") is not None and rng is not None and rng[0] >= rng[1]:
            self.err((*at, "range"), f"range low {rng[0]:g} must be below high {rng[1]:g}")
            rng = None
        if isinstance(eq, str) and isinstance(code, str) and rng is not None:
            self.tag_range[key] = rng
        if kind not in (None, *_NO_RANGE_KINDS) and tag.get("range") is None:
            self.err((*at, "range"), f"a {kind} tag needs its instrument range [low, high]")
        self._within_span(tag, ("resolution",), at, rng, "FROZEN would take every reading for unchanged")
        source = tag.get("source")
        if isinstance(source, dict):
            self._source(key, source, (*at, "source"), devices, rng)
        limits = tag.get("limits")
        if isinstance(limits, dict):
            self._limits(limits, (*at, "limits"), rng)
            if limits.get("deadband_pct") is not None and tag.get("range") is None:
                self.err(
                    (*at, "limits", "deadband_pct"),
                    "deadband_pct is a share of the range and this tag has none: give deadband",
                )
        gas = tag.get("gas")
        if kind == "GAS" and not isinstance(gas, dict):
            self.err(at, "a GAS tag needs a gas: block (gas, detector; preset or level1/level2)")
        if gas is not None and kind not in ("GAS", None):
            self.err((*at, "gas"), f"gas: belongs to GAS tags, this one is {kind}")
        if kind == "GAS" and isinstance(gas, dict):
            if limits is not None:
                self.err(
                    (*at, "limits"),
                    "gas detector levels come from gas: (preset or level1/level2), not limits:",
                )
            self._gas(gas, (*at, "gas"), unit if isinstance(unit, str) else "", rng)
        self._rule_settings(ent, key, kind, tag, at)

    def _source(
        self,
        key: str,
        src: dict[str, Any],
        at: PathKey,
        devices: dict[str, dict[str, Any]],
        rng: tuple[float, float] | None,
    ) -> None:
        dev_id = src.get("device")
        dev = devices.get(dev_id) if isinstance(dev_id, str) else None
        if isinstance(dev_id, str) and dev is None:
            known = ", ".join(sorted(devices)) or "none"
            self.err((*at, "device"), f"unknown device {dev_id!r} (this enterprise has: {known})")
            return
        if dev is None:
            return
        protocol = dev.get("protocol")
        opcua_keys = {"node", "namespace_uri"}
        modbus_keys = {"table", "address", "type", "byte_order", "unit_id", "scale"}
        present = set(src)
        if protocol == "OPCUA":
            for k in sorted(present & modbus_keys):
                self.err((*at, k), f"{k} is a Modbus setting but device {dev_id!r} is OPC UA")
            node = src.get("node")
            if node is None:
                self.err(at, f"device {dev_id!r} is OPC UA: give the node (e.g. node: s=LT01)")
            elif isinstance(node, str):
                if node.startswith("ns="):
                    self.err(
                        (*at, "node"),
                        "give node without ns=..; and set namespace_uri: namespace "
                        "indexes change when a server restarts",
                    )
                elif not node.startswith(_NODE_PREFIXES):
                    self.err((*at, "node"), f"node {node!r} must start with i=, s=, g= or b=")
                elif not node.startswith("i=") and not (src.get("namespace_uri") or dev.get("namespace_uri")):
                    self.err(
                        (*at, "node"),
                        f"node {node!r} needs a namespace_uri (on the tag or device {dev_id!r})",
                    )
        elif protocol == "MODBUS":
            for k in sorted(present & opcua_keys):
                self.err((*at, k), f"{k} is an OPC UA setting but device {dev_id!r} is Modbus")
            self._modbus(key, src, at, dev, rng)

    def _point(self, table: Any, dtype: Any, address: Any, byte_order: Any, at: PathKey) -> bool:
        """One Modbus value (a tag's or a heartbeat's): type fits table, byte order fits type, in range."""
        if not (isinstance(address, int) and isinstance(table, str) and dtype in DataType.__members__):
            return False  # the structural validation reports it
        if (dtype == "BOOL") != (table in _BIT_TABLES):
            self.err(
                (*at, "type"), f"type {dtype} does not fit table {table} (BOOL goes with COIL/DISCRETE_INPUT)"
            )
            return False
        if byte_order is not None and dtype == "BOOL":
            self.err((*at, "byte_order"), "byte_order does not apply to a BOOL point: a bit has no bytes")
        elif byte_order in ("CDAB", "DCBA") and DataType(dtype).registers == 1:
            self.err(
                (*at, "byte_order"),
                f"byte_order {byte_order} swaps words, but {dtype} is a single register: "
                "give ABCD, or BADC for a device that sends the two bytes swapped",
            )
        width = DataType(dtype).registers
        if address + width > 65536:
            self.err((*at, "address"), f"registers {address}..{address + width - 1} run past 65535")
            return False
        return True

    def _modbus(
        self, key: str, src: dict[str, Any], at: PathKey, dev: dict[str, Any], rng: tuple[float, float] | None
    ) -> None:
        missing = [k for k in ("table", "address", "type") if src.get(k) is None]  # absent or written empty
        if missing:
            self.err(at, f"Modbus source needs {', '.join(missing)}")
            return
        if not self._point(src["table"], src["type"], src["address"], src.get("byte_order"), at):
            return
        table, dtype, address = src["table"], src["type"], src["address"]
        width = DataType(dtype).registers
        unit_id = given_or_default(src, TagSource, "unit_id")
        unit_id = given_or_default(dev, ModbusDevice, "unit_id") if unit_id is None else unit_id
        if not isinstance(unit_id, int) or isinstance(unit_id, bool):
            return  # the structural validation reports it
        self.registers[(str(dev.get("id")), int(unit_id), table)].append((address, address + width, key, at))
        port = dev.get("serial_port")
        if (
            given_or_default(dev, ModbusDevice, "transport") == "RTU"
            and isinstance(port, str)
            and "unit_id" in src
        ):
            if unit_id == 0:
                self.err(
                    (*at, "unit_id"),
                    "unit_id 0 is the RTU broadcast address: no device answers a read (use 1..247)",
                )
            self.bus_units.append((port, int(unit_id), str(dev.get("id")), at))
        scale = src.get("scale")
        if isinstance(scale, dict):
            self._scale(scale, (*at, "scale"), str(dtype), rng)

    def _scale(self, scale: dict[str, Any], at: PathKey, dtype: str, rng: tuple[float, float] | None) -> None:
        """A scale must map the raw counts the register can hold onto a non-empty eng range."""
        raw, eng = finite_pair(scale.get("raw")), finite_pair(scale.get("eng"))
        if raw is not None and raw[0] == raw[1]:
            self.err((*at, "raw"), "raw range must not be empty")
            raw = None
        if eng is not None and eng[0] == eng[1]:
            self.err((*at, "eng"), "eng range must not be empty: every reading would show the same value")
            eng = None
        if scale.get("eng") is None:
            if rng is None:
                self.err(at, "scale needs eng: [low, high] when the tag has no range")
            eng = rng
        if raw is not None and dtype in _RAW_SPAN:
            lo, hi = _RAW_SPAN[dtype]
            for v in raw:
                if not lo <= v <= hi:
                    self.err(
                        (*at, "raw"),
                        f"raw {v:g} is outside what {dtype} registers hold ({lo}..{hi}): "
                        "that part of the range can never be read",
                    )
                    return
        if raw is not None and eng is not None:
            slope = (eng[1] - eng[0]) / (raw[1] - raw[0])
            if not math.isfinite(slope) or slope == 0:
                self.err(
                    at,
                    f"raw [{raw[0]:g}, {raw[1]:g}] to eng [{eng[0]:g}, {eng[1]:g}] is no usable linear "
                    f"scale (factor {slope:g})",
                )
            elif rng is not None and dtype in _RAW_SPAN:
                # what the register can show at all: limits beyond it could never be reached
                ends = [eng[0] + (count - raw[0]) * slope for count in _RAW_SPAN[dtype]]
                shown = (min(ends), max(ends))
                if shown[0] > rng[0] or shown[1] < rng[1]:
                    self.err(
                        (*at, "eng") if scale.get("eng") is not None else at,
                        f"a {dtype} register scaled this way shows only [{shown[0]:g}, {shown[1]:g}], "
                        f"less than the instrument range [{rng[0]:g}, {rng[1]:g}]: limits and trips "
                        "beyond it could never be reached",
                    )

    def _overlaps(self) -> None:
        for (dev, unit_id, table), spans in self.registers.items():
            spans.sort(key=lambda s: (s[0], s[3]))
            prev = spans[0]
            for cur in spans[1:]:
                if cur[0] < prev[1]:
                    self.err(
                        (*cur[3], "address"),
                        f"registers {cur[0]}..{cur[1] - 1} overlap {prev[2]} ({prev[0]}..{prev[1] - 1}) "
                        f"on device {dev!r} unit {unit_id} {table}",
                    )
                if cur[1] > prev[1]:
                    prev = cur

    def _limits(self, limits: dict[str, Any], at: PathKey, rng: tuple[float, float] | None) -> None:
        order = ["ll", "l", "h", "hh"]
        present = [(n, finite(limits.get(n))) for n in order if finite(limits.get(n)) is not None]
        for (lo_name, lo), (hi_name, hi) in itertools.pairwise(present):
            assert lo is not None and hi is not None
            if hi <= lo:
                self.err((*at, hi_name), f"must be above {lo_name} ({lo:g}), is {hi:g}")
        if rng is not None:
            for name, v in present:
                assert v is not None
                if not rng[0] <= v <= rng[1]:
                    self.err(
                        (*at, name),
                        f"{v:g} is outside the instrument range [{rng[0]:g}, {rng[1]:g}]: "
                        "it can never be reached",
                    )
        if limits.get("deadband") is not None and limits.get("deadband_pct") is not None:
            self.err((*at, "deadband_pct"), "give deadband or deadband_pct, not both")
        self._within_span(limits, ("deadband",), at, rng, "an alarm would never clear")
        db, field = finite(limits.get("deadband")), "deadband"
        if db is None and rng is not None and finite(limits.get("deadband_pct")) is not None:
            db, field = (finite(limits.get("deadband_pct")) or 0.0) / 100 * (rng[1] - rng[0]), "deadband_pct"
        if db and rng is not None and db < rng[1] - rng[0]:
            for name, v in present:
                assert v is not None
                clear = v + db if name in LOW_LIMITS else v - db
                if rng[0] <= v <= rng[1] and not rng[0] < clear < rng[1]:
                    self.err(
                        (*at, field),
                        f"a deadband of {db:g} clears {name.upper()} ({v:g}) at {clear:g}, outside the "
                        f"instrument range [{rng[0]:g}, {rng[1]:g}]: the alarm would never clear",
                    )

    def _within_span(
        self,
        block: dict[str, Any],
        path: tuple[str, ...],
        at: PathKey,
        rng: tuple[float, float] | None,
        why: str,
    ) -> None:
        """A tolerance-like setting (deadband, resolution, deviation) must be below the range span."""
        v = finite(block.get(path[-1]))
        if v is not None and rng is not None and v >= rng[1] - rng[0]:
            self.err((*at, *path), f"{v:g} is not below the range span {rng[1] - rng[0]:g}: {why}")

    def _rule_settings(self, ent: str, key: str, kind: Any, tag: dict[str, Any], at: PathKey) -> None:
        """rate:, deviation: and state: (rules/): which kinds they suit, and their tag references."""
        if tag.get("rate") is not None and kind == "DISCRETE":
            self.err((*at, "rate"), "a rate-of-change alarm needs an analog tag, this one is DISCRETE")
        rate = tag.get("rate")
        if isinstance(rate, dict) and (finite(rate.get("deadband")) or 0.0) >= (
            finite(rate.get("max_per_min")) or math.inf
        ):
            self.err(
                (*at, "rate", "deadband"),
                "the rate deadband must be below max_per_min, or the alarm never clears",
            )
        span_rng = self.tag_range.get(key)
        if isinstance(rate, dict) and span_rng is not None:
            limit, window = finite(rate.get("max_per_min")), finite(rate.get("window_s"))
            window = given_or_default(rate, RateOfChange, "window_s") if window is None else window
            fastest = (span_rng[1] - span_rng[0]) * 60 / window if window else math.inf
            if limit is not None and limit > fastest:
                self.err(
                    (*at, "rate", "max_per_min"),
                    f"{limit:g} per min can never be measured: the whole range [{span_rng[0]:g}, "
                    f"{span_rng[1]:g}] within window_s ({window:g} s) is {fastest:g} per min",
                )
        deviation = tag.get("deviation")
        if isinstance(deviation, dict) and isinstance(deviation.get("tag"), str):
            self.rule_refs.append((ent, key, deviation["tag"], (*at, "deviation", "tag")))
        if isinstance(deviation, dict):
            v, rng = finite(deviation.get("max")), self.tag_range.get(key)
            if v is not None and rng is not None and v > rng[1] - rng[0]:
                self.err(
                    (*at, "deviation", "max"),
                    f"{v:g} is more than the range span {rng[1] - rng[0]:g}: it can never be reached",
                )
        state = tag.get("state")
        if state is None:
            return
        if kind not in ("DISCRETE", None):
            self.err((*at, "state"), f"state: belongs to DISCRETE tags, this one is {kind}")
        if isinstance(state, dict):
            if state.get("alarm_value") is None and state.get("command") is None:
                self.err((*at, "state"), "give alarm_value, command or both")
            if isinstance(state.get("command"), str):
                self.rule_refs.append((ent, key, state["command"], (*at, "state", "command")))

    def _rule_ref(self, ent: str, key: str, ref: str, at: PathKey) -> None:
        target = resolve_key(ent, ref)
        if target not in self.keys:
            self.err(at, f"unknown tag {ref!r}")
        elif target == key:
            self.err(at, f"{ref!r} is this tag itself")
        elif at[-2] == "deviation":
            kind, other = self.tag_kind.get(key), self.tag_kind.get(target)
            unit, other_unit = self.tag_unit.get(key), self.tag_unit.get(target)
            if kind != other:
                self.err(at, f"redundant transmitter {ref!r} is a {other} tag, this one is {kind}")
            elif unit != other_unit:
                self.err(
                    at, f"redundant transmitter {ref!r} measures in {other_unit!r}, this one in {unit!r}"
                )

    # --- gas detectors (GB/T 50493-2019) ----------------------------------------------

    def _gas(self, gas: dict[str, Any], at: PathKey, unit: str, rng: tuple[float, float] | None) -> None:
        levels = resolve_gas(gas, unit, self.ref, lambda p, m: self.err((*at, *p), m))
        if levels is None:
            return
        _kind, l1, l2 = levels
        if rng is not None:
            for name, v in (("level1", l1), ("level2", l2)):
                if not rng[0] <= v <= rng[1]:
                    self.err(
                        (*at, name), f"{v:g} {unit} is outside the detector range [{rng[0]:g}, {rng[1]:g}]"
                    )

    # --- interlocks ------------------------------------------------------------------

    def _interlock(self, ent: str, il: dict[str, Any], at: PathKey) -> None:
        voting = il.get("voting")
        inputs = il.get("inputs")
        if isinstance(voting, str) and "oo" in voting and isinstance(inputs, list):
            m, _, n = voting.partition("oo")
            if m.isdigit() and n.isdigit():
                if not 1 <= int(m) <= int(n):
                    self.err((*at, "voting"), f"voting {voting}: M must be between 1 and N")
                elif int(n) != len(inputs):
                    self.err((*at, "voting"), f"voting {voting} needs {n} inputs, has {len(inputs)}")
        for k, inp in _items(inputs):
            self._ref(ent, inp.get("tag"), (*at, "inputs", k, "tag"))
            self._in_range(ent, inp.get("tag"), inp.get("value"), (*at, "inputs", k, "value"), _trip(inp))
            if inp.get("bypass") is not None:
                self._ref(ent, inp.get("bypass"), (*at, "inputs", k, "bypass"), want="DISCRETE")
        fe = il.get("final_element")
        if isinstance(fe, dict):
            self._ref(ent, fe.get("tag"), (*at, "final_element", "tag"))
            self._in_range(
                ent,
                fe.get("tag"),
                fe.get("safe_value"),
                (*at, "final_element", "safe_value"),
                "it can never be reported",
            )
            ref = fe.get("tag")
            fe_kind = self.tag_kind.get(resolve_key(ent, ref)) if isinstance(ref, str) else None
            if fe_kind not in (None, "DISCRETE"):
                self.err(
                    (*at, "final_element", "tag"),
                    f"final element {ref!r} must be the DISCRETE position feedback of a valve or "
                    f"breaker (demand without action is judged on it), is {fe_kind}",
                )

    def _in_range(
        self, ent: str, ref: Any, value: Any, at: PathKey, why: str | Callable[[bool], str]
    ) -> None:
        """An interlock's trip value or safe position must lie inside its tag's instrument range."""
        v, rng = finite(value), self.tag_range.get(resolve_key(ent, ref)) if isinstance(ref, str) else None
        if v is not None and rng is not None and not rng[0] <= v <= rng[1]:
            because = why if isinstance(why, str) else why(v > rng[1])
            self.err(at, f"{v:g} is outside the range [{rng[0]:g}, {rng[1]:g}] of tag {ref!r}: {because}")

    def _ref(self, ent: str, ref: Any, at: PathKey, want: str | None = None) -> None:
        if not isinstance(ref, str):
            return
        key = resolve_key(ent, ref)
        if key not in self.keys:
            self.err(at, f"unknown tag {ref!r}")
        elif want is not None and self.tag_kind.get(key) != want:
            self.err(at, f"tag {ref!r} must be a {want} tag, is {self.tag_kind.get(key)}")


def _trip(inp: dict[str, Any]) -> Callable[[bool], str]:
    """What an input comparing against a value above (or below) its tag's range does."""

    def why(above: bool) -> str:
        op = inp.get("op")
        never = op == "==" or (op in (">", ">=") if above else op in ("<", "<="))
        return "the input can never trip" if never else "the input always trips"

    return why


def _items(v: Any) -> list[tuple[int, dict[str, Any]]]:
    return [(i, x) for i, x in enumerate(v) if isinstance(x, dict)] if isinstance(v, list) else []


def _certificate_problem(path: Path) -> str | None:
    """Why ``path`` cannot be the pinned certificate (run would retry the connect for ever)."""
    try:
        head = path.read_bytes()[:64]
    except OSError as exc:
        where = "" if path.is_absolute() else f" (relative to the working directory {Path.cwd()})"
        return f"cannot be read: {exc.strerror or exc}{where}"
    if not (head.lstrip().startswith(b"-----BEGIN") or head[:1] == b"\x30"):  # PEM, or DER's SEQUENCE
        return "is neither a PEM nor a DER certificate"
    return None


def check_plant(data: dict[str, Any], source: SourceMap, ref: GasReference) -> list[ConfigIssue]:
    """Every cross-reference problem of the plant document ``data`` (see the module docstring)."""
    checker = PlantChecker(data, source, ref)
    checker.run()
    return checker.issues
