"""MqttNotifier against a real Mosquitto (tests/support/mosquitto.py, its own process and port) and real paho
subscribers: events and retained state with Chinese text intact, PUBACK-or-retryable, a broker restarted
mid-stream losing nothing accepted, refusals and oversized packets permanent, passwords never shown."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from alarms.notify import AlarmEvent, Message, NotifierConfigError, PermanentError, RetryableError
from alarms.notify.mqtt import MqttConfig, MqttNotifier
from core.backoff import Backoff
from tests.support.mosquitto import Mosquitto, mosquitto  # noqa: F401 (the fixture)
from tests.support.waiting import eventually

ZH = "某某化工一号罐区 TK-101 液位 二级报警 92.5% 限值 90%，请立即处置并反馈"
FAST = Backoff(0.05, 0.2, jitter=0.5, spread="below")


def event(key: str = "HS1.TK-101.HI", kind: str = "raised", at_us: int = 1, **labels: str) -> AlarmEvent:
    base = {"enterprise": "E1", "hazard_source": "HS1", "tag": "TK-101", "priority": "high"}
    return AlarmEvent(key, kind, "high", tuple({**base, **labels}.items()), ZH, "TK-101 level high", at_us)


def message(n: int = 1, **kw: Any) -> Message:
    return Message("", (), f"idem-{n}", event(**kw))


class Subscriber:
    """A real paho subscriber (QoS 1) on its own loop thread; ``persistent`` keeps its session on the broker."""

    def __init__(self, port: int, topic: str, client_id: str, persistent: bool = False) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = lambda c, u, m: self.messages.append(m)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600 if persistent else 0
        self.client.connect("127.0.0.1", port, 30, clean_start=not persistent, properties=props)
        self.client.loop_start()
        assert self.subscribed.wait(5), "no SUBACK"

    def payloads(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(m.payload.decode("utf-8")) for m in list(self.messages) if m.topic == topic]

    def keys(self) -> set[str]:
        return {
            json.loads(m.payload)["idempotency_key"] for m in list(self.messages) if "/state" not in m.topic
        }

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
async def notifier(mosquitto: Mosquitto) -> Any:  # noqa: F811
    n = MqttNotifier(MqttConfig(port=mosquitto.port, puback_timeout_s=2.0, reconnect=FAST))
    await n.start()
    yield n
    await n.aclose()


@pytest.fixture
def subscribers() -> Iterator[list[Subscriber]]:
    made: list[Subscriber] = []
    yield made
    for s in made:
        s.close()


TOPIC = "hazardwatch/E1/HS1/alarm/TK-101"


async def test_event_and_retained_state_reach_subscribers_in_utf8(
    mosquitto: Mosquitto,  # noqa: F811
    notifier: MqttNotifier,
    subscribers: list[Subscriber],
) -> None:
    live = Subscriber(mosquitto.port, "hazardwatch/#", "live")
    subscribers.append(live)
    receipt = await notifier.send(message(1))
    assert receipt.idempotency_key == "idem-1" and receipt.provider_message_id == TOPIC
    await eventually(lambda: len(live.messages) == 2, timeout=5)
    by_topic = {m.topic: m for m in live.messages}
    assert set(by_topic) == {TOPIC, TOPIC + "/state"} and {m.qos for m in live.messages} == {1}
    assert ZH.encode("utf-8") in by_topic[TOPIC].payload  # as is, not \\u escapes
    body = live.payloads(TOPIC)[0]
    assert body["idempotency_key"] == "idem-1" and body["event"] == "raised" and body["message_zh"] == ZH
    assert body["labels"]["tag"] == "TK-101" and body["at_us"] == 1
    # A late subscriber sees the state retained; after the resolution, NORMAL.
    late = Subscriber(mosquitto.port, TOPIC + "/state", "late-1")
    subscribers.append(late)
    await eventually(lambda: len(late.messages) == 1, timeout=5)
    assert late.messages[0].retain and late.payloads(TOPIC + "/state")[0]["state"] == "ACTIVE"
    await notifier.send(message(2, kind="resolved", at_us=2))
    later = Subscriber(mosquitto.port, TOPIC + "/state", "late-2")
    subscribers.append(later)
    await eventually(lambda: len(later.messages) == 1, timeout=5)
    assert later.payloads(TOPIC + "/state")[0]["state"] == "NORMAL"
    # A retry of the older event publishes the event again but leaves the retained state alone.
    await notifier.send(message(1))
    await eventually(lambda: len(live.messages) == 5, timeout=5)
    last = Subscriber(mosquitto.port, TOPIC + "/state", "late-3")
    subscribers.append(last)
    await eventually(lambda: len(last.messages) == 1, timeout=5)
    assert last.payloads(TOPIC + "/state")[0]["state"] == "NORMAL"


async def test_no_puback_is_retryable_timeout(mosquitto: Mosquitto) -> None:  # noqa: F811
    n = MqttNotifier(MqttConfig(port=mosquitto.port, puback_timeout_s=0.5, reconnect=FAST))
    await n.start()
    assert mosquitto.process is not None
    mosquitto.process.send_signal(signal.SIGSTOP)  # the TCP connection stays open; nothing answers
    try:
        with pytest.raises(RetryableError) as err:
            await n.send(message(1))
        assert err.value.code == "TIMEOUT"
    finally:
        mosquitto.process.send_signal(signal.SIGCONT)
        await n.aclose()


async def test_broker_restart_mid_stream_loses_nothing_accepted(
    mosquitto: Mosquitto,  # noqa: F811
    notifier: MqttNotifier,
    subscribers: list[Subscriber],
) -> None:
    sub = Subscriber(mosquitto.port, "hazardwatch/+/+/alarm/+", "durable", persistent=True)
    subscribers.append(sub)
    accepted: list[str] = []
    outage_errors: list[RetryableError] = []
    for n in range(30):
        if n == 10:
            mosquitto.stop()  # SIGTERM: mosquitto writes its persistence file
        while True:  # the dispatcher's retry stage, in short
            try:
                accepted.append((await notifier.send(message(n, at_us=n))).idempotency_key)
                break
            except RetryableError as exc:
                outage_errors.append(exc)
                if len(outage_errors) == 3:
                    await asyncio.to_thread(mosquitto.start)
                await asyncio.sleep(0.05)
    assert len(outage_errors) >= 3 and {e.code for e in outage_errors} <= {"NOT_CONNECTED", "CONNECTION_LOST"}
    assert len(accepted) == 30
    await eventually(lambda: sub.keys() >= set(accepted), timeout=8)


@pytest.mark.parametrize(
    ("labels", "prefix", "fragment"),
    [
        ({"tag": "TK+101"}, "", "'+'"),
        ({"tag": "TK#101"}, "", "'#'"),
        ({"hazard_source": "HS/1"}, "", "'/'"),
        ({"enterprise": "E\x001"}, "", "'\\x00'"),
        ({"enterprise": ""}, "", "missing or empty"),
        ({"tag": "", "interlock": ""}, "", "'interlock' is missing"),
        ({"hazard_source": "$SYS"}, "", "starts with '$'"),
        ({}, "bureau//x", "topic prefix"),
        ({}, "bureau/+", "'+'"),
    ],
)
async def test_bad_topic_segments_are_refused(labels: dict[str, str], prefix: str, fragment: str) -> None:
    n = MqttNotifier(MqttConfig(port=1, reconnect=FAST))  # never connects: refused before any network
    with pytest.raises(PermanentError) as err:
        await n.send(Message(prefix, (), "k", event(**labels)))
    assert err.value.code == "BAD_TOPIC" and fragment in str(err.value)
    assert n._thread is None
    with pytest.raises(NotifierConfigError, match="topic_prefix"):
        MqttNotifier(MqttConfig(topic_prefix="hazard#watch"))


async def test_interlock_topic_and_summary_without_event(notifier: MqttNotifier) -> None:
    receipt = await notifier.send(Message("bureau/city", (), "k", event(tag="", interlock="HS1.SIS-01")))
    assert receipt.provider_message_id == "bureau/city/E1/HS1/alarm/HS1.SIS-01"
    with pytest.raises(PermanentError, match="NO_EVENT"):
        await notifier.send(Message("", (("text", "汇总"),), "k"))


async def test_refused_publish_and_oversized_packet_are_permanent(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text(
        "topic deny hazardwatch/E1/HS1/alarm/DENIED/#\ntopic deny hazardwatch/E1/HS1/alarm/DENIED\n"
        "topic readwrite #\n"
    )
    broker = Mosquitto(tmp_path, (f"acl_file {acl}", "max_packet_size 2048"))
    broker.start()
    n = MqttNotifier(MqttConfig(port=broker.port, puback_timeout_s=2.0, reconnect=FAST))
    try:
        await n.start()
        await eventually(lambda: n.connected, timeout=5)
        with pytest.raises(PermanentError) as err:
            await n.send(message(1, tag="DENIED"))
        assert err.value.code == "REFUSED" and "authori" in str(err.value).lower()
        big = Message("", (), "k", AlarmEvent("k", "raised", "high", event().labels, "液" * 1000, "", 1))
        with pytest.raises(PermanentError) as err:
            await n.send(big)
        assert err.value.code == "PAYLOAD_TOO_LARGE" and "2048" in str(err.value)
        assert (await n.send(message(2))).provider_message_id == TOPIC  # the connection is still good
    finally:
        await n.aclose()
        broker.stop()


async def test_password_never_in_errors_reprs_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good, wrong = "Pw-g00d-Secr3t", "Pw-wr0ng-Secr3t"
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "bureau", good], check=True)
    broker = Mosquitto(tmp_path, ("allow_anonymous false", f"password_file {passwd}"))
    broker.start()
    shown: list[str] = []
    try:
        for password in (wrong, good):
            config = MqttConfig(
                port=broker.port, username="bureau", password_env="HW_MQTT_PASSWORD", reconnect=FAST
            )
            n = MqttNotifier(config, env={"HW_MQTT_PASSWORD": password})
            shown += [repr(n), str(n.__dict__)]
            await n.start()
            try:
                if password == wrong:
                    with pytest.raises(RetryableError) as err:
                        await n.send(message(1))
                    shown.append(str(err.value))
                    assert err.value.code == "NOT_CONNECTED" and "Not authorized" in str(err.value)
                else:
                    await eventually(lambda n=n: n.connected, timeout=5)
                    await n.send(message(1))
            finally:
                await n.aclose()
    finally:
        broker.stop()
    shown.append(caplog.text)
    assert all(good not in text and wrong not in text for text in shown)


def _certificates(d: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all EC P-256 (fast)."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=hw-test-ca")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "1",
            "-extfile",
            f"{name}.ext",
        )


async def test_tls_with_client_certificate(tmp_path: Path) -> None:
    _certificates(tmp_path)
    tls = (
        f"cafile {tmp_path}/ca.crt",
        f"certfile {tmp_path}/server.crt",
        f"keyfile {tmp_path}/server.key",
        "require_certificate true",
    )
    broker = Mosquitto(tmp_path, tls)
    broker.start()
    ca = str(tmp_path / "ca.crt")
    with_cert = MqttConfig(
        port=broker.port,
        ca_file=ca,
        cert_file=str(tmp_path / "client.crt"),
        key_file=str(tmp_path / "client.key"),
        reconnect=FAST,
    )
    try:
        for config, accepted in (
            (with_cert, True),
            (MqttConfig(port=broker.port, ca_file=ca, reconnect=FAST), False),
        ):
            n = MqttNotifier(config)
            await n.start()
            try:
                if accepted:
                    await eventually(lambda n=n: n.connected, timeout=5)
                    assert (await n.send(message(1))).provider_message_id == TOPIC
                else:
                    with pytest.raises(RetryableError, match="NOT_CONNECTED"):
                        await n.send(message(1))
            finally:
                await n.aclose()
    finally:
        broker.stop()
    with pytest.raises(NotifierConfigError, match="ca_file"):
        MqttNotifier(MqttConfig(ca_file=str(tmp_path / "missing.crt")))


class SpyBackoff(Backoff):
    """FAST's delays, recording each attempt number asked for."""

    def __init__(self) -> None:
        super().__init__(0.05, 0.2, jitter=0.5, spread="below")
        object.__setattr__(self, "_asked", [])

    def delay(self, attempt: int, rng: Any = None) -> float:
        self._asked.append(attempt)  # type: ignore[attr-defined]
        return super().delay(attempt, rng)


async def test_reconnects_through_the_backoff_and_counts_again_after_success(
    mosquitto: Mosquitto,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    spy = SpyBackoff()
    n = MqttNotifier(MqttConfig(port=mosquitto.port, reconnect=spy))
    await n.start()
    try:
        asked: list[int] = spy._asked  # type: ignore[attr-defined]
        runs = []
        for _ in range(2):  # two outages: the attempt counter restarts at 0 after each success
            await eventually(lambda: n.connected, timeout=5)
            before = len(asked)
            mosquitto.stop()
            await eventually(lambda: len(asked) >= before + 3, timeout=5)  # noqa: B023
            mosquitto.start()
            await eventually(lambda: n.connected, timeout=5)
            runs.append(asked[before:])
        assert all(run[:3] == [0, 1, 2] for run in runs), runs
        assert (await n.send(message(1))).provider_message_id == TOPIC
    finally:
        await n.aclose()
    assert n._client.socket() is None  # closed, after a DISCONNECT the loop wrote
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "not connected" in r.getMessage()
    ]
    assert len(warnings) == 2  # once per outage, not once per attempt
