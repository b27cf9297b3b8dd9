"""OpcUaSource: one OPC UA endpoint, by subscription (default) or by polling.

Node ids are configured as identifier + namespace URI and resolved to indexes at every
connect, because servers renumber namespaces when they restart. Monitored items are
created in chunks (thousands per subscription work); the data-change callback only
appends to a bounded buffer (it never blocks the subscription), and read() turns that
buffer into one ReadingBatch. Status codes become quality bytes, never dropped. A node
the server does not know yields BAD|CONFIG_ERROR rows, not a crash loop. The runner
rebuilds client, session and subscription after any connection loss.

Secured endpoints (Basic256Sha256, Sign or SignAndEncrypt) use our own client certificate
(``pki``) and accept exactly the configured server certificate, checked against what the
server advertises before any credentials go out. Passwords never reach a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from asyncua import Client, Node, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography.hazmat.primitives import serialization

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
MAX_BUFFERED = 200_000  # notifications held between reads; the oldest go first past this
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


def points_for_device(plant: Plant, registry: TagRegistry, device: OpcUaDevice) -> list[OpcUaPoint]:
    out = []
    for i, tag in enumerate(registry.tags):
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
    ) -> None:
        self.device = device
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

    @property
    def streaming(self) -> bool:
        return self.device.mode == OpcUaMode.SUBSCRIPTION

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

    async def _subscribe(self, client: Client) -> None:
        d = self.device
        sub = await client.create_subscription(d.interval_s * 1000, self)
        points = {p.index: p for p in self.points}
        now = self.clock.now_us()
        unknown = 0
        for start in range(0, len(self._nodes), CHUNK):
            chunk = self._nodes[start : start + CHUNK]
            idx = self._good[start : start + CHUNK]
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
        if client is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.device.timeout_s):
                    await client.disconnect()

    # --- asyncua subscription handler (called on the event loop; never blocks) ---------

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        index = self._index_of.get(node.nodeid)
        if index is None:
            return
        self._buffer.append(self._row(index, data.monitored_item.Value, val))
        if len(self._buffer) > MAX_BUFFERED:
            self._buffer.popleft()
            self.dropped += 1
        self._wake.set()

    def status_change_notification(self, status: Any) -> None:
        self._failure = f"subscription status {status}"
        self._wake.set()

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
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.5, 2 * self.interval_s)):
                        await self._wake.wait()
            await self._check(client)
            while self._buffer:
                rows.append(self._buffer.popleft())
        else:
            rows += await self._poll(client)
        return ReadingBatch.from_rows(rows) if rows else ReadingBatch.empty()

    async def _check(self, client: Client) -> None:
        if self._failure is not None:
            raise SourceError(f"{self.name}: {self._failure}")
        try:
            await client.check_connection()
        except Exception as exc:  # asyncua re-raises whatever killed its keep-alive task
            raise SourceError(f"{self.name}: connection lost: {_why(exc)}") from exc

    async def _poll(self, client: Client) -> list[tuple[int, int, float, int]]:
        rows = []
        try:
            for start in range(0, len(self._nodes), CHUNK):
                params = ua.ReadParameters()
                # asyncua's read_attributes asks for the source timestamp only, and servers
                # that honour that leave SERVER (and the SOURCE fallback) nothing to use.
                params.TimestampsToReturn = ua.TimestampsToReturn.Both
                for node in self._nodes[start : start + CHUNK]:
                    rv = ua.ReadValueId()
                    rv.NodeId = node.nodeid
                    rv.AttributeId = ua.AttributeIds.Value
                    params.NodesToRead.append(rv)
                values = await client.uaclient.read(params)
                for i, dv in zip(self._good[start : start + CHUNK], values, strict=True):
                    rows.append(self._row(i, dv, dv.Value.Value if dv.Value is not None else None))
        except (OSError, TimeoutError, ua.UaError, ConnectionError) as exc:
            raise SourceError(f"{self.name}: read failed: {_why(exc)}") from exc
        return rows
