"""OpcUaSource: one OPC UA endpoint, by subscription (default) or by polling.

Node ids are configured as identifier + namespace URI and resolved to indexes at every
connect, because servers renumber namespaces when they restart. Monitored items are
created in chunks (thousands per subscription work); the data-change callback only
appends to a bounded buffer (it never blocks the subscription), and read() turns that
buffer into one ReadingBatch. Status codes become quality bytes, never dropped. A node
the server does not know yields BAD|CONFIG_ERROR rows, not a crash loop. The runner
rebuilds client, session and subscription after any connection loss.

A dead server or subscription is noticed within ``publish_watchdog_intervals`` publishing
intervals (never less than MIN_PUBLISH_WATCHDOG_S, so an event-loop stall does not fail every
subscription at once): the subscription asks for a keep-alive every interval, and only a
publish response (data or keep-alive) resets the publish timer. When one interval passes
without one, a Read of ServerState checks the session (its failure fails the source, its
answer does not count as publishing: a server can keep the session but lose the
subscription); asyncua's publish loop ending (it stops silently on BadNoSubscription) fails
the source too; a closed socket is seen at the next wake-up. Status codes are logged by
name. A failed Read of one polling chunk marks only that chunk's tags. A heartbeat node or
``max_silence_s`` (collector/liveness.py) tells "unchanged" from "nobody is measuring" behind
a gateway that keeps its session: only Good, finite values count as signs of life.

Secured endpoints (Basic256Sha256, Sign or SignAndEncrypt) use our own client certificate
(``pki``) and accept exactly the configured server certificate, checked against what the
server advertises before any credentials go out. Passwords never reach a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from asyncua import Client, Node, ua
from asyncua.client.ua_client import UASocketProtocol
from asyncua.common.subscription import Subscription
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography.hazmat.primitives import serialization

from collector.base import SourceHealth, cancelled_by_us
from collector.liveness import Liveness
from collector.opcua.pki import (
    ClientIdentity,
    client_identity,
    first_certificate,
    read_certificate,
    thumbprint,
)
from core.batch import ReadingBatch
from core.clock import Clock, SystemClock
from core.errors import SourceError
from core.plant import OpcUaDevice, OpcUaMode, Plant, SecurityMode, SecurityPolicy, TimestampSource
from core.quality import Quality, from_opcua_status
from core.registry import TagRegistry

__all__ = ["OpcUaPoint", "OpcUaSource", "points_for_device"]

log = logging.getLogger(__name__)

CHUNK = 500  # monitored items / reads per request: avoids BadTcpMessageTooLarge on big servers
HEARTBEAT = -1  # the index of the heartbeat node: read, never emitted as a reading
MAX_BUFFERED = 200_000  # notifications held between reads; the oldest go first past this
# The publish watchdog's floor: a busy event loop (thousands of BAD edges) can delay every
# publish response by a second or more; that must not fail all subscriptions at once.
MIN_PUBLISH_WATCHDOG_S = 2.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MODES = {
    SecurityMode.SIGN: ua.MessageSecurityMode.Sign,
    SecurityMode.SIGN_AND_ENCRYPT: ua.MessageSecurityMode.SignAndEncrypt,
}
_S = ua.StatusCodes
# Session refusals worth naming: the operator fixes the server's trust list or the credentials.
_UNTRUSTED = {
    _S.BadCertificateUntrusted,
    _S.BadSecurityChecksFailed,  # what many servers answer for an untrusted client certificate
    _S.BadCertificateInvalid,
    _S.BadCertificateUseNotAllowed,
    _S.BadCertificateUriInvalid,
    _S.BadCertificateTimeInvalid,
    _S.BadCertificateRevoked,
}
_REFUSED_USER = {
    _S.BadUserAccessDenied,
    _S.BadIdentityTokenInvalid,
    _S.BadIdentityTokenRejected,
}


@dataclass(frozen=True)
class OpcUaPoint:
    index: int  # dense registry index
    node: str  # "s=T101.LT01", "i=1001"
    namespace_uri: str | None  # None for namespace 0
    deadband: float | None = None  # absolute data-change deadband (the tag's resolution)


def points_for_device(
    plant: Plant, registry: TagRegistry, device: OpcUaDevice, indexes: Iterable[int] | None = None
) -> list[OpcUaPoint]:
    """The points of every tag bound to ``device``; ``indexes`` as in the Modbus one."""
    out = []
    # (no local holding every tag: compile_all reads the failing tag from this frame's locals)
    for i in range(len(registry.tags)) if indexes is None else indexes:
        tag = registry.tags[i]
        src = tag.source
        if src.device == device.id:
            assert src.node is not None
            uri = (
                None
                if src.node.startswith("i=") and not src.namespace_uri
                else (src.namespace_uri or device.namespace_uri)
            )
            out.append(OpcUaPoint(i, src.node, uri, tag.resolution))
    return out


def _us(dt: datetime | None) -> int | None:
    if dt is None or dt.year < 1971:  # OPC UA "no timestamp" is 1601-01-01
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _why(exc: BaseException) -> str:
    # asyncio and asyncua raise some errors (TimeoutError, ConnectionError) with no message.
    return str(exc) or type(exc).__name__


def status_text(status: Any) -> str:
    """A status code by name: ``BadShutdown (0x800C0000): The operation was cancelled ...``."""
    if isinstance(status, ua.StatusChangeNotification):
        status = status.Status
    code = status if isinstance(status, ua.StatusCode) else ua.StatusCode(int(status))
    return f"{code.name} (0x{code.value:08X}): {code.doc}"


class _WatchedSubscription(Subscription):
    """A Subscription that notes every publish response the server sends, keep-alives included."""

    def __init__(self, client: Client, params: ua.CreateSubscriptionParameters, source: OpcUaSource) -> None:
        super().__init__(client.uaclient, params, source)
        self._source = source

    async def publish_callback(self, publish_result: ua.PublishResult) -> None:
        # asyncua also calls this itself, with SequenceNumber 0, to report its own failed
        # keep-alive read (a StatusChangeNotification BadShutdown): not news from the server.
        from_server = publish_result.NotificationMessage.SequenceNumber != 0
        if from_server:
            self._source.heard()
        self._source.from_library = not from_server
        await super().publish_callback(publish_result)


class _RedactUserTokens(logging.Filter):
    """asyncua logs every request at DEBUG; ActivateSession carries the user's password."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(a, ua.ActivateSessionRequest) for a in record.args
        ):
            record.args = tuple(
                "ActivateSessionRequest(<credentials redacted>)"
                if isinstance(a, ua.ActivateSessionRequest)
                else a
                for a in record.args
            )
        return True


def _hide_credentials() -> None:
    proto = logging.getLogger("asyncua.client.ua_client.UASocketProtocol")
    if not any(isinstance(f, _RedactUserTokens) for f in proto.filters):
        proto.addFilter(_RedactUserTokens())


def _alive_value(value: Any, good: bool) -> bool:
    """Can this value prove somebody measures? Only a Good one that is a value (not None/NaN/inf)."""
    if not good or value is None:
        return False
    return not (isinstance(value, float) and not math.isfinite(value))


def _number(v: Any) -> float | None:
    if isinstance(v, bool | int | float) and not isinstance(v, complex):
        return float(v)
    return None


class OpcUaSource:
    def __init__(
        self,
        device: OpcUaDevice,
        points: list[OpcUaPoint],
        clock: Clock | None = None,
        pki_dir: str = "var/pki",
        chunk: int = CHUNK,
    ) -> None:
        self.device = device
        self.chunk = chunk
        self.name = device.id
        self.interval_s = device.interval_s
        self.points = points
        self.tags = np.array([p.index for p in points], dtype=np.int32)
        self.clock = clock or SystemClock()
        self.pki_dir = Path(pki_dir)
        self._client: Client | None = None
        self._nodes: list[Node] = []  # resolved, aligned with ``good``
        self._good: list[int] = []  # dense indexes of resolved points
        self._pending: list[tuple[int, int, float, int]] = []  # rows to emit once (config errors)
        self._buffer: deque[tuple[int, int, float, int]] = deque()
        self._index_of: dict[ua.NodeId, int] = {}
        self._wake = asyncio.Event()
        self._failure: str | None = None
        self._identity: ClientIdentity | None = None  # our certificate, once a secured open made it
        self.dropped = 0  # notifications dropped because read() fell behind
        self.chunk_errors = 0  # polling chunks whose Read failed (the other chunks stood)
        self._failed_chunks: set[int] = set()  # chunk starts failing now (logged once each)
        # Publish watchdog: monotonic time of the last message from the server.
        self._heard_s = 0.0
        self._publish_s = device.interval_s  # revised publishing interval
        self.from_library = False  # the status change being delivered comes from asyncua itself
        # Liveness: heartbeat node, or else any value, must change (collector/liveness.py).
        self.liveness: Liveness | None = None
        self._heartbeat: OpcUaPoint | None = None
        self._heartbeat_node: Node | None = None
        self._heartbeat_value: Any = None
        self._subscription: Subscription | None = None
        self._last_value: dict[int, Any] = {}  # last Good, finite value per tag (max silence)
        self._heartbeat_failing = False  # a failing heartbeat read was logged (polling)
        self._sign = False  # a sign of life arrived since the last read
        hb = device.heartbeat
        if hb is not None:
            uri = (
                None
                if hb.node.startswith("i=") and not hb.namespace_uri
                else (hb.namespace_uri or device.namespace_uri)
            )
            self._heartbeat = OpcUaPoint(HEARTBEAT, hb.node, uri)
            self.liveness = Liveness(self.name, hb.max_age_s, f"heartbeat {hb.node}")
        elif device.max_silence_s is not None:
            self.liveness = Liveness(self.name, device.max_silence_s, "every value")

    @property
    def streaming(self) -> bool:
        return self.device.mode == OpcUaMode.SUBSCRIPTION

    def health(self) -> SourceHealth:
        live = self.liveness is None or not self.liveness.tripped
        return SourceHealth({self.name: live}, self.chunk_errors)

    def heard(self) -> None:
        """The server sent a publish response (data change or keep-alive notification)."""
        self._heard_s = self.clock.monotonic()

    # --- connection ------------------------------------------------------------------

    async def open(self) -> None:
        d = self.device
        client = Client(url=d.endpoint, timeout=d.timeout_s)
        client.application_uri = f"urn:hazardwatch:collector:{d.id}"
        if d.username:
            _hide_credentials()
            client.set_user(d.username)
            client.set_password(d.password or "")
        try:
            if d.security_policy != SecurityPolicy.NONE:
                await self._secure(client)
            await client.connect()  # cleans up after itself when it fails
        except SourceError:
            raise
        except Exception as exc:  # socket, timeout, status and cryptography errors all come through as is
            raise SourceError(self._refusal(exc)) from exc
        self._client = client
        self._failure = None
        try:
            await self._resolve(client)
            if self.streaming:
                await self._subscribe(client)
        except (OSError, TimeoutError, ua.UaError) as exc:
            raise SourceError(f"{self.name}: setting up after connect failed: {_why(exc)}") from exc

    def _refusal(self, exc: Exception) -> str:
        d = self.device
        code = exc.code if isinstance(exc, ua.UaStatusCodeError) else None
        if code in _UNTRUSTED and self._identity is not None:
            return (
                f"{self.name}: {d.endpoint} does not accept our client certificate "
                f"{self._identity.certificate} (thumbprint {self._identity.thumbprint}): "
                f"add it to the server's trusted certificates ({_why(exc)})"
            )
        if code in _REFUSED_USER and d.username:
            return f"{self.name}: {d.endpoint} refused user {d.username!r}: {_why(exc)}"
        return f"{self.name}: cannot connect to {d.endpoint}: {_why(exc)}"

    async def _secure(self, client: Client) -> None:
        d = self.device
        self._identity = ident = client_identity(self.pki_dir, self.name, client.application_uri)
        assert d.server_certificate is not None  # config validation requires it for secured endpoints
        pinned = read_certificate(d.server_certificate, self.name, "server_certificate")
        pinned_der = pinned.public_bytes(serialization.Encoding.DER)
        mode = _MODES.get(d.security_mode, ua.MessageSecurityMode.SignAndEncrypt)
        await self._check_server_certificate(pinned_der, mode)
        # Pinned: asyncua encrypts to this certificate's key and rejects a session from any other.
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            str(ident.certificate),
            str(ident.private_key),
            server_certificate=pinned_der,
            mode=mode,
        )

    async def _check_server_certificate(self, pinned_der: bytes, mode: ua.MessageSecurityMode) -> None:
        """Compare the certificate the server advertises with the pinned one, before any handshake.

        A server holding another key cannot decrypt our OpenSecureChannel and just drops it, so
        without this check the only symptom would be a timeout.
        """
        d = self.device
        probe = Client(url=d.endpoint, timeout=d.timeout_s)
        endpoints = await probe.connect_and_get_server_endpoints()
        offered = [
            ep
            for ep in endpoints
            if ep.SecurityPolicyUri == SecurityPolicyBasic256Sha256.URI and ep.SecurityMode == mode
        ]
        if not offered:
            kinds = sorted(
                {f"{ep.SecurityPolicyUri.rpartition('#')[2]}/{ep.SecurityMode.name}" for ep in endpoints}
            )
            raise SourceError(
                f"{self.name}: {d.endpoint} offers no Basic256Sha256/{mode.name} endpoint "
                f"(it offers {', '.join(kinds) or 'none'})"
            )
        presented = {first_certificate(ep.ServerCertificate or b"") for ep in offered}
        if pinned_der not in presented:
            raise SourceError(
                f"{self.name}: {d.endpoint} presents certificate "
                f"{', '.join(sorted(thumbprint(c) for c in presented if c)) or '(none)'}, not the configured "
                f"server_certificate {d.server_certificate} ({thumbprint(pinned_der)}); refusing to connect"
            )

    async def _resolve(self, client: Client) -> None:
        namespaces = await client.get_namespace_array()
        now = self.clock.now_us()
        self._nodes, self._good, self._pending, self._index_of = [], [], [], {}
        missing: dict[str, list[int]] = {}
        for p in self.points:
            if p.namespace_uri is None:
                ns = 0
            elif p.namespace_uri in namespaces:
                ns = namespaces.index(p.namespace_uri)
            else:
                missing.setdefault(p.namespace_uri, []).append(p.index)
                self._pending.append((p.index, now, float("nan"), Quality.BAD_CONFIG_ERROR))
                continue
            node_id = ua.NodeId.from_string(f"ns={ns};{p.node}")
            self._nodes.append(client.get_node(node_id))
            self._good.append(p.index)
            self._index_of[node_id] = p.index
        for uri, idx in missing.items():
            log.error("%s: server has no namespace %r; %d tag(s) BAD|CONFIG_ERROR", self.name, uri, len(idx))
        self._heartbeat_node = None
        hb = self._heartbeat
        if hb is not None:
            if hb.namespace_uri is not None and hb.namespace_uri not in namespaces:
                log.error(
                    "%s: server has no namespace %r for the heartbeat %s",
                    self.name,
                    hb.namespace_uri,
                    hb.node,
                )
            else:
                ns = 0 if hb.namespace_uri is None else namespaces.index(hb.namespace_uri)
                node_id = ua.NodeId.from_string(f"ns={ns};{hb.node}")
                self._heartbeat_node = client.get_node(node_id)
                self._index_of.setdefault(node_id, HEARTBEAT)

    async def _subscribe(self, client: Client) -> None:
        d = self.device
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=d.interval_s * 1000,
            RequestedLifetimeCount=10000,
            # A keep-alive after every empty publishing interval, so silence means trouble.
            RequestedMaxKeepAliveCount=1,
            MaxNotificationsPerPublish=10000,
            PublishingEnabled=True,
            Priority=0,
        )
        sub = _WatchedSubscription(client, params, self)
        result = await sub.init()
        self._publish_s = max(result.RevisedPublishingInterval / 1000, 0.001)
        self.heard()
        self._subscription = sub
        hb = self._heartbeat_node
        if hb is not None and self._index_of.get(hb.nodeid) == HEARTBEAT:  # a tag's item serves as well
            (res,) = await sub.subscribe_data_change([hb], queuesize=1)
            if isinstance(res, ua.StatusCode):
                # Liveness then trips after max_age_s: the device shows down, with this reason logged.
                log.error(
                    "%s: the server refused heartbeat %s: %s; the device will show down",
                    self.name,
                    self._heartbeat.node if self._heartbeat else hb.nodeid,
                    status_text(res),
                )
        points = {p.index: p for p in self.points}
        now = self.clock.now_us()
        unknown = 0
        for start in range(0, len(self._nodes), self.chunk):
            chunk = self._nodes[start : start + self.chunk]
            idx = self._good[start : start + self.chunk]
            # One request per distinct deadband in the chunk (None = report every change).
            groups: dict[float | None, list[int]] = {}
            for k, i in enumerate(idx):
                groups.setdefault(points[i].deadband, []).append(k)
            for deadband, members in groups.items():
                mfilter = None
                if deadband:
                    mfilter = ua.DataChangeFilter(
                        Trigger=ua.DataChangeTrigger.StatusValue, DeadbandType=1, DeadbandValue=deadband
                    )
                results = await sub._subscribe(
                    [chunk[k] for k in members],
                    ua.AttributeIds.Value,
                    mfilter,
                    d.queue_size,
                    ua.MonitoringMode.Reporting,
                    d.interval_s * 1000,
                )
                for k, res in zip(members, results, strict=True):
                    if isinstance(res, ua.StatusCode):
                        unknown += 1
                        self._pending.append((idx[k], now, float("nan"), from_opcua_status(res.value)))
        if unknown:
            log.error(
                "%s: %d monitored item(s) refused by the server (unknown node ids?); BAD", self.name, unknown
            )

    async def close(self) -> None:
        client, self._client = self._client, None
        self._subscription = None
        if client is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.device.timeout_s):
                    await client.disconnect()

    # --- asyncua subscription handler (called on the event loop; never blocks) ---------

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        index = self._index_of.get(node.nodeid)
        if index is None:
            return
        dv = data.monitored_item.Value
        good = dv.StatusCode is None or dv.StatusCode.is_good()
        hb = self._heartbeat_node
        if hb is not None and node.nodeid == hb.nodeid:
            self._heartbeat_seen(val, good)
            if index == HEARTBEAT:
                return
        if self.liveness is not None and self._heartbeat is None:
            self._value_seen(index, val, good)
        self._buffer.append(self._row(index, dv, val))
        if len(self._buffer) > MAX_BUFFERED:
            self._buffer.popleft()
            self.dropped += 1
        self._wake.set()

    def status_change_notification(self, status: Any) -> None:
        code = status.Status if isinstance(status, ua.StatusChangeNotification) else status
        if isinstance(code, ua.StatusCode) and not code.is_bad():
            log.info("%s: subscription status %s", self.name, status_text(code))
            return
        who = "asyncua's own keep-alive read failed" if self.from_library else "from the server"
        self._failure = f"subscription status {status_text(status)} ({who})"
        self._wake.set()

    def _heartbeat_seen(self, value: Any, good: bool = True) -> None:
        if not _alive_value(value, good):
            return
        if self._heartbeat_value is not None and value != self._heartbeat_value:
            self._sign = True
        self._heartbeat_value = value

    def _value_seen(self, index: int, value: Any, good: bool) -> None:
        """Max silence: a Good, finite value that differs from the last such value of the tag (not
        the first notification a new subscription sends for every item) proves someone measures."""
        if not _alive_value(value, good):
            return
        last = self._last_value.get(index)
        if last is not None and last != value:
            self._sign = True
        self._last_value[index] = value

    # --- reading ---------------------------------------------------------------------

    def _row(self, index: int, dv: ua.DataValue, val: Any) -> tuple[int, int, float, int]:
        gather = self.clock.now_us()
        src, srv = _us(dv.SourceTimestamp), _us(dv.ServerTimestamp)
        match self.device.timestamp_source:
            case TimestampSource.SOURCE:
                ts = src or srv or gather
            case TimestampSource.SERVER:
                ts = srv or src or gather
            case _:
                ts = gather
        status = dv.StatusCode.value if dv.StatusCode is not None else 0
        quality = int(from_opcua_status(status))
        value = _number(val)
        if value is None:
            value, quality = float("nan"), (quality if status else int(Quality.BAD_CONFIG_ERROR))
        return index, ts, value, quality

    async def read(self) -> ReadingBatch:
        client = self._client
        if client is None:
            raise SourceError(f"{self.name}: not open")
        rows, self._pending = self._pending, []
        if self.streaming:
            if not self._buffer:
                self._wake.clear()
                # Wake at least every publishing interval, and at the watchdog deadline.
                left = self._heard_s + self._watchdog_s() - self.clock.monotonic()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.01, min(self._publish_s, left))):
                        await self._wake.wait()
            await self._check(client)
            while self._buffer:
                rows.append(self._buffer.popleft())
        else:
            self._check_socket(client)
            polled = await self._poll(client)
            if self.liveness is not None and self._heartbeat is None:
                for i, _, value, quality in polled:
                    self._value_seen(i, value, quality == Quality.GOOD)
            if self._heartbeat_node is not None:
                await self._read_heartbeat(client)
            rows += polled
        rows = await self._gate(client, rows)
        return ReadingBatch.from_rows(rows) if rows else ReadingBatch.empty()

    async def _gate(
        self, client: Client, rows: list[tuple[int, int, float, int]]
    ) -> list[tuple[int, int, float, int]]:
        """Liveness: while nobody is measuring, every tag is BAD|COMM_FAILURE."""
        if self.liveness is None:
            return rows
        sign, self._sign = self._sign, False
        was_tripped = self.liveness.tripped
        now_us = self.clock.now_us()
        if not self.liveness.observe(self.clock.monotonic(), sign):
            if not self.streaming:
                return [(i, now_us, float("nan"), int(Quality.BAD_COMM_FAILURE)) for i, _, _, _ in rows]
            if was_tripped:
                return []  # marked when it tripped; notifications now are not news
            return [(int(i), now_us, float("nan"), int(Quality.BAD_COMM_FAILURE)) for i in self.tags]
        if was_tripped and self.streaming:
            # Fresh again: tags that did not change since the trip are sent by nobody, so read them all.
            rows += await self._poll(client)
        return rows

    async def _read_heartbeat(self, client: Client) -> None:
        assert self._heartbeat_node is not None
        try:
            self._heartbeat_seen(await self._heartbeat_node.read_value())
        except (ua.UaError, TimeoutError) as exc:
            if cancelled_by_us():
                raise asyncio.CancelledError from exc
            if not self._heartbeat_failing:  # once, until it works again; liveness then trips
                self._heartbeat_failing = True
                code = exc.code if isinstance(exc, ua.UaStatusCodeError) else None
                log.error(
                    "%s: reading heartbeat %s failed: %s; the device will show down",
                    self.name,
                    self._heartbeat.node if self._heartbeat else "?",
                    status_text(code) if code is not None else _why(exc),
                )
            return
        if self._heartbeat_failing:
            self._heartbeat_failing = False
            log.warning("%s: heartbeat reads work again", self.name)

    def _watchdog_s(self) -> float:
        return max(MIN_PUBLISH_WATCHDOG_S, self.device.publish_watchdog_intervals * self._publish_s)

    def _check_socket(self, client: Client) -> None:
        protocol = client.uaclient.protocol
        if protocol is None or protocol.state == UASocketProtocol.CLOSED:
            raise SourceError(f"{self.name}: connection closed by the server or the network")

    async def _check(self, client: Client) -> None:
        if self._failure is not None:
            raise SourceError(f"{self.name}: {self._failure}")
        self._check_socket(client)
        try:
            await client.check_connection()
        except asyncio.CancelledError as exc:
            if cancelled_by_us():
                raise
            # asyncua awaited one of its own tasks that had been cancelled: the client is broken.
            raise SourceError(f"{self.name}: asyncua's connection check raised CancelledError") from exc
        except Exception as exc:  # asyncua re-raises whatever killed its keep-alive task
            raise SourceError(f"{self.name}: connection lost: {_why(exc)}") from exc
        publishing = client.uaclient._publish_task
        if publishing is not None and publishing.done():
            # asyncua ends its publish loop without a word on BadNoSubscription or subscription id 0.
            raise SourceError(
                f"{self.name}: asyncua's publish loop ended (the server dropped the subscription?)"
            )
        await self._watch(client)

    async def _watch(self, client: Client) -> None:
        """Publish watchdog: quiet for one interval, check the session; no publish past the limit, dead.

        The Read only tells whether the session answers: a server that keeps the session but lost
        the subscription answers it, so only a publish response resets the publish timer."""
        now = self.clock.monotonic()
        if now - self._heard_s < self._publish_s:
            return
        left = self._heard_s + self._watchdog_s() - now
        try:
            async with asyncio.timeout(max(0.05, min(left, self.device.timeout_s))):
                await client.nodes.server_state.read_value()  # the session check
        except TimeoutError:
            pass
        except asyncio.CancelledError as exc:
            if cancelled_by_us():
                raise
            raise SourceError(
                f"{self.name}: asyncua raised CancelledError on the session check read"
            ) from exc
        except (OSError, ua.UaError) as exc:
            raise SourceError(
                f"{self.name}: session check (Read of ServerState) failed: {_why(exc)}"
            ) from exc
        for _ in range(10):  # responses already received but not yet handled (a busy loop) count
            await asyncio.sleep(0)
        quiet = self.clock.monotonic() - self._heard_s
        if quiet > self._watchdog_s():
            raise SourceError(
                f"{self.name}: no publish response (data or keep-alive) for {quiet:.1f} s (limit "
                f"{self._watchdog_s():g} s: {self.device.publish_watchdog_intervals:g} publishing intervals "
                f"of {self._publish_s:g} s, at least {MIN_PUBLISH_WATCHDOG_S:g} s)"
            )

    async def _poll(self, client: Client) -> list[tuple[int, int, float, int]]:
        """Read every resolved node, a chunk per request; a failed chunk marks only its tags."""
        rows: list[tuple[int, int, float, int]] = []
        starts = range(0, len(self._nodes), self.chunk)
        failed = 0
        for start in starts:
            idx = self._good[start : start + self.chunk]
            try:
                values = await self._read_chunk(client, self._nodes[start : start + self.chunk])
            except (OSError, ConnectionError) as exc:
                raise SourceError(f"{self.name}: read failed: {_why(exc)}") from exc
            except (TimeoutError, ua.UaError) as exc:
                if cancelled_by_us():  # our stop or watchdog, turned into another error by asyncua
                    raise asyncio.CancelledError from exc
                self._check_socket(client)  # a closed link fails the whole source, not a chunk
                failed += 1
                self.chunk_errors += 1
                code = exc.code if isinstance(exc, ua.UaStatusCodeError) else None
                why = status_text(code) if code is not None else _why(exc)
                if start not in self._failed_chunks:
                    self._failed_chunks.add(start)
                    log.error(
                        "%s: Read of tags %d..%d failed (%s); those %d tags BAD",
                        self.name,
                        start,
                        start + len(idx) - 1,
                        why,
                        len(idx),
                    )
                quality = int(from_opcua_status(code)) if code is not None else int(Quality.BAD_COMM_FAILURE)
                now = self.clock.now_us()
                rows += [(i, now, float("nan"), quality) for i in idx]
                continue
            if start in self._failed_chunks:
                self._failed_chunks.discard(start)
                log.warning("%s: Read of tags %d..%d works again", self.name, start, start + len(idx) - 1)
            for i, dv in zip(idx, values, strict=True):
                rows.append(self._row(i, dv, dv.Value.Value if dv.Value is not None else None))
        if starts and failed == len(starts):
            raise SourceError(f"{self.name}: every Read of the poll failed")
        return rows

    async def _read_chunk(self, client: Client, nodes: list[Node]) -> list[ua.DataValue]:
        params = ua.ReadParameters()
        # asyncua's read_attributes asks for the source timestamp only, and servers
        # that honour that leave SERVER (and the SOURCE fallback) nothing to use.
        params.TimestampsToReturn = ua.TimestampsToReturn.Both
        for node in nodes:
            rv = ua.ReadValueId()
            rv.NodeId = node.nodeid
            rv.AttributeId = ua.AttributeIds.Value
            params.NodesToRead.append(rv)
        try:
            return await client.uaclient.read(params)
        except asyncio.CancelledError as exc:
            if cancelled_by_us():
                raise
            raise SourceError(f"{self.name}: asyncua raised CancelledError on a Read") from exc
