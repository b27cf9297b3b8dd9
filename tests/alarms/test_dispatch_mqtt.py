"""The MQTT channel through the dispatcher and the outbox: a real Mosquitto (private instance) and a
real subscriber; the broker stopped mid-stream and started again loses no alarm event: what could not
be published is retried from the delivery table until the broker acknowledges it (QoS 1)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from alarms.channels import Channels
from alarms.dispatcher import Dispatcher
from alarms.model import Catalog
from alarms.notify.mqtt import MqttConfig, MqttNotifier
from alarms.roster import Rosters
from alarms.routing import compile_routes
from alarms.routing_model import Channel, gas_classes
from core.clock import FakeClock
from core.config import load_plant
from rules.compile import compile_rules
from storage.migrate import Backend
from tests.alarms.notify.test_mqtt import FAST, Subscriber
from tests.alarms.test_dispatcher import T0, Plantside
from tests.support.databases import fetch_all, migrated_db
from tests.support.mosquitto import Mosquitto, mosquitto  # noqa: F401 (the fixture)
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
ROUTES = """
route:
  receiver: bus
  escalation: none
receivers:
  - name: bus
    targets: [{kind: mqtt, address: bureau}]
"""


@pytest.fixture
def dsn() -> Iterator[str]:
    with migrated_db(Backend.POSTGRES) as url:
        yield url


async def test_broker_restarted_mid_stream_loses_no_alarm_event(
    dsn: str,
    mosquitto: Mosquitto,  # noqa: F811
    tmp_path: Path,
) -> None:
    plant = load_plant(ROOT / "config/demo/plant.yaml")
    catalog = Catalog(plant, compile_rules(plant))
    alarms = [a for a in catalog if a.labels.get("tag")][:30]
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES, encoding="utf-8")
    sub = Subscriber(mosquitto.port, "bureau/+/+/alarm/+", "bureau-centre", persistent=True)
    notifier = MqttNotifier(MqttConfig(port=mosquitto.port, puback_timeout_s=1.0, reconnect=FAST))
    clock = FakeClock(T0)
    d = Dispatcher(dsn, compile_routes(routes), Channels({Channel.MQTT: notifier}), Rosters({}, plant), plant,
                   gas_classes(plant), catalog.by_key, clock, registry=None)  # fmt: skip
    side = Plantside(dsn)

    async def round_() -> None:
        clock.advance(5)  # past any retry's backoff
        await d.step()
        await d.drain()

    try:
        for a in alarms[:10]:
            side.event(a, "raised", clock.now_us())
        await round_()
        mosquitto.stop()  # SIGTERM: the broker keeps the subscriber's session on disk
        for a in alarms[10:20]:
            side.event(a, "raised", clock.now_us())
        await round_()
        retrying = await fetch_all(dsn, "SELECT count(*) FROM delivery WHERE state = 'retry'")
        assert retrying[0][0] > 0  # the outage was seen, not skipped
        await asyncio.to_thread(mosquitto.start)
        for a in alarms[20:]:
            side.event(a, "raised", clock.now_us())

        async def all_sent() -> bool:
            await round_()
            rows = await fetch_all(dsn, "SELECT count(*) FROM delivery WHERE state <> 'sent'")
            return rows[0][0] == 0

        async with asyncio.timeout(30):
            while not await all_sent():
                await asyncio.sleep(0.2)
        keys = {r[0] for r in await fetch_all(dsn, "SELECT key FROM delivery")}
        assert len(keys) == 30
        await eventually(lambda: sub.keys() >= keys, timeout=10)
        attempts = await fetch_all(dsn, "SELECT count(*) FROM delivery_attempt WHERE outcome = 'retryable'")
        assert attempts[0][0] > 0
    finally:
        sub.close()
        await d.close()
