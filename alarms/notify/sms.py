"""What the SMS gateways share: template parameters checked against the provider's per-variable limit,
mainland phone numbers, and one HTTP exchange whose transport failures become ``RetryableError``.

Invariant: no text leaving this module (exception, log) holds a credential or an unmasked phone number;
a provider's own error message is passed through ``redact`` first.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from alarms.notify import (
    Message,
    NotifierConfigError,
    PermanentError,
    RetryableError,
    Secret,
    mask_phone,
)
from alarms.notify.http import HttpNotifier, post

__all__ = ["SmsGateway", "SmsTemplate", "exchange", "national_number", "redact"]

log = logging.getLogger(__name__)
_MAINLAND_MOBILE = re.compile(r"1[3-9]\d{9}")


@dataclass(frozen=True)
class SmsTemplate:
    """An approved gateway template: its variable names in template order and the longest value the
    provider accepts per variable (characters; a Chinese character counts one)."""

    provider: str
    names: tuple[str, ...]
    max_chars: int

    def __post_init__(self) -> None:
        if not self.names:
            raise NotifierConfigError(f"{self.provider}: template_params: at least one variable")
        if len(set(self.names)) != len(self.names):
            raise NotifierConfigError(f"{self.provider}: template_params: a variable is named twice")
        for name in self.names:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise NotifierConfigError(
                    f"{self.provider}: template_params: {name!r} is not a variable name"
                )
        if self.max_chars < 1:
            raise NotifierConfigError(f"{self.provider}: max_param_chars must be at least 1")

    def message(self, recipient: str, idempotency_key: str, **params: str) -> Message:
        """A message for this template; ValueError naming the parameter that is missing, extra or too long."""
        message = Message(
            recipient, tuple((name, params.get(name, "")) for name in self.names), idempotency_key
        )
        extra = sorted(set(params) - set(self.names))
        if extra:
            raise ValueError(f"{self.provider}: template has no parameter {extra[0]!r}")
        self.values(message, error=ValueError)
        return message

    def values(self, message: Message, error: type[Exception] = PermanentError) -> list[str]:
        """The message's values in template order, each checked; ``error`` raised naming the parameter."""

        def fail(detail: str) -> Exception:
            if error is PermanentError:
                return PermanentError(self.provider, "TEMPLATE_PARAM", detail)
            return error(f"{self.provider}: {detail}")

        given = dict(message.params)
        if len(given) != len(message.params):
            raise fail("a template parameter is given twice")
        for name in given:
            if name not in self.names:
                raise fail(f"template has no parameter {name!r}")
        values = []
        for name in self.names:
            value = given.get(name, "")
            if not value.strip():
                raise fail(f"template parameter {name!r} is empty")
            if len(value) > self.max_chars:
                raise fail(
                    f"template parameter {name!r} has {len(value)} characters, at most {self.max_chars}"
                )
            if any(ord(c) < 0x20 or c == "\x7f" for c in value):
                raise fail(f"template parameter {name!r} holds a control character")
            values.append(value)
        return values


def national_number(provider: str, phone: str) -> str:
    """The 11-digit mainland mobile number of ``phone`` (``13800138000`` or ``+8613800138000``)."""
    digits = phone.removeprefix("+86")
    if not _MAINLAND_MOBILE.fullmatch(digits):
        raise PermanentError(
            provider, "INVALID_NUMBER", f"{mask_phone(phone)} is not a mainland mobile number"
        )
    return digits


def redact(text: str, secrets: Sequence[Secret]) -> str:
    for secret in secrets:
        if secret.reveal():
            text = text.replace(secret.reveal(), "***")
    return text


async def exchange(
    transport: httpx.AsyncBaseTransport,
    provider: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    timeout_s: float,
) -> tuple[int, dict[str, Any]]:
    """POST once (alarms.notify.http.post); (HTTP status, JSON object). Transport failures and
    5xx/429 raise RetryableError, a body that is not a JSON object PermanentError."""
    response, content = await post(transport, provider, url, headers, body, timeout_s)
    status = response.status_code
    try:
        payload = json.loads(content)
    except ValueError:
        payload = None
    if status >= 500 or status == 429:
        raise RetryableError(provider, f"HTTP_{status}", "the gateway is unavailable or throttling")
    if not isinstance(payload, dict):
        raise PermanentError(provider, f"HTTP_{status}", "the answer is not a JSON object")
    return status, payload


class SmsGateway(HttpNotifier):
    """An HTTP SMS gateway: ``HttpNotifier`` with its endpoint checked (http(s)://host[:port])."""

    provider = "sms"

    def __init__(self, endpoint: str, timeout_s: float, transport: httpx.AsyncBaseTransport | None) -> None:
        self.url = httpx.URL(endpoint)
        if (
            self.url.scheme not in ("http", "https")
            or not self.url.host
            or self.url.path not in ("", "/")
            or self.url.query
        ):
            raise NotifierConfigError(
                f"{self.provider}: endpoint must be http(s)://host[:port], got {endpoint!r}"
            )
        super().__init__(self.provider, timeout_s, transport)
        self._host = self.url.netloc.decode("ascii")
