"""OPC UA loss detection against a real asyncua server: a dead server, a silent link, a
library that raises CancelledError, a gateway whose PLC stops, one failing polling chunk."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from asyncio.subprocess import DEVNULL, PIPE
from pathlib import Path

import numpy as np
import pytest
from asyncua import ua
from asyncua.common.utils import ServiceError

from collector.opcua.source import OpcUaSource, status_text
from core.quality import Quality
from tests.collector.test_opcua_source import Collected, device, points, run, stop, until
from tests.support.servers import NS_URI, UaPlant, free_port

ROOT = Path(__file__).resolve().parents[2]


class FreezingProxy:
    """A TCP proxy whose link can go silent: sockets stay open, nothing is forwarded (a cut cable)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.frozen = False
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in self._writers:
            w.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if not self.frozen:
                    writer.write(data)
                    await writer.drain()


def test_status_codes_are_logged_by_name() -> None:
    shutdown = ua.StatusChangeNotification(Status=ua.StatusCode(ua.StatusCodes.BadShutdown))
    assert status_text(shutdown).startswith("BadShutdown (0x800C0000): ")
    assert status_text(ua.StatusCodes.BadTimeout).startswith("BadTimeout (0x800A0000)")


async def test_a_status_change_fails_the_source_with_the_status_name(ua_plant: UaPlant) -> None:
    source = OpcUaSource(device(ua_plant), points(2))
    await source.open()
    try:
        source.status_change_notification(
            ua.StatusChangeNotification(Status=ua.StatusCode(ua.StatusCodes.BadTimeout))
        )
        with pytest.raises(Exception, match=r"subscription status BadTimeout \(0x800A0000\)") as err:
            await source.read()
        assert "StatusCode(value=" not in str(err.value)
    finally:
        await source.close()


_SERVER = """
import asyncio, sys
from tests.support.servers import UaPlant

async def main() -> None:
    await UaPlant(int(sys.argv[1]), 20).start()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def ua_server_process(port: int) -> asyncio.subprocess.Process:
    """The test server in its own process, so that it can really die (kill -9)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SERVER, str(port), cwd=ROOT, stdout=PIPE, stderr=DEVNULL
    )
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        assert await proc.stdout.readline() == b"ready\n"
    return proc


async def test_a_killed_server_is_noticed_within_two_publishing_intervals_and_the_outage_is_reported_whole(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="collector.base")
    port = free_port()
    proc = await ua_server_process(port)
    out = Collected()
    interval = 0.25
    source = OpcUaSource(device(UaPlant(port, 20), interval_s=interval, timeout_s=5.0), points(20))
    runner, task = await run(source, out)
    loop = asyncio.get_running_loop()
    try:
        await until(lambda: runner.stats.state == "ok" and out.latest(7) is not None)
        proc.kill()
        died = loop.time()
        await proc.wait()
        await until(lambda: runner.stats.state == "failed")
        detected_s = loop.time() - died
        # 2 publishing intervals (0.5 s), with generous room for a busy machine; asyncua's own
        # check needs its request timeout_s (5 s) to notice.
        assert detected_s < 2 * interval + 1.5, detected_s
        proc = await ua_server_process(port)
        await until(lambda: runner.stats.state == "ok")
        down_s = loop.time() - died
        # from the last good read (before the death) to the first data again, not from detection
        assert runner.stats.last_outage_s >= down_s - 0.5
        assert any(
            f"no data for {runner.stats.last_outage_s:.1f} s" in r.getMessage() for r in caplog.records
        )
    finally:
        await stop(task)
        proc.kill()
        await proc.wait()


async def test_a_silent_link_is_noticed_by_the_publish_watchdog(ua_plant: UaPlant) -> None:
    proxy = FreezingProxy(ua_plant.port)
    await proxy.start()
    out = Collected()
    interval = 0.25
    endpoint = f"opc.tcp://127.0.0.1:{proxy.port}/hw"
    source = OpcUaSource(device(ua_plant, endpoint=endpoint, interval_s=interval, timeout_s=5.0), points(5))
    runner, task = await run(source, out)
    loop = asyncio.get_running_loop()
    try:
        await until(lambda: runner.stats.state == "ok" and out.latest(3) is not None)
        await asyncio.sleep(3 * interval)  # keep-alives only: values do not change
        assert runner.stats.state == "ok"  # quiet values are not a dead server
        proxy.frozen = True
        frozen_at = loop.time()
        await until(lambda: runner.stats.state == "failed")
        assert loop.time() - frozen_at < 2 * interval + 1.5  # asyncua's own check needs timeout_s + 1 s
        assert "publishing intervals" in runner.stats.last_error
    finally:
        await stop(task)
        await proxy.stop()


async def test_a_cancelled_error_raised_inside_asyncua_reconnects_instead_of_ending_the_collector(
    ua_plant: UaPlant,
) -> None:
    out = Collected()
    source = OpcUaSource(device(ua_plant), points(3))
    runner, task = await run(source, out)
    try:
        await until(lambda: runner.stats.state == "ok" and source._client is not None)
        client = source._client
        assert client is not None and client._monitor_server_task is not None
        # asyncua's check_connection awaits this task; once cancelled it raises CancelledError
        # into our read although nobody cancelled the collector.
        client._monitor_server_task.cancel()
        await until(lambda: runner.stats.reconnects >= 1 and runner.stats.state == "ok")
        assert not task.done()
        assert "CancelledError" in runner.stats.last_error
    finally:
        await stop(task)


async def test_a_heartbeat_that_stops_marks_every_tag_bad_until_it_moves_again(ua_plant: UaPlant) -> None:
    out = Collected()
    beat = ua_plant.nodes[19]
    source = OpcUaSource(device(ua_plant, heartbeat={"node": "s=T19.PV", "max_age_s": 0.8}), points(5))
    runner, task = await run(source, out)
    beating = True

    async def plc() -> None:
        n = 0
        while True:
            if beating:
                n += 1
                await beat.write_value(float(n))
            await asyncio.sleep(0.1)

    counter = asyncio.create_task(plc())
    try:
        await until(lambda: all((out.latest(i) or (0, 0, 0.0, 0))[3] == Quality.GOOD for i in range(5)))
        assert runner.up
        beating = False  # the PLC behind the gateway dies; the session stays
        await until(
            lambda: all((out.latest(i) or (0, 0, 0.0, 0))[3] == Quality.BAD_COMM_FAILURE for i in range(5))
        )
        assert np.isnan(out.latest(2)[2])  # type: ignore[index]
        assert not runner.up and runner.health().devices == {"dcs": False}
        assert runner.stats.state == "ok" and runner.stats.reconnects == 0  # the link itself is fine
        beating = True
        # tags 0-4 never change: they come back through a fresh read, not a notification
        await until(lambda: all((out.latest(i) or (0, 0, 0.0, 0))[3] == Quality.GOOD for i in range(5)))
        assert out.latest(2)[2] == 2.0  # type: ignore[index]
        assert runner.up
    finally:
        counter.cancel()
        await asyncio.gather(counter, return_exceptions=True)
        await stop(task)


async def test_without_a_heartbeat_max_silence_trips_on_values_that_never_change(ua_plant: UaPlant) -> None:
    out = Collected()
    source = OpcUaSource(device(ua_plant, max_silence_s=1.0), points(4))
    runner, task = await run(source, out)
    try:
        await until(lambda: all((out.latest(i) or (0, 0, 0.0, 0))[3] == Quality.GOOD for i in range(4)))
        await until(
            lambda: all((out.latest(i) or (0, 0, 0.0, 0))[3] == Quality.BAD_COMM_FAILURE for i in range(4))
        )
        assert not runner.up
        await ua_plant.nodes[1].write_value(-5.0)  # somebody measures again
        await until(lambda: all((out.latest(i) or (0, 0, 0.0, 0))[3] == Quality.GOOD for i in range(4)))
        assert out.latest(1)[2] == -5.0 and out.latest(3)[2] == 3.0  # type: ignore[index]
    finally:
        await stop(task)


async def test_a_failed_read_of_one_polling_chunk_marks_only_that_chunks_tags(ua_plant: UaPlant) -> None:
    assert ua_plant.server is not None
    service = ua_plant.server.iserver.attribute_service
    read = service.read
    refused = ua.NodeId.from_string(f"ns={await ua_plant.server.get_namespace_index(NS_URI)};s=T7.PV")

    def overloaded(params: ua.ReadParameters) -> list[ua.DataValue]:
        if any(rv.NodeId == refused for rv in params.NodesToRead):
            raise ServiceError(ua.StatusCodes.BadTooManyOperations)
        return read(params)

    service.read = overloaded
    out = Collected()
    source = OpcUaSource(device(ua_plant, mode="POLLING"), points(20), chunk=5)
    runner, task = await run(source, out)
    try:
        await until(lambda: {r[0] for r in out.rows()} == set(range(20)))
        await until(lambda: runner.stats.reads >= 3)
        assert {out.latest(i)[3] for i in range(5, 10)} == {int(Quality.BAD)}  # type: ignore[index]
        assert all(out.latest(i)[3] == Quality.GOOD for i in [*range(5), *range(10, 20)])  # type: ignore[index]
        assert runner.stats.errors == 0 and runner.stats.state == "ok"
        assert source.chunk_errors >= 3 and runner.health().request_errors == source.chunk_errors
    finally:
        await stop(task)
