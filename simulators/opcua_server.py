"""OPC UA servers for the simulated plant (asyncua is imported here and nowhere else in
simulators/).

One asyncua Server per configured endpoint, holding every tag of the devices behind it
at its configured node id in its namespace URI, under Objects/<device>/<hazard source>/
<equipment> (one folder per equipment keeps asyncua's per-parent reference scans short).
Analog tags are AnalogItemType variables with EURange and EngineeringUnits; all values
are read-only to clients (AccessLevel CurrentRead). ``publish`` copies changed PlantState
entries straight into the address space, setting source and server timestamps and a
StatusCode from the quality byte (a BAD value is null, OPC UA Part 4 §7.7.1). ``restart``
keeps node identifiers but can register an extra namespace first, so every index moves.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import uuid
from datetime import UTC, datetime
from urllib.parse import urlparse

import numpy as np
from asyncua import Server, ua
from asyncua.server.address_space import AttributeValue

from core.plant import OpcUaDevice, Tag, TagKind
from core.quality import Quality
from simulators.state import PlantState

__all__ = ["STATUS_OF_QUALITY", "OpcUaEndpointServer", "parse_node", "stop_server"]

for _name in ("asyncua", "asyncua.server"):  # start-up chatter about absent certificates
    logging.getLogger(_name).setLevel(logging.ERROR)

STATUS_OF_QUALITY: dict[int, int] = {
    Quality.GOOD: 0x00000000,
    Quality.GOOD_LOCAL_OVERRIDE: 0x00960000,
    Quality.UNCERTAIN: 0x40000000,
    Quality.UNCERTAIN_LAST_USABLE: 0x40900000,
    Quality.UNCERTAIN_SENSOR_NOT_ACCURATE: 0x40930000,
    Quality.UNCERTAIN_EU_EXCEEDED: 0x40940000,
    Quality.UNCERTAIN_SUB_NORMAL: 0x40950000,
    Quality.BAD: 0x80000000,
    Quality.BAD_CONFIG_ERROR: 0x80890000,
    Quality.BAD_NOT_CONNECTED: 0x808A0000,
    Quality.BAD_DEVICE_FAILURE: 0x808B0000,
    Quality.BAD_SENSOR_FAILURE: 0x808C0000,
    Quality.BAD_LAST_KNOWN: 0x80320000,
    Quality.BAD_COMM_FAILURE: 0x80050000,
    Quality.BAD_OUT_OF_SERVICE: 0x808D0000,
}
# UNECE Rec. 20 common codes, as OPC UA Part 8 §5.6.3 encodes them in EUInformation.UnitId
_UNECE = {"°C": "CEL", "℃": "CEL", "K": "KEL", "MPa": "MPA", "kPa": "KPA", "Pa": "PAL", "bar": "BAR",
          "mbar": "MBR", "m": "MTR", "mm": "MMT", "%": "P1", "%LEL": "P1", "%VOL": "P1", "m³/h": "MQH",
          "Nm³/h": "MQH", "t/h": "E18", "kg/h": "E93", "L/min": "L2", "ppm": "59", "mg/m³": "GP"}  # fmt: skip
UNITS_URI = "http://www.opcfoundation.org/UA/units/un/cefact"


def _unit_id(code: str) -> int:
    out = 0
    for ch in code:
        out = (out << 8) | ord(ch)
    return out


def parse_node(node: str, ns: int) -> ua.NodeId:
    kind, _, ident = node.partition("=")
    if kind == "i":
        return ua.NodeId(int(ident), ns)
    if kind == "g":
        return ua.NodeId(uuid.UUID(ident), ns)
    if kind == "b":
        return ua.NodeId(base64.b64decode(ident), ns)
    return ua.NodeId(ident, ns)


def _is_bool(tag: Tag) -> bool:
    return tag.kind == TagKind.DISCRETE and tag.range is None


async def stop_server(server: Server) -> None:
    """Stop an asyncua server, refusing new connections before asyncua closes the open ones:
    a client that reconnects while stop() runs would otherwise be accepted after the transports
    were closed, and Python 3.11's Server.wait_closed() waits for that connection for ever."""
    listener = getattr(server.bserver, "_server", None)
    if listener is not None:
        listener.close()
    await server.stop()


class OpcUaEndpointServer:
    """One simulated OPC UA server: the tags of ``devices`` that share one endpoint."""

    def __init__(
        self, endpoint: str, devices: list[OpcUaDevice], state: PlantState, port: int | None = None
    ) -> None:
        url = urlparse(endpoint)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 4840 if port is None else port
        self.path = url.path
        self.devices = devices
        self.state = state
        ids = {d.id for d in devices}
        self.index = np.array([i for i, t in enumerate(state.tags) if t.source.device in ids], np.int64)
        self.restarts = 0
        self.server: Server | None = None
        self._attrs: list[AttributeValue] = []
        self._vtype: list[ua.VariantType] = []

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}{self.path}"

    @property
    def running(self) -> bool:
        return self.server is not None

    def _uri(self, tag: Tag) -> str | None:
        dev = next(d for d in self.devices if d.id == tag.source.device)
        return tag.source.namespace_uri or dev.namespace_uri

    async def start(self, *, renumber: bool = False) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        server.set_server_name(f"HazardWatch simulator {','.join(d.id for d in self.devices)}")
        if renumber:
            await server.register_namespace(f"urn:hazardwatch:sim:restart:{self.restarts}")
        ns: dict[str | None, int] = {None: 0}
        for d in self.devices:
            if d.namespace_uri:
                ns[d.namespace_uri] = await server.register_namespace(d.namespace_uri)
        for i in self.index:
            uri = self._uri(self.state.tags[i])
            if uri not in ns:
                ns[uri] = await server.register_namespace(uri)
        self.namespaces = ns
        self._build(server, ns)
        await server.start()
        self.port = server.bserver.port
        self.server = server
        self.state.changed[self.index] = True
        await self.publish()

    def _build(self, server: Server, ns: dict[str | None, int]) -> None:
        items: list[ua.AddNodesItem] = []
        folders: set[str] = set()
        nodes: list[ua.NodeId] = []
        for i in self.index:
            tag = self.state.tags[i]
            uri = self._uri(tag)
            fns = ns[uri] if uri else max(ns.values())
            hs = self.state.registry.hazard_sources[self.state.registry.hazard_source[i]]
            parent = ua.NodeId(ua.ObjectIds.ObjectsFolder)
            for part in (tag.source.device, hs, tag.equipment):
                path = f"{parent.Identifier}/{part}" if parent.NamespaceIndex else part
                nid = ua.NodeId(f"sim/{path}", fns)
                if nid.to_string() not in folders:
                    folders.add(nid.to_string())
                    items.append(_folder(nid, parent, part, fns))
                parent = nid
            nid = parse_node(tag.source.node or f"s={tag.key}", ns[uri])
            items += _variable(nid, parent, tag, ns[uri], float(self.state.value[i]))
            nodes.append(nid)
        for res, item in zip(server.iserver.node_mgt_service.add_nodes(items), items, strict=True):
            if not res.StatusCode.is_good():
                raise ValueError(f"simulator cannot create node {item.RequestedNewNodeId}: {res.StatusCode}")
        aspace = server.iserver.aspace
        self._attrs = [aspace[n].attributes[ua.AttributeIds.Value] for n in nodes]
        self._vtype = [
            ua.VariantType.Boolean if _is_bool(self.state.tags[i]) else ua.VariantType.Double
            for i in self.index
        ]

    async def publish(self) -> int:
        """Copy changed values of this server's tags into its address space; returns how many."""
        if self.server is None:
            return 0
        st = self.state
        pos = st.take_changed(self.index)
        if not pos.size:
            return 0
        idx = self.index[pos]
        now = datetime.now(UTC)
        stamps: dict[int, datetime] = {}
        for p, v, q, ts in zip(
            pos.tolist(), st.value[idx].tolist(), st.quality[idx].tolist(), st.ts[idx].tolist(), strict=True
        ):
            src = stamps.get(ts)
            if src is None:
                src = stamps[ts] = datetime.fromtimestamp(ts / 1e6, UTC)
            code = STATUS_OF_QUALITY.get(q, STATUS_OF_QUALITY.get(q & 192, 2147483648))
            vt = self._vtype[p]
            variant = (
                ua.Variant(None)
                if code & 0x80000000
                else ua.Variant(bool(v >= 0.5) if vt == ua.VariantType.Boolean else v, vt)
            )
            dv = ua.DataValue(
                Value=variant, StatusCode_=ua.StatusCode(code), SourceTimestamp=src, ServerTimestamp=now
            )
            attr = self._attrs[p]
            attr.value = dv
            for handle, callback in list(attr.datachange_callbacks.items()):
                await callback(handle, dv)
        return len(pos)

    async def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            # asyncua's stop waits for its 1 s CurrentTime loop to come round: cancel it instead
            task = server.iserver.time_task
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                server.iserver.time_task = None
            await stop_server(server)

    async def restart(self, *, renumber: bool = True) -> None:
        """Stop and start again on the same port; ``renumber`` shifts every namespace index."""
        await self.stop()
        self.restarts += 1
        await self.start(renumber=renumber)


def _folder(nid: ua.NodeId, parent: ua.NodeId, name: str, ns: int) -> ua.AddNodesItem:
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = nid
    item.BrowseName = ua.QualifiedName(name, ns)
    item.NodeClass = ua.NodeClass.Object
    item.ParentNodeId = parent
    item.ReferenceTypeId = ua.NodeId(ua.ObjectIds.Organizes)
    item.TypeDefinition = ua.NodeId(ua.ObjectIds.FolderType)
    attrs = ua.ObjectAttributes()
    attrs.DisplayName = ua.LocalizedText(name)
    item.NodeAttributes = attrs
    return item


def _var_item(
    nid: ua.NodeId, parent: ua.NodeId, name: ua.QualifiedName, value: ua.Variant, dtype: int, prop: bool
) -> ua.AddNodesItem:
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = nid
    item.BrowseName = name
    item.NodeClass = ua.NodeClass.Variable
    item.ParentNodeId = parent
    item.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HasProperty if prop else ua.ObjectIds.HasComponent)
    item.TypeDefinition = ua.NodeId(ua.ObjectIds.PropertyType if prop else dtype)
    attrs = ua.VariableAttributes()
    attrs.DisplayName = ua.LocalizedText(name.Name)
    attrs.Value = value
    attrs.ValueRank = ua.ValueRank.Scalar
    attrs.AccessLevel = ua.AccessLevel.CurrentRead.mask
    attrs.UserAccessLevel = ua.AccessLevel.CurrentRead.mask
    attrs.DataType = (
        ua.NodeId(value.VariantType.value)
        if value.VariantType != ua.VariantType.ExtensionObject
        else value.Value.data_type
    )
    item.NodeAttributes = attrs
    return item


def _variable(nid: ua.NodeId, parent: ua.NodeId, tag: Tag, ns: int, value: float) -> list[ua.AddNodesItem]:
    if _is_bool(tag):
        v = ua.Variant(bool(value >= 0.5), ua.VariantType.Boolean)
        return [
            _var_item(
                nid, parent, ua.QualifiedName(tag.code, ns), v, ua.ObjectIds.BaseDataVariableType, False
            )
        ]
    v = ua.Variant(value, ua.VariantType.Double)
    items = [_var_item(nid, parent, ua.QualifiedName(tag.code, ns), v, ua.ObjectIds.AnalogItemType, False)]
    key = nid.to_string()
    lo, hi = tag.range or (0.0, 1.0)
    eu = ua.EUInformation(UNITS_URI, _unit_id(_UNECE[tag.unit]) if tag.unit in _UNECE else -1,
                          ua.LocalizedText(tag.unit), ua.LocalizedText(tag.unit))  # fmt: skip
    for name, val in (("EURange", ua.Range(lo, hi)), ("EngineeringUnits", eu)):
        pid = ua.NodeId(f"{key}#{name}", ns)
        items.append(_var_item(pid, nid, ua.QualifiedName(name, 0), ua.Variant(val), 0, True))
    return items
