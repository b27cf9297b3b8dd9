"""Webhook: the alarm event as a JSON POST to one configured URL, signed with HMAC-SHA256 (Stripe-style).

The request a receiver gets (verify it like this; tests/alarms/notify/test_webhook.py does, independently)::

    POST <url>
    Content-Type: application/json; charset=utf-8
    Idempotency-Key: <key>                      also in the body; the same on every retry of a message
    X-HazardWatch-Event: raised | reraised | resolved | summary
    X-HazardWatch-Signature: t=<unix seconds>,v1=<64 lowercase hex>

    v1 = hex(HMAC-SHA256(key = the shared secret as UTF-8 bytes,
                         msg = ASCII(str(t)) + b"." + the raw body bytes exactly as received))

A receiver: splits the header on "," and each part on the first "="; recomputes v1 over the raw body (before
any JSON parsing); compares in constant time (``hmac.compare_digest``); refuses when ``|now - t|`` exceeds
its tolerance (5 minutes is usual); and, against a replay inside that window, remembers the Idempotency-Keys
it accepted for at least the tolerance. The body is UTF-8 JSON with Chinese as is (not \\u escapes) and is
the same bytes on every retry of a message; only ``t`` changes.

Invariants: the secret comes from ``read_secret`` and never appears in a log, an error or a repr; the URL
(its path or query may hold a receiver's token, as DingTalk's ``access_token`` does) is shown as its origin
only. A URL with user:password is refused at construction: credentials belong in a secret file, not in the
configuration, and refusing is one check where redacting would be a promise every log line must keep.
Redirects are not followed: a 3xx would send the signed alarm somewhere else, so it is a PermanentError.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from alarms.notify import Message, NotifierConfigError, PermanentError, Receipt, RetryableError, read_secret
from alarms.notify.http import HttpNotifier, post

__all__ = ["SIGNATURE_HEADER", "Webhook", "WebhookConfig", "payload", "sign"]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-HazardWatch-Signature"
MIN_SECRET_CHARS = 16  # shorter keys are guessable offline from one captured request


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    secret_env: str = "HAZARDWATCH_WEBHOOK_SECRET"  # or the file named by $HAZARDWATCH_WEBHOOK_SECRET_FILE
    name: str = "webhook"  # the provider in receipts and errors; name each receiver's webhook apart
    timeout_s: float = 10.0


def payload(message: Message) -> dict[str, Any]:
    """The JSON document for ``message``: deterministic, so that a retry sends the same bytes."""
    ev = message.event
    return {
        "version": 1,
        "idempotency_key": message.idempotency_key,
        "event": None
        if ev is None
        else {
            "alarm_key": ev.alarm_key,
            "event": ev.event,
            "priority": ev.priority,
            "labels": dict(ev.labels),
            "message_zh": ev.message_zh,
            "message_en": ev.message_en,
            "at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ev.at_us // 1_000_000))
            + f".{ev.at_us % 1_000_000:06d}Z",
            "at_us": ev.at_us,
        },
        "params": dict(message.params),
    }


def encode(message: Message) -> bytes:
    return json.dumps(payload(message), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    mac = hmac.new(secret, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def retry_after_s(value: str | None, now: float) -> float | None:
    """Retry-After (RFC 9110 10.2.3) as seconds from now: delay-seconds or an HTTP-date; None if absent
    or unreadable (the dispatcher's own backoff then applies)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


class Webhook(HttpNotifier):
    """``Notifier`` that POSTs each message's alarm event; ``transport`` may be shared with other notifiers."""

    # a message sent again carries the same Idempotency-Key header: receivers deduplicate on it
    idempotent = True

    def __init__(
        self,
        config: WebhookConfig,
        *,
        env: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        name = config.name
        try:
            url = httpx.URL(config.url)
        except httpx.InvalidURL:
            raise NotifierConfigError(f"{name}: url is not a URL") from None
        if url.userinfo:
            raise NotifierConfigError(
                f"{name}: url holds credentials (user:password@); put the receiver's token in a secret file"
            )
        if url.scheme not in ("http", "https") or not url.host:
            raise NotifierConfigError(
                f"{name}: url must be http(s)://host[:port]/path, got scheme {url.scheme!r}"
            )
        super().__init__(name, config.timeout_s, transport)
        self.config = config
        self._secret = read_secret(f"{name}.secret", config.secret_env, env)
        if len(self._secret.reveal()) < MIN_SECRET_CHARS:
            raise NotifierConfigError(
                f"{name}.secret: ${config.secret_env} must hold at least {MIN_SECRET_CHARS} characters"
            )
        self._url = url
        self._origin = f"{url.scheme}://{url.netloc.decode('ascii')}"
        self._clock = clock

    def __repr__(self) -> str:
        return f"Webhook(name={self.config.name!r}, origin={self._origin!r})"

    async def _send(self, message: Message) -> Receipt:
        name, timeout_s = self.config.name, self.config.timeout_s
        body = encode(message)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Accept": "application/json",
            "User-Agent": "HazardWatch-webhook/1",
            "Idempotency-Key": message.idempotency_key,
            "X-HazardWatch-Event": message.event.event if message.event else "summary",
            SIGNATURE_HEADER: sign(self._secret.reveal().encode("utf-8"), int(self._clock()), body),
        }
        response, _ = await post(self._transport, name, self._url, headers, body, timeout_s, self._origin)
        status = response.status_code
        request_id = response.headers.get("X-Request-Id", "")[:200]
        if 200 <= status < 300:
            return Receipt(name, request_id or message.idempotency_key, message.idempotency_key, request_id)
        detail = f"{self._origin} answered HTTP {status}" + (f" (request {request_id})" if request_id else "")
        if status >= 500 or status in (408, 429):
            wait = retry_after_s(response.headers.get("Retry-After"), self._clock())
            raise RetryableError(name, f"HTTP_{status}", detail, retry_after_s=wait)
        raise PermanentError(name, f"HTTP_{status}", detail)
