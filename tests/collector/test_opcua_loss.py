"""OPC UA loss detection against a real asyncua server: a dead server, a silent link, a
library that raises CancelledError, a gateway whose PLC stops, one failing polling chunk."""

from __future__ import annotations

import asyncio
import logging
import sys
from asyncio.subprocess import DEVNULL, PIPE
from pathlib import Path

import numpy as np
import pytest
from asyncua import ua
from asyncua.common.utils import ServiceError

from collector.opcua.source import MIN_PUBLISH_WATCHDOG_S, OpcUaSource, status_text
from core.errors import SourceError
from core.plant import OpcUaDevice
from core.quality import Quality
from tests.collector.test_opcua_source import Collected, device, points, run, stop
from tests.support.proxy import TcpProxy
from tests.support.servers import NS_URI, UaPlant, free_port
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]


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
        await eventually(lambda: runner.stats.state == "ok" and out.latest(7) is not None)
        proc.kill()
        died = loop.time()
        await proc.wait()
        await eventually(lambda: runner.stats.state == "failed")
        detected_s = loop.time() - died
        # 2 publishing intervals (0.5 s), with generous room for a busy machine; asyncua's own
        # check needs its request timeout_s (5 s) to notice.
        assert detected_s < 2 * interval + 1.5, detected_s
        proc = await ua_server_process(port)
        await eventually(lambda: runner.stats.state == "ok")
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
    proxy = TcpProxy(ua_plant.port)  # frozen below: a silent cable
    await proxy.start()
    out = Collected()
    interval = 0.25
    endpoint = f"opc.tcp://127.0.0.1:{proxy.port}/hw"
    source = OpcUaSource(device(ua_plant, endpoint=endpoint, interval_s=interval, timeout_s=5.0), points(5))
    runner, task = await run(source, out)
    loop = asyncio.get_running_loop()
    try:
        await eventually(lambda: runner.stats.state == "ok" and out.latest(3) is not None)
        reads = runner.stats.reads
        await eventually(lambda: runner.stats.reads >= reads + 3)  # keep-alives only: values do not change
        assert runner.stats.state == "ok"  # quiet values are not a dead server
        proxy.frozen = True
        frozen_at = loop.time()
        await eventually(lambda: runner.stats.state == "failed")
        # 2 publishing intervals, but never less than the floor; asyncua's own check needs timeout_s + 1 s
        assert loop.time() - frozen_at < max(2 * interval, MIN_PUBLISH_WATCHDOG_S) + 1.5
        assert "no publish response" in runner.stats.last_error
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
        await eventually(lambda: runner.stats.state == "ok" and source._client is not None)
        client = source._client
        assert client is not None and client._monitor_server_task is not None
        # asyncua's check_connection awaits this task; once cancelled it raises CancelledError
        # into our read although nobody cancelled the collector.
        client._monitor_server_task.cancel()
        await eventually(lambda: runner.stats.reconnects >= 1 and runner.stats.state == "ok")
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
        await eventually(lambda: all((out.latest(i) or (0, 0, 0.0, 0))[3] == Quality.GOOD for i in range(5)))
        assert runner.up
        beating = False  # the PLC behind the gateway dies; the session stays
        await eventually(
            lambda: all((out.latest(i) or (0, 0, 0.0, 0))[3] == Quality.BAD_COMM_FAILURE for i in range(5))
        )
        assert np.isnan(out.latest(2)[2])  # type: ignore[index]
        assert not runner.up and runner.health().devices == {"dcs": False}
        assert runner.stats.state == "ok" and runner.stats.reconnects == 0  # the link itself is fine
        beating = True
        # tags 0-4 never change: they come back through a fresh read, not a notification
        await eventually(lambda: all((out.latest(i) or (0, 0, 0.0, 0))[3] == Quality.GOOD for i in range(5)))
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
        await eventually(lambda: all((out.latest(i) or (0, 0, 0.0, 0))[3] == Quality.GOOD for i in range(4)))
        await eventually(
            lambda: all((out.latest(i) or (0, 0, 0.0, 0))[3] == Quality.BAD_COMM_FAILURE for i in range(4))
        )
        assert not runner.up
        await ua_plant.nodes[1].write_value(-5.0)  # somebody measures again
        await eventually(lambda: all((out.latest(i) or (0, 0, 0.0, 0))[3] == Quality.GOOD for i in range(4)))
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
        await eventually(lambda: {r[0] for r in out.rows()} == set(range(20)))
        await eventually(lambda: runner.stats.reads >= 3)
        assert {out.latest(i)[3] for i in range(5, 10)} == {int(Quality.BAD)}  # type: ignore[index]
        assert all(out.latest(i)[3] == Quality.GOOD for i in [*range(5), *range(10, 20)])  # type: ignore[index]
        assert runner.stats.errors == 0 and runner.stats.state == "ok"
        assert source.chunk_errors >= 3 and runner.health().request_errors == source.chunk_errors
    finally:
        await stop(task)


async def test_a_subscription_the_server_dropped_fails_although_the_session_still_answers(
    ua_plant: UaPlant,
) -> None:
    assert ua_plant.server is not None
    out = Collected()
    source = OpcUaSource(device(ua_plant), points(3))
    runner, task = await run(source, out)
    loop = asyncio.get_running_loop()
    try:
        service = ua_plant.server.iserver.subscription_service
        await eventually(lambda: runner.stats.state == "ok" and bool(service.subscriptions))
        # The server forgets the subscription; its session (and so the ServerState Read) still answers.
        await service.delete_subscriptions(list(service.subscriptions))
        dropped_at = loop.time()
        await eventually(lambda: runner.stats.state == "failed")
        assert loop.time() - dropped_at < MIN_PUBLISH_WATCHDOG_S + 3.0
        assert "no publish response" in runner.stats.last_error
        assert all(out.latest(i)[3] == Quality.BAD_COMM_FAILURE for i in range(3))  # type: ignore[index]
    finally:
        await stop(task)


async def test_a_publish_loop_that_ended_fails_the_source(ua_plant: UaPlant) -> None:
    source = OpcUaSource(device(ua_plant), points(2))
    await source.open()
    try:
        client = source._client
        assert client is not None and client.uaclient._publish_task is not None
        # What asyncua's loop does on BadNoSubscription or subscription id 0: it returns, silently.
        client.uaclient._publish_task.cancel()
        await asyncio.gather(client.uaclient._publish_task, return_exceptions=True)
        client.uaclient._publish_task = asyncio.get_running_loop().create_future()
        client.uaclient._publish_task.set_result(None)
        with pytest.raises(SourceError, match="publish loop ended"):
            await source.read()
    finally:
        await source.close()


def test_the_publish_watchdog_has_a_floor() -> None:
    fast = OpcUaDevice.model_validate(
        {"protocol": "OPCUA", "id": "dcs", "endpoint": "opc.tcp://127.0.0.1:4840", "interval_s": 0.01}
    )
    assert OpcUaSource(fast, points(1))._watchdog_s() == MIN_PUBLISH_WATCHDOG_S
    slow = fast.model_copy(update={"interval_s": 5.0})
    assert OpcUaSource(slow, points(1))._watchdog_s() == 10.0  # 2 publishing intervals


async def test_an_unknown_heartbeat_node_is_logged_and_trips_liveness_not_the_connection(
    ua_plant: UaPlant, caplog: pytest.LogCaptureFixture
) -> None:
    out = Collected()
    source = OpcUaSource(device(ua_plant, heartbeat={"node": "s=NoSuch.Beat", "max_age_s": 0.5}), points(3))
    runner, task = await run(source, out)
    try:
        await eventually(
            lambda: all((out.latest(i) or (0, 0, 0.0, 0))[3] == Quality.BAD_COMM_FAILURE for i in range(3))
        )
        assert runner.stats.reconnects == 0 and runner.stats.state == "ok"  # the session is fine
        assert not runner.up and runner.health().devices == {"dcs": False}
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any("heartbeat s=NoSuch.Beat" in m and "BadNodeIdUnknown" in m for m in errors), errors
    finally:
        await stop(task)


async def test_an_unreadable_heartbeat_in_polling_mode_is_an_error_logged_once(
    ua_plant: UaPlant, caplog: pytest.LogCaptureFixture
) -> None:
    out = Collected()
    hb = {"node": "s=NoSuch.Beat", "max_age_s": 0.5}
    source = OpcUaSource(device(ua_plant, mode="POLLING", heartbeat=hb), points(2))
    runner, task = await run(source, out)
    try:
        await eventually(lambda: runner.stats.reads >= 3)
        errors = [r.getMessage() for r in caplog.records if "reading heartbeat" in r.getMessage()]
        assert len(errors) == 1 and "s=NoSuch.Beat" in errors[0]
        assert (
            caplog.records[[r.getMessage() for r in caplog.records].index(errors[0])].levelno == logging.ERROR
        )
    finally:
        await stop(task)


class _Node:
    def __init__(self, nodeid: ua.NodeId) -> None:
        self.nodeid = nodeid


class _Item:
    def __init__(self, value: ua.DataValue) -> None:
        self.monitored_item = self
        self.Value = value


def _notify(source: OpcUaSource, nodeid: ua.NodeId, value: object, status: int = 0) -> None:
    dv = ua.DataValue(ua.Variant(value), StatusCode_=ua.StatusCode(status))
    source.datachange_notification(_Node(nodeid), value, _Item(dv))  # type: ignore[arg-type]


@pytest.mark.parametrize("heartbeat", [False, True])
def test_bad_or_non_finite_values_are_no_sign_of_life(heartbeat: bool) -> None:
    kw: dict[str, object] = (
        {"heartbeat": {"node": "s=T0.PV", "max_age_s": 1}} if heartbeat else {"max_silence_s": 1}
    )
    dev = OpcUaDevice.model_validate(
        {"protocol": "OPCUA", "id": "dcs", "endpoint": "opc.tcp://127.0.0.1:4840", **kw}
    )
    source = OpcUaSource(dev, points(1))
    nodeid = ua.NodeId.from_string("ns=2;s=T0.PV")
    source._index_of[nodeid] = 0
    if heartbeat:
        source._heartbeat_node = _Node(nodeid)  # type: ignore[assignment]
    _notify(source, nodeid, 1.0)  # the first notification of a new subscription
    for value, status in [
        (None, ua.StatusCodes.BadSensorFailure),
        (1.0, 0),
        (float("nan"), 0),
        (1.0, 0),
        (2.0, ua.StatusCodes.BadCommunicationError),
        (1.0, 0),
    ]:
        _notify(source, nodeid, value, status)
        assert source._sign is False, (value, status)
    _notify(source, nodeid, 2.0)
    assert source._sign is True  # a real change still counts


async def test_a_stop_that_asyncua_turns_into_an_error_ends_the_poll(ua_plant: UaPlant) -> None:
    source = OpcUaSource(device(ua_plant, mode="POLLING"), points(10), chunk=5)
    await source.open()
    reads: list[int] = []
    started = asyncio.Event()

    async def swallowing(client: object, nodes: list[object]) -> list[ua.DataValue]:
        reads.append(len(nodes))
        started.set()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            raise ua.UaError("request cancelled") from None  # what a library may make of our cancel
        return []

    source._read_chunk = swallowing  # type: ignore[method-assign]
    try:
        task = asyncio.create_task(source.read())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert reads == [5]  # the second chunk was not read after the stop
    finally:
        await source.close()


async def test_a_heartbeat_that_is_also_a_tag_is_monitored_once(ua_plant: UaPlant) -> None:
    out = Collected()
    source = OpcUaSource(device(ua_plant, heartbeat={"node": "s=T1.PV", "max_age_s": 60}), points(3))
    runner, task = await run(source, out)
    try:
        await eventually(lambda: runner.stats.state == "ok" and out.latest(1) is not None)
        await ua_plant.nodes[1].write_value(77.0)
        await eventually(lambda: (out.latest(1) or (0, 0, 0.0, 0))[2] == 77.0)
        await asyncio.sleep(0.5)  # a second notification of the same change would have come by now
        assert [r[2] for r in out.rows(1)].count(77.0) == 1
    finally:
        await stop(task)
