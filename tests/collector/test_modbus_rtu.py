"""Modbus RTU over a pty pair: one bus source per serial port, values, pause, dead units, config.

The pair (tests/support/serial_pair.py) stands in for an RS-485 cable and records the
bytes it carries, so the tests read the wire itself: RTU request frames (unit, function
code, CRC) and the silence before each request. Ptys ignore the baud rate, and some
kernels refuse parity on them, so the line here is 115200 8N1.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusSlaveContext
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer

from collector.base import CollectorRunner
from collector.factory import build_sources
from collector.modbus.bus import ModbusBusSource, silent_interval_s
from collector.modbus.decode import encode_words
from collector.modbus.plan import ModbusPoint
from core.batch import ReadingBatch
from core.clock import FakeClock
from core.config import load_plant
from core.errors import ConfigError, SourceError
from core.plant import ByteOrder, DataType, ModbusDevice, ModbusTable, Parity
from core.quality import Quality
from simulators.modbus_server import ModbusDeviceServer
from simulators.scenario import DeviceSpec
from simulators.simulation import Simulation
from tests.simulators.clients import quantum
from tests.support.plants import write_small_plant
from tests.support.serial_pair import SerialPair, rtu_requests

HR, IR, CO, DI = 3, 4, 1, 2


def rtu(port: str, device_id: str, unit_id: int, **kw: object) -> ModbusDevice:
    return ModbusDevice.model_validate(
        {
            "protocol": "MODBUS",
            "id": device_id,
            "transport": "RTU",
            "serial_port": port,
            "baudrate": 115200,
            "parity": "N",
            "unit_id": unit_id,
            "timeout_s": 0.3,
            "retries": 0,
            "poll_interval_s": 0.1,
            "pause_s": 0.0,
            **kw,
        }
    )


def _unit() -> ModbusSlaveContext:
    # pymodbus 3.9 maps request address a to block address a+1 and needs all four blocks.
    return ModbusSlaveContext(
        di=ModbusSequentialDataBlock(1, [0] * 100),
        co=ModbusSequentialDataBlock(1, [0] * 100),
        hr=ModbusSequentialDataBlock(1, [0] * 200),
        ir=ModbusSequentialDataBlock(1, [0] * 100),
    )


class RtuSlaves:
    """Units 1 and 2 behind one pymodbus RTU server on the pair's b end."""

    def __init__(self, pair: SerialPair) -> None:
        self.pair = pair
        self.units = {1: _unit(), 2: _unit()}
        self.context = ModbusServerContext(slaves=dict(self.units), single=False)
        self.server: ModbusSerialServer | None = None

    def set(self, unit: int, fc: int, address: int, values: list[int]) -> None:
        self.units[unit].setValues(fc, address, values)

    def silence(self, unit: int) -> None:
        del self.context[unit]  # ignore_missing_slaves: the server says nothing, like a dead slave

    def revive(self, unit: int) -> None:
        self.context[unit] = self.units[unit]

    async def start(self) -> None:
        self.server = ModbusSerialServer(
            self.context, framer=FramerType.RTU, port=self.pair.b, baudrate=115200, ignore_missing_slaves=True
        )
        await self.server.serve_forever(background=True)
        assert self.server.transport is not None

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()


@pytest.fixture
def pair() -> Iterator[SerialPair]:
    with SerialPair() as p:
        yield p


@pytest.fixture
async def slaves(pair: SerialPair) -> AsyncIterator[RtuSlaves]:
    s = RtuSlaves(pair)
    await s.start()
    yield s
    await s.stop()


UNIT1 = [
    ModbusPoint(0, 1, ModbusTable.HOLDING, 0, DataType.FLOAT32, ByteOrder.CDAB),
    ModbusPoint(1, 1, ModbusTable.HOLDING, 2, DataType.INT16),
    ModbusPoint(2, 1, ModbusTable.INPUT, 10, DataType.UINT16, raw=(0, 27648), eng=(0, 10)),
    ModbusPoint(3, 1, ModbusTable.COIL, 5, DataType.BOOL),
    ModbusPoint(4, 1, ModbusTable.DISCRETE_INPUT, 7, DataType.BOOL),
    ModbusPoint(5, 1, ModbusTable.HOLDING, 40, DataType.UINT32),
]
UNIT2 = [
    ModbusPoint(6, 2, ModbusTable.HOLDING, 100, DataType.FLOAT64, ByteOrder.DCBA),
    ModbusPoint(7, 2, ModbusTable.INPUT, 30, DataType.INT32, ByteOrder.BADC),
]
EXPECTED = {0: -12.5, 1: -300.0, 2: 7.5, 3: 1.0, 4: 1.0, 5: 3_000_000_000.0, 6: 2.0e-3, 7: -123456.0}


def fill(s: RtuSlaves) -> None:
    s.set(1, HR, 0, encode_words(-12.5, DataType.FLOAT32, ByteOrder.CDAB))
    s.set(1, HR, 2, encode_words(-300, DataType.INT16, ByteOrder.ABCD))
    s.set(1, IR, 10, [20736])
    s.set(1, CO, 5, [1])
    s.set(1, DI, 7, [1])
    s.set(1, HR, 40, encode_words(3_000_000_000, DataType.UINT32, ByteOrder.ABCD))
    s.set(2, HR, 100, encode_words(2.0e-3, DataType.FLOAT64, ByteOrder.DCBA))
    s.set(2, IR, 30, encode_words(-123456, DataType.INT32, ByteOrder.BADC))


def bus(pair: SerialPair, clock: FakeClock | None = None, **kw: object) -> ModbusBusSource:
    return ModbusBusSource([(rtu(pair.a, "A", 1, **kw), UNIT1), (rtu(pair.a, "B", 2, **kw), UNIT2)], clock)


async def polls(source: ModbusBusSource, n: int) -> list[ReadingBatch]:
    """``n`` reads one poll interval apart (each device is read only when it is due)."""
    out = []
    for k in range(n):
        if k:
            await asyncio.sleep(source.interval_s)
        out.append(await source.read())
    return out


def values(batch: ReadingBatch) -> dict[int, float]:
    return dict(zip(batch.tag.tolist(), batch.value.tolist(), strict=True))


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.02)


# --- reading ------------------------------------------------------------------------


async def test_two_units_on_one_bus_read_every_type_with_read_codes_only(
    pair: SerialPair, slaves: RtuSlaves
) -> None:
    fill(slaves)
    source = bus(pair)
    await source.open()
    try:
        batches = await polls(source, 3)
    finally:
        await source.close()
    for batch in batches:
        assert values(batch) == EXPECTED
        assert (batch.quality == Quality.GOOD).all()
    requests = rtu_requests(pair.seen())  # asserts every frame is a read (fc 1-4) with a good CRC
    per_poll = sum(len(m.executor.plan.requests) for m in source.members)
    assert len(requests) == 3 * per_poll
    assert {r.unit for r in requests} == {1, 2}
    assert {r.function for r in requests} == {1, 2, 3, 4}


async def test_pause_between_requests_is_kept_on_the_wire(pair: SerialPair, slaves: RtuSlaves) -> None:
    fill(slaves)
    source = bus(pair, pause_s=0.04)
    await source.open()
    try:
        await polls(source, 3)
    finally:
        await source.close()
    chunks = pair.seen()
    requests = rtu_requests(chunks)
    assert len(requests) >= 3 * 7
    for r in requests[1:]:
        before = [c for c in chunks if c.t < r.t]
        # strictly sequential: the bus last carried the previous answer, then stayed silent
        assert not before[-1].to_b, "a request went out before the previous one was answered"
        assert r.t - before[-1].t >= 0.04 - 0.001


def test_pause_is_never_shorter_than_the_rtu_silent_interval() -> None:
    slow = rtu("/dev/null", "A", 1, baudrate=9600, parity="E", pause_s=0)
    assert silent_interval_s(slow) == pytest.approx(3.5 * 11 / 9600)  # ≈ 4 ms
    assert silent_interval_s(rtu("/dev/null", "A", 1)) == 0.00175  # fixed above 19200 baud
    assert ModbusBusSource([(slow, UNIT1)]).pause_s == pytest.approx(3.5 * 11 / 9600)


async def test_each_device_keeps_its_own_interval_on_the_shared_bus(
    pair: SerialPair, slaves: RtuSlaves
) -> None:
    clock = FakeClock()
    fast = rtu(pair.a, "FAST", 1, poll_interval_s=1.0)
    slow = rtu(pair.a, "SLOW", 2, poll_interval_s=2.5)
    source = ModbusBusSource([(fast, UNIT1[:1]), (slow, UNIT2[:1])], clock)
    assert source.interval_s == 1.0  # the runner ticks at the fastest device's interval
    await source.open()
    read_slow = []
    try:
        for tick in range(10):
            clock.advance(tick + 0.01 - clock.monotonic())
            batch = await source.read()
            assert 0 in batch.tag.tolist()
            read_slow.append(6 in batch.tag.tolist())
    finally:
        await source.close()
    # 2.5 s on a 1 s tick: read at 0, 2, 5 and 7 s, so 2.5 s on average
    assert [t for t, read in enumerate(read_slow) if read] == [0, 2, 5, 7]


# --- failures -----------------------------------------------------------------------


async def test_silent_unit_goes_bad_while_the_other_keeps_being_read(
    pair: SerialPair, slaves: RtuSlaves
) -> None:
    fill(slaves)
    # A's settings open the port (1 s timeout); B's own 0.15 s timeout applies to B's requests.
    a = rtu(pair.a, "A", 1, timeout_s=1.0, pause_s=0.01)
    b = rtu(pair.a, "B", 2, timeout_s=0.15, pause_s=0.01)
    out: list[ReadingBatch] = []
    runner = CollectorRunner(ModbusBusSource([(a, UNIT1), (b, UNIT2)]), out.append, open_timeout_s=2)
    task = asyncio.create_task(runner.run())
    try:
        await until(lambda: len(out) >= 2)
        slaves.silence(2)
        silenced_at, cut = time.monotonic(), len(out)
        await until(lambda: any(math.isnan(values(x).get(6, 0.0)) for x in out[cut:]))
        slaves.set(1, HR, 2, encode_words(42, DataType.INT16, ByteOrder.ABCD))
        marked_at, mark = time.monotonic(), len(out)
        await until(lambda: len(out) >= mark + 8)
        after = out[mark:]
        for x in after:
            q = dict(zip(x.tag.tolist(), x.quality.tolist(), strict=True))
            assert all(q[i] == Quality.GOOD for i in range(6)), q
            assert q[6] == q[7] == Quality.BAD_COMM_FAILURE
            assert math.isnan(values(x)[6])
        assert values(after[-1])[1] == 42.0  # unit 1 is read, not just left GOOD
        assert runner.stats.history == ["ok"]  # the bus itself never failed
        chunks = pair.seen()
        requests = [r for r in rtu_requests(chunks) if r.t > silenced_at]
        recent = [r for r in requests if r.t > marked_at]
        # the silent unit is probed on a growing interval, not on every poll
        assert len([r for r in recent if r.unit == 2]) < len([r for r in recent if r.unit == 1]) / 4
        gaps = [nxt.t - r.t for r, nxt in itertools.pairwise(requests) if r.unit == 2]
        assert gaps  # the bus silence after an unanswered request: B's timeout, not A's 1 s
        assert all(0.15 <= g < 0.8 for g in gaps), gaps
        slaves.revive(2)
        await until(lambda: values(out[-1]).get(6) == 2.0e-3)
        assert (out[-1].quality == Quality.GOOD).all()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_silent_bus_keeps_its_port_open(pair: SerialPair, slaves: RtuSlaves) -> None:
    # pymodbus closes a client after retries+3 unanswered requests in a row (pymodbus#1654);
    # on a bus that only means the slaves are silent, so the port must stay ours.
    fill(slaves)
    clock = FakeClock()
    source = ModbusBusSource([(rtu(pair.a, "B", 2, timeout_s=0.1), UNIT2)], clock)
    await source.open()
    try:
        slaves.silence(2)
        for _ in range(6):
            clock.advance(61.0)  # past the longest back-off: every read probes the unit
            batch = await source.read()
            assert (batch.quality == Quality.BAD_COMM_FAILURE).all()
        # one probe per read, of two requests (the unit's next request is tried once)
        assert len([r for r in rtu_requests(pair.seen()) if r.unit == 2]) == 12
        slaves.revive(2)
        clock.advance(61.0)
        batch = await source.read()
        assert (batch.quality == Quality.GOOD).all() and values(batch)[6] == 2.0e-3
    finally:
        await source.close()


async def test_a_lost_serial_port_is_a_source_error(pair: SerialPair, slaves: RtuSlaves) -> None:
    fill(slaves)
    source = bus(pair)
    await source.open()
    try:
        assert len(await source.read()) == len(EXPECTED)
        pair.unplug_a()
        await asyncio.sleep(source.interval_s)
        with pytest.raises(SourceError, match="connection lost"):
            await source.read()
    finally:
        await source.close()


async def test_a_port_that_cannot_be_opened_is_a_source_error(tmp_path: Path) -> None:
    source = ModbusBusSource([(rtu(str(tmp_path / "ttyUSB9"), "A", 1), UNIT1)])
    with pytest.raises(SourceError, match="ttyUSB9"):
        await source.open()
    await source.close()


# --- the simulator as the slaves --------------------------------------------------------

TAG = "- {{code: {code}, name: 点{code}, equipment: V1, {kind}, source: {{{source}}}}}"


def write_plant(folder: Path, devices: list[str], tags: list[str]) -> Path:
    return write_small_plant(folder, "\n".join(f"- {{{d}}}" for d in devices), "\n".join(tags))


LT, PT, XV, TT = (
    "kind: LEVEL, unit: '%', range: [0, 100]",
    "kind: PRESSURE, unit: MPa, range: [0, 2.5]",
    "kind: DISCRETE, unit: ''",
    "kind: TEMPERATURE, unit: °C, range: [-40, 120]",
)


def tag(code: str, source: str, kind: str = LT) -> str:
    return TAG.format(code=code, kind=kind, source=source)


async def test_simulator_serves_an_rtu_bus_to_one_bus_source(pair: SerialPair, tmp_path: Path) -> None:
    line = f"transport: RTU, serial_port: {pair.a}, baudrate: 115200, parity: N, pause_s: 0.005"
    plant = load_plant(
        write_plant(
            tmp_path,
            [
                f"protocol: MODBUS, id: MB1, {line}, unit_id: 1, timeout_s: 0.3, retries: 0",
                f"protocol: MODBUS, id: MB2, {line}, unit_id: 2, timeout_s: 0.3, retries: 0, poll_interval_s: 2",
            ],
            [
                tag("LT1", "device: MB1, table: HOLDING, address: 0, type: FLOAT32, byte_order: CDAB"),
                tag(
                    "PT1", "device: MB1, table: INPUT, address: 4, type: UINT16, scale: {raw: [0, 27648]}", PT
                ),
                tag("XV1", "device: MB1, table: COIL, address: 3, type: BOOL", XV),
                tag("TT1", "device: MB2, table: HOLDING, address: 10, type: FLOAT64", TT),
                tag("LT2", "device: MB2, table: HOLDING, address: 20, type: INT32, byte_order: DCBA"),
            ],
        )
    )
    sim = Simulation(plant, seed=2)
    sim.set_value("V1.XV1", 1, hold=True)
    sim.step(1.0)
    devices = [d for d in plant.devices() if isinstance(d, ModbusDevice)]
    server = ModbusDeviceServer.rtu(pair.b, devices, sim.state, sim.devices)
    await server.start()
    clock = FakeClock()
    sources = build_sources(plant, sim.registry, clock)
    try:
        assert len(sources) == 1 and isinstance(sources[0], ModbusBusSource)
        source = sources[0]
        assert source.name == pair.a and source.interval_s == 1.0
        assert source.line.parity == Parity.NONE
        await source.open()
        batch = await source.read()
        assert (batch.quality == Quality.GOOD).all()
        got = dict(zip(batch.tag.tolist(), batch.value.tolist(), strict=True))
        assert len(got) == 5
        for i, t in enumerate(sim.registry.tags):
            assert got[i] == pytest.approx(sim.value(t.key), abs=quantum(t) / 2 + 1e-6), t.key
        assert got[sim.index("V1.XV1")] == 1.0
        sim.device_fault(DeviceSpec(id="MB2", action="OFFLINE"))
        clock.advance(1.0)
        source.members[1].next_due = 0.0  # due now, whatever its 2 s interval says
        batch = await source.read()
        bad = {int(i) for i in sim.state.indexes_of_device("MB2")}
        assert set(batch.tag.tolist()) == set(range(5))
        for i, q in zip(batch.tag.tolist(), batch.quality.tolist(), strict=True):
            assert q == (Quality.BAD_COMM_FAILURE if i in bad else Quality.GOOD)
    finally:
        await sources[0].close()
        await server.stop()


# --- configuration ----------------------------------------------------------------------

RTU1 = "protocol: MODBUS, id: MB1, transport: RTU, serial_port: /dev/ttyS1"
RTU2 = "protocol: MODBUS, id: MB2, transport: RTU, serial_port: /dev/ttyS1"
D0, D1 = "plant.yaml:6 enterprises[0].devices[0]", "plant.yaml:7 enterprises[0].devices[1]"

CONFIG_ERRORS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "tcp_needs_host": (
        ["protocol: MODBUS, id: MB1"],
        [],
        [f"{D0}: a Modbus TCP device needs host: (or transport: RTU with serial_port:)"],
    ),
    "tcp_with_serial_settings": (
        ["protocol: MODBUS, id: MB1, host: 10.0.0.5, baudrate: 19200, pause_s: 0.1"],
        [],
        [
            f"{D0}.baudrate: baudrate is a serial (RTU) setting but device 'MB1' uses TCP",
            f"{D0}.pause_s: pause_s is a serial (RTU) setting but device 'MB1' uses TCP",
        ],
    ),
    "rtu_needs_serial_port": (
        ["protocol: MODBUS, id: MB1, transport: rtu"],
        [],
        [f"{D0}: a Modbus RTU device needs serial_port: (e.g. /dev/ttyS1)"],
    ),
    "rtu_with_host_and_port": (
        [f"{RTU1}, host: 10.0.0.5, port: 502"],
        [],
        [
            f"{D0}.host: host is a TCP setting but device 'MB1' uses RTU (serial_port:)",
            f"{D0}.port: port is a TCP setting but device 'MB1' uses RTU (serial_port:)",
        ],
    ),
    "rtu_bytesize_7": (
        [f"{RTU1}, bytesize: 7"],
        [],
        [f"{D0}.bytesize: RTU frames are 8-bit binary: bytesize must be 8 (7 bits is Modbus ASCII)"],
    ),
    "rtu_broadcast_unit": (
        [f"{RTU1}, unit_id: 0"],
        [],
        [f"{D0}.unit_id: unit_id 0 is the RTU broadcast address: no device answers a read (use 1..247)"],
    ),
    "bad_transport_and_parity": (
        [f"{RTU1}, parity: X", "protocol: MODBUS, id: MB2, transport: ASCII"],
        [],
        [
            f"{D0}.parity: Input should be 'EVEN', 'ODD' or 'NONE'",
            f"{D1}.transport: Input should be 'TCP' or 'RTU'",
        ],
    ),
    "bus_settings_differ": (
        [f"{RTU1}, parity: E, unit_id: 1", f"{RTU2}, baudrate: 19200, parity: N, pause_s: 0.1, unit_id: 2"],
        [],
        [
            f"{D1}.baudrate: device 'MB2' has baudrate 19200 but device 'MB1' (plant.yaml:6) has 9600: "
            "devices on serial port /dev/ttyS1 share one bus and its settings",
            f"{D1}.parity: device 'MB2' has parity NONE but device 'MB1' (plant.yaml:6) has EVEN: "
            "devices on serial port /dev/ttyS1 share one bus and its settings",
            f"{D1}.pause_s: device 'MB2' has pause_s 0.1 but device 'MB1' (plant.yaml:6) has 0.05: "
            "devices on serial port /dev/ttyS1 share one bus and its settings",
        ],
    ),
    "same_unit_on_one_bus": (
        [RTU1, RTU2],
        [],
        [
            f"{D1}: devices 'MB1' (plant.yaml:6) and 'MB2' both use unit_id 1 on serial port "
            "/dev/ttyS1: each unit on a bus is one device"
        ],
    ),
    "tag_addresses_another_devices_unit": (
        [f"{RTU1}, unit_id: 1", f"{RTU2}, unit_id: 2"],
        [tag("LT1", "device: MB1, unit_id: 2, table: HOLDING, address: 0, type: FLOAT32")],
        [
            "plant.yaml:19 enterprises[0].hazard_sources[0].tags[0].source.unit_id: unit 2 on serial "
            "port /dev/ttyS1 is device 'MB2', not 'MB1': bind the tag to that device"
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(CONFIG_ERRORS))
def test_config_errors(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    devices, tags, expected = CONFIG_ERRORS[name]
    monkeypatch.chdir(write_plant(tmp_path, devices, tags))
    with pytest.raises(ConfigError) as info:
        load_plant(".", env={})
    assert [str(i) for i in info.value.issues] == expected


def test_valid_buses_load_with_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(
        write_plant(
            tmp_path,
            [
                f"{RTU1}, parity: e, unit_id: 1",
                f"{RTU2}, parity: EVEN, baudrate: 9600, unit_id: 2, poll_interval_s: 5, timeout_s: 2",
                "protocol: MODBUS, id: MB3, transport: RTU, serial_port: /dev/ttyS2",  # another bus: unit 1 again
                "protocol: MODBUS, id: MB4, host: 10.0.0.5",
            ],
            [tag("LT1", "device: MB1, unit_id: 5, table: HOLDING, address: 0, type: FLOAT32")],
        )
    )
    plant = load_plant(".", env={})
    mb1, mb2, mb3, mb4 = (d for d in plant.devices() if isinstance(d, ModbusDevice))
    line = (mb1.parity, mb1.baudrate, mb1.stopbits, mb1.bytesize, mb1.pause_s)
    assert line == (Parity.EVEN, 9600, 1, 8, 0.05)
    assert mb2.parity == Parity.EVEN and mb3.unit_id == 1 and mb1.host is None
    assert (mb4.transport, mb4.host, mb4.port, mb4.serial_port) == ("TCP", "10.0.0.5", 502, None)
    assert (mb2.poll_interval_s, mb2.timeout_s) == (5, 2)
