"""Independent client paths for the simulator tests: asyncua and pymodbus, decoding with
struct from the byte-order definitions rather than with simulators.modbus_codec."""

from __future__ import annotations

import struct

from asyncua import Client, ua
from pymodbus.client import AsyncModbusTcpClient

from core.plant import DataType, ModbusDevice, Plant, Tag

_FMT = {"INT16": "h", "UINT16": "H", "INT32": "i", "UINT32": "I", "FLOAT32": "f", "FLOAT64": "d"}


def decode(words: list[int], dtype: str, order: str) -> float:
    """Registers -> value: CDAB/DCBA reverse the word order, BADC/DCBA swap bytes in a word."""
    if order in ("BADC", "DCBA"):
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    if order in ("CDAB", "DCBA"):
        words = words[::-1]
    return float(struct.unpack(">" + _FMT[dtype], struct.pack(f">{len(words)}H", *words))[0])


def eng(tag: Tag, raw: float) -> float:
    sc = tag.source.scale
    if sc is None:
        return raw
    lo, hi = sc.eng or tag.range or sc.raw
    return lo + (raw - sc.raw[0]) * (hi - lo) / (sc.raw[1] - sc.raw[0])


def quantum(tag: Tag) -> float:
    """How far a served value may sit from the model's: resolution or one raw count."""
    q = tag.resolution or 0.0
    sc = tag.source.scale
    integer = tag.source.type not in (None, DataType.FLOAT32, DataType.FLOAT64, DataType.BOOL)
    if integer and sc is None:
        q = max(q, 1.0)  # an unscaled integer register counts whole engineering units
    if sc is not None and integer:
        lo, hi = sc.eng or tag.range or sc.raw
        q = max(q, abs(hi - lo) / abs(sc.raw[1] - sc.raw[0]))
    return q


async def read_modbus(client: AsyncModbusTcpClient, plant: Plant, tag: Tag) -> float:
    dev = next(d for d in plant.devices() if d.id == tag.source.device)
    assert isinstance(dev, ModbusDevice)
    src = tag.source
    unit = src.unit_id if src.unit_id is not None else dev.unit_id
    assert src.address is not None and src.type is not None
    if src.table == "COIL":
        return float((await client.read_coils(src.address, count=1, slave=unit)).bits[0])
    if src.table == "DISCRETE_INPUT":
        return float((await client.read_discrete_inputs(src.address, count=1, slave=unit)).bits[0])
    read = client.read_holding_registers if src.table == "HOLDING" else client.read_input_registers
    rr = await read(src.address, count=src.type.registers, slave=unit)
    assert not rr.isError(), rr
    return eng(tag, decode(rr.registers, src.type, src.byte_order or dev.byte_order))


async def read_opcua(client: Client, tag: Tag, uri: str) -> ua.DataValue:
    ns = await client.get_namespace_index(uri)
    node = client.get_node(f"ns={ns};{tag.source.node}")
    return await node.read_data_value(raise_on_bad_status=False)
