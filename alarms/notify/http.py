"""What the HTTP channels share (SMS gateways, webhook): one POST straight on the transport, its
transport failures as ``RetryableError``; and ``HttpNotifier``, which owns or shares a transport
and wraps the channel's ``_send`` so a failure is logged at DEBUG only (the dispatcher stage that
decides what to do logs it once).

Straight on the transport, not through ``httpx.AsyncClient``: the client logs every request's URL
at INFO, and a URL may hold a phone number and the alarm text (Aliyun) or a receiver's token
(webhook). Nothing here quotes the URL; ``where`` is what an error may name instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import httpx

from alarms.notify import Message, NotifierConfigError, PermanentError, Receipt, RetryableError

__all__ = ["HttpNotifier", "post"]

log = logging.getLogger(__name__)


async def post(
    transport: httpx.AsyncBaseTransport,
    provider: str,
    url: str | httpx.URL,
    headers: Mapping[str, str],
    body: bytes,
    timeout_s: float,
    where: str = "",
) -> tuple[httpx.Response, bytes]:
    """POST once: the response and its body. A timeout or a transport failure raises RetryableError
    (``where``, e.g. the receiver's origin, prefixes its detail)."""
    request = httpx.Request(
        "POST", url, headers=dict(headers), content=body,
        extensions={"timeout": httpx.Timeout(timeout_s).as_dict()},
    )  # fmt: skip
    prefix = f"{where}: " if where else ""
    try:
        response = await transport.handle_async_request(request)
        try:
            content = await response.aread()
        finally:
            await response.aclose()
    except httpx.TimeoutException as exc:
        raise RetryableError(
            provider, "TIMEOUT", f"{prefix}no answer within {timeout_s} s ({type(exc).__name__})"
        ) from None
    except httpx.TransportError as exc:
        raise RetryableError(provider, "CONNECTION", f"{prefix}{type(exc).__name__}") from None
    return response, content


class HttpNotifier:
    """A channel's transport (its own, closed by ``aclose``, or one shared with other notifiers and
    left open), its timeout check, and ``send`` around its ``_send``."""

    def __init__(self, name: str, timeout_s: float, transport: httpx.AsyncBaseTransport | None) -> None:
        if not timeout_s > 0:
            raise NotifierConfigError(f"{name}: timeout_s must be positive")
        self._transport = transport or httpx.AsyncHTTPTransport()
        self._own_transport = transport is None

    async def aclose(self) -> None:
        if self._own_transport:
            await self._transport.aclose()

    async def send(self, message: Message) -> Receipt:
        try:
            return await self._send(message)
        except (RetryableError, PermanentError) as exc:
            log.debug("%s", exc)
            raise

    async def _send(self, message: Message) -> Receipt:
        raise NotImplementedError
