"""Cross-reference rules of devices and tag sources: what fits which protocol and transport.

OPC UA security settings that go together and a pinned certificate that can be read; Modbus
TCP or RTU keys that fit the transport, devices sharing a serial bus that agree on its line
settings and unit ids, points whose type fits the table and byte order fits the type, scales
that reach the instrument range, and registers of two tags that do not overlap. The base of
``core.plant_checks.PlantChecker``; reads the document in the same form.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from core.errors import ConfigIssue
from core.plant import DataType, ModbusDevice, OpcUaDevice, TagSource, given_or_default, heartbeat_type
from core.units import finite_pair
from core.yaml_loader import PathKey, SourceMap

__all__ = ["SourceChecks"]

_BIT_TABLES = {"COIL", "DISCRETE_INPUT"}
# Keys that belong to one Modbus transport only; the settings every device on a bus must share.
_TCP_KEYS = ("host", "port")
_RTU_KEYS = ("serial_port", "baudrate", "parity", "stopbits", "bytesize", "pause_s")
_BUS_KEYS = ("baudrate", "parity", "stopbits", "bytesize", "pause_s")
_NODE_PREFIXES = ("i=", "s=", "g=", "b=")
_OPCUA_SOURCE_KEYS = frozenset({"node", "namespace_uri"})
_MODBUS_SOURCE_KEYS = frozenset({"table", "address", "type", "byte_order", "unit_id", "scale"})
# Registers per point type, by name: DataType(dtype).registers without an enum lookup per tag.
_REGISTERS = {t.value: t.registers for t in DataType}
# Integer registers hold only these raw counts (floats: any); a scale beyond them is unreachable.
_RAW_SPAN = {
    "INT16": (-(2**15), 2**15 - 1),
    "UINT16": (0, 2**16 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "UINT32": (0, 2**32 - 1),
}


class SourceChecks:
    """Device and tag-source rules; ``issues`` collects every finding. Per device call
    ``device``, per tag ``tag_source``, then ``shared_buses_and_registers`` once."""

    def __init__(self, source: SourceMap) -> None:
        self.source = source
        self.issues: list[ConfigIssue] = []
        # (device, unit id, table) -> [(start, end, key, path)]
        self.registers: dict[tuple[str, int, str], list[tuple[int, int, str, PathKey]]] = defaultdict(list)
        # RTU buses: serial port -> [(device, path)], and the unit ids tags address on them
        self.buses: dict[str, list[tuple[dict[str, Any], PathKey]]] = defaultdict(list)
        self.bus_units: list[tuple[str, int, str, PathKey]] = []  # (port, unit, device, tag path)

    def err(self, path: PathKey, message: str) -> None:
        self.issues.append(self.source.issue(path, message))

    def _where(self, at: PathKey) -> str:
        file, line = self.source.where(at)
        return f"{file}:{line}"

    def device(self, dev: dict[str, Any], at: PathKey) -> None:
        self._security(dev, at)
        self._transport(dev, at)

    def shared_buses_and_registers(self) -> None:
        """What needs every device and tag seen: register overlaps, then serial buses."""
        self._overlaps()
        self._buses()

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

    def tag_source(
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
        if protocol == "OPCUA":
            for k in sorted(src.keys() & _MODBUS_SOURCE_KEYS):
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
            for k in sorted(src.keys() & _OPCUA_SOURCE_KEYS):
                self.err((*at, k), f"{k} is an OPC UA setting but device {dev_id!r} is Modbus")
            self._modbus(key, src, at, dev, rng)

    def _point(self, table: Any, dtype: Any, address: Any, byte_order: Any, at: PathKey) -> bool:
        """One Modbus value (a tag's or a heartbeat's): type fits table, byte order fits type, in range."""
        if not (
            isinstance(address, int)
            and isinstance(table, str)
            and isinstance(dtype, str)
            and dtype in _REGISTERS
        ):
            return False  # the structural validation reports it
        if (dtype == "BOOL") != (table in _BIT_TABLES):
            self.err(
                (*at, "type"), f"type {dtype} does not fit table {table} (BOOL goes with COIL/DISCRETE_INPUT)"
            )
            return False
        if byte_order is not None and dtype == "BOOL":
            self.err((*at, "byte_order"), "byte_order does not apply to a BOOL point: a bit has no bytes")
        elif byte_order in ("CDAB", "DCBA") and _REGISTERS[dtype] == 1:
            self.err(
                (*at, "byte_order"),
                f"byte_order {byte_order} swaps words, but {dtype} is a single register: "
                "give ABCD, or BADC for a device that sends the two bytes swapped",
            )
        width = _REGISTERS[dtype]
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
        width = _REGISTERS[dtype]
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
