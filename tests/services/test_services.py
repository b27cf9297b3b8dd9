"""The services scripts/services.sh brings up answer the way the project uses them.

Run `bash scripts/services.sh` first; its output lines set the variables below,
whose defaults are the addresses it uses.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from paho.mqtt.client import Client, ConnectFlags, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from psycopg import sql
from psycopg.conninfo import make_conninfo

pytestmark = pytest.mark.services

PG_DSN = os.environ.get("HW_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
TSDB_DSN = os.environ.get("HW_TSDB_DSN", "postgresql://postgres@127.0.0.1:5433/postgres")
MQTT_HOST = os.environ.get("HW_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("HW_MQTT_PORT", "1883"))

TIMEOUT_S = 10


def test_postgres_is_15_or_newer() -> None:
    with psycopg.connect(PG_DSN, connect_timeout=TIMEOUT_S) as conn:
        row = conn.execute("select version(), current_setting('server_version_num')::int").fetchone()
    assert row is not None
    version, version_num = row
    assert version.startswith("PostgreSQL ")
    assert version_num >= 150000, version


@pytest.fixture
def tsdb_scratch_dsn() -> Iterator[str]:
    """A fresh database on the TimescaleDB server, dropped afterwards."""
    name = f"hw_test_tsdb_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(TSDB_DSN, autocommit=True, connect_timeout=TIMEOUT_S) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield make_conninfo(TSDB_DSN, dbname=name)
        finally:
            # FORCE: TimescaleDB's background scheduler may still be connected.
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_timescaledb_hypertable_and_time_bucket(tsdb_scratch_dsn: str) -> None:
    with psycopg.connect(tsdb_scratch_dsn, connect_timeout=TIMEOUT_S) as conn:
        conn.execute("CREATE EXTENSION timescaledb")
        row = conn.execute("select extversion from pg_extension where extname = 'timescaledb'").fetchone()
        assert row is not None
        assert row[0].startswith("2."), row[0]

        conn.execute(
            "create table readings (ts timestamptz not null, tag text not null, value double precision)"
        )
        conn.execute("select create_hypertable('readings', by_range('ts'))")
        row = conn.execute(
            "select count(*) from timescaledb_information.hypertables where hypertable_name = 'readings'"
        ).fetchone()
        assert row == (1,)

        t0 = datetime(2024, 5, 1, 8, 10, tzinfo=UTC)
        t1 = datetime(2024, 5, 1, 8, 50, tzinfo=UTC)
        t2 = datetime(2024, 5, 1, 9, 5, tzinfo=UTC)
        with conn.cursor() as cur:
            cur.executemany(
                "insert into readings (ts, tag, value) values (%s, %s, %s)",
                [(t0, "TT-101", 20.0), (t1, "TT-101", 30.0), (t2, "TT-101", 50.0)],
            )

        row = conn.execute("select ts, value from readings where ts = %s", (t0,)).fetchone()
        assert row == (t0, 20.0)

        buckets = conn.execute(
            "select time_bucket('1 hour', ts) as bucket, count(*), avg(value)"
            " from readings where tag = %s group by bucket order by bucket",
            ("TT-101",),
        ).fetchall()
        assert buckets == [
            (datetime(2024, 5, 1, 8, tzinfo=UTC), 2, 25.0),
            (datetime(2024, 5, 1, 9, tzinfo=UTC), 1, 50.0),
        ]


def test_mosquitto_publish_subscribe_round_trip() -> None:
    token = uuid.uuid4().hex
    topic = f"hazardwatch/test/services/{token}"
    payload = f"round-trip {token}".encode()

    subscribed = threading.Event()
    received = threading.Event()
    messages: list[MQTTMessage] = []
    connect_codes: list[ReasonCode] = []

    def on_connect(
        client: Client,
        userdata: object,
        flags: ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        connect_codes.append(reason_code)
        if not reason_code.is_failure:
            client.subscribe(topic, qos=1)

    def on_subscribe(
        client: Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        subscribed.set()

    def on_message(client: Client, userdata: object, message: MQTTMessage) -> None:
        messages.append(message)
        received.set()

    subscriber = Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"hw-test-sub-{token}")
    subscriber.on_connect = on_connect
    subscriber.on_subscribe = on_subscribe
    subscriber.on_message = on_message
    publisher = Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"hw-test-pub-{token}")

    subscriber.connect(MQTT_HOST, MQTT_PORT, keepalive=30)
    subscriber.loop_start()
    try:
        assert subscribed.wait(TIMEOUT_S), f"no SUBACK within {TIMEOUT_S}s (CONNACK: {connect_codes})"

        publisher.connect(MQTT_HOST, MQTT_PORT, keepalive=30)
        publisher.loop_start()
        try:
            info = publisher.publish(topic, payload, qos=1)
            info.wait_for_publish(timeout=TIMEOUT_S)
            assert info.is_published(), "no PUBACK for the QoS 1 publish"
        finally:
            publisher.disconnect()
            publisher.loop_stop()

        assert received.wait(TIMEOUT_S), f"message not delivered within {TIMEOUT_S}s"
    finally:
        subscriber.disconnect()
        subscriber.loop_stop()

    assert len(messages) == 1
    assert messages[0].topic == topic
    assert messages[0].payload == payload
    assert messages[0].qos == 1
