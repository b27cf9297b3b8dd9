"""Alarm events over MQTT 5 (paho-mqtt): each event as JSON, QoS 1, on
``<prefix>/<enterprise>/<hazard_source>/alarm/<tag-or-interlock>``, the alarm's state after it retained on
``.../state``; ``send`` returns after the broker's PUBACK for both: "sent" means the broker has it.

One daemon thread per notifier drives paho's ``client.loop`` and does all socket I/O (not ``loop_start``:
its reconnect delay has no jitter, and plants losing one bureau broker must not return in step). PUBACKs
reach asyncio by ``call_soon_threadsafe``: futures are touched on the event loop only, no lock under paho's.
Not connected, connection lost, no PUBACK in ``puback_timeout_s`` → RetryableError; over the broker's
Maximum Packet Size or ``max_payload_bytes``, a PUBACK failure reason (not authorised), a bad topic segment
→ PermanentError. At least once (paho resends an unacked publish after a reconnect): consumers deduplicate
on ``idempotency_key``. Topic segments are refused, never mapped (``A/B`` mapped would share ``A_B``'s
topic): empty, ``+``, ``#``, ``/``, NUL or another C0 control, a leading ``$`` (broker topics, ``$SYS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from alarms.notify import (
    Message,
    NotifierConfigError,
    PermanentError,
    Receipt,
    RetryableError,
    read_secret,
)
from alarms.notify.mqtt_topics import alarm_topic, check_prefix, documents, packet_bytes
from core.backoff import Backoff

__all__ = ["MqttConfig", "MqttNotifier", "alarm_topic"]

log = logging.getLogger(__name__)

PROVIDER = "mqtt"


@dataclass(frozen=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = "hazardwatch-notify"
    topic_prefix: str = "hazardwatch"  # a target's address (Message.recipient) replaces it when given
    username: str = ""
    password_env: str = ""  # e.g. HW_MQTT_PASSWORD (or HW_MQTT_PASSWORD_FILE); "" = no password
    ca_file: str = ""  # TLS when set; cert_file/key_file add a client certificate
    cert_file: str = ""
    key_file: str = ""
    keepalive_s: int = 30
    connect_timeout_s: float = 5.0
    puback_timeout_s: float = 10.0
    max_payload_bytes: int = 256 * 1024  # our own cap; the broker's Maximum Packet Size applies too
    reconnect: Backoff = field(default_factory=lambda: Backoff(0.5, 30.0, jitter=0.5, spread="below"))


class MqttNotifier:
    """``Notifier`` publishing alarm events to one broker; ``start`` connects, ``aclose`` disconnects."""

    # a message sent again carries the same event id (the idempotency key): subscribers deduplicate
    idempotent = True

    def __init__(self, config: MqttConfig, *, env: Mapping[str, str] | None = None) -> None:
        if not config.host.strip() or not 0 < config.port < 65536:
            raise NotifierConfigError(f"{PROVIDER}: {config.host!r}:{config.port} is not a broker address")
        for setting in ("connect_timeout_s", "puback_timeout_s", "max_payload_bytes", "keepalive_s"):
            if getattr(config, setting) <= 0:
                raise NotifierConfigError(f"{PROVIDER}: {setting} must be positive")
        try:
            check_prefix(config.topic_prefix)
        except ValueError as exc:
            raise NotifierConfigError(f"{PROVIDER}: topic_prefix: {exc}") from None
        if bool(config.cert_file) != bool(config.key_file) or (config.cert_file and not config.ca_file):
            raise NotifierConfigError(f"{PROVIDER}: cert_file and key_file go together, with ca_file")
        self.config = config
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=config.client_id, protocol=mqtt.MQTTv5)
        client.connect_timeout = config.connect_timeout_s
        if config.password_env:
            password = read_secret(f"{PROVIDER}.password", config.password_env, env)
            client.username_pw_set(config.username, password.reveal())
        elif config.username:
            client.username_pw_set(config.username)
        try:
            if config.ca_file:
                client.tls_set(config.ca_file, config.cert_file or None, config.key_file or None)
        except (OSError, ValueError) as exc:  # a file missing or unreadable, a key that does not fit
            raise NotifierConfigError(f"{PROVIDER}: ca_file/cert_file/key_file: {exc}") from None
        client.on_connect, client.on_disconnect = self._on_connect, self._on_disconnect
        self._client, client.on_publish = client, self._on_publish
        # All socket I/O in the network thread: without a register-write hook paho writes from the publishing
        # thread (client.loop_write), racing the loop's own writes; with it, publish only queues and wakes loop.
        client.on_socket_register_write = lambda *_: None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop, self._connected, self._first_attempt = (
            threading.Event(),
            threading.Event(),
            threading.Event(),
        )
        self._attempt, self._down, self._last_refusal = 0, False, ""  # the network thread's
        self._broker_max_packet: int | None = None
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._state_at_us: dict[str, int] = {}  # retained state never goes back in time (a late retry)

    def __repr__(self) -> str:
        return f"MqttNotifier({self.config.host}:{self.config.port}, client_id={self.config.client_id!r})"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self) -> None:
        """Start the network thread; returns after the first connection attempt (connected or not)."""
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._run, name=f"mqtt-{self.config.host}", daemon=True)
            self._thread.start()
        await asyncio.to_thread(self._first_attempt.wait, self.config.connect_timeout_s + 1)

    async def aclose(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    def _run(self) -> None:
        c = self.config
        self._client.connect_async(c.host, c.port, c.keepalive_s)
        while not self._stop.is_set():
            try:
                self._client.reconnect()
                while not self._stop.is_set() and self._client.loop(0.1) == mqtt.MQTT_ERR_SUCCESS:
                    pass
            except Exception as exc:  # OSError: refused, unreachable, TLS; nothing may end this thread
                self._last_refusal = type(exc).__name__
            self._first_attempt.set()
            if not self._down and not self._stop.is_set():  # logged on the transition, not on every attempt
                why = self._last_refusal or "connection lost"
                log.warning("%s %s:%s: not connected (%s); reconnecting", PROVIDER, c.host, c.port, why)
                self._down = True
            self._stop.wait(c.reconnect.delay(self._attempt))
            self._attempt += 1
        self._client.disconnect()
        self._client.loop(0.1)  # writes the DISCONNECT (publish and disconnect only queue) and closes
        self._connected.clear()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._first_attempt.set()
        if reason.is_failure:
            self._last_refusal = f"CONNACK {reason}"  # e.g. "Not authorized": never the credentials
            return
        self._broker_max_packet = getattr(props, "MaximumPacketSize", None)
        self._attempt, self._last_refusal = 0, ""
        self._connected.set()
        if self._down:
            log.info("%s %s:%s: connected again", PROVIDER, self.config.host, self.config.port)
            self._down = False

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._connected.clear()
        self._to_loop(self._fail_waiting)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self._to_loop(self._acked, mid, reason)

    def _to_loop(self, callback: Any, *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                self._loop.call_soon_threadsafe(callback, *args)

    def _acked(self, mid: int, reason: Any) -> None:
        future = self._waiting.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(reason)

    def _fail_waiting(self) -> None:
        waiting, self._waiting = self._waiting, {}
        for future in (f for f in waiting.values() if not f.done()):
            future.set_exception(RetryableError(PROVIDER, "CONNECTION_LOST", "closed before the PUBACK"))

    async def send(self, message: Message) -> Receipt:
        event = message.event
        if event is None:
            raise PermanentError(PROVIDER, "NO_EVENT", "MQTT carries one alarm event; this message has none")
        try:
            topic = alarm_topic(message.recipient or self.config.topic_prefix, event)
        except ValueError as exc:
            raise PermanentError(PROVIDER, "BAD_TOPIC", str(exc)) from None
        body, state = documents(message.idempotency_key, event)
        packets = [(topic, body, False)]
        state_topic = topic + "/state"
        if event.at_us >= self._state_at_us.get(state_topic, event.at_us):
            packets.append((state_topic, state, True))
        if self._thread is None:
            await self.start()
        if not self._connected.is_set():
            why = f" ({self._last_refusal})" if self._last_refusal else ""
            raise RetryableError(PROVIDER, "NOT_CONNECTED", f"{self.config.host}:{self.config.port}{why}")
        limit = min(self.config.max_payload_bytes, self._broker_max_packet or self.config.max_payload_bytes)
        for t, payload, _ in packets:
            if (size := packet_bytes(t, payload)) > limit:
                raise PermanentError(PROVIDER, "PAYLOAD_TOO_LARGE", f"{t}: {size} bytes, at most {limit}")
        loop = asyncio.get_running_loop()
        futures = []
        for t, payload, retain in packets:
            info = self._client.publish(t, payload, qos=1, retain=retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise RetryableError(PROVIDER, "NOT_CONNECTED", f"{t}: {mqtt.error_string(info.rc)}")
            futures.append(self._waiting.setdefault(info.mid, loop.create_future()))
        try:
            async with asyncio.timeout(wait_s := self.config.puback_timeout_s):
                reasons = [await f for f in futures]
        except TimeoutError:
            raise RetryableError(PROVIDER, "TIMEOUT", f"{topic}: no PUBACK within {wait_s} s") from None
        finally:
            for f in futures:  # when one failed, the other's outcome is not waited for
                if not f.cancel() and not f.cancelled():
                    f.exception()  # retrieved: no "exception was never retrieved" at collection
        for (t, _, _), reason in zip(packets, reasons, strict=True):
            if reason.is_failure:
                raise PermanentError(PROVIDER, "REFUSED", f"{t}: the broker refused the publish: {reason}")
        if len(packets) == 2:
            self._state_at_us[state_topic] = event.at_us
        return Receipt(PROVIDER, topic, message.idempotency_key)
