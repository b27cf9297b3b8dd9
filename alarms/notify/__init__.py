"""The notifier seam (issue 12 item 5): a notifier formats one message, sends it, and says whether a failure
is worth retrying. Retry, dedup, rate limits and the evidence rows live once, in the dispatcher.

Exception tree (every failure of ``Notifier.send`` is one of these; messages never carry credentials
and show phone numbers masked, 138****1234)::

    NotifyError
    ├── RetryableError   the same message may succeed later: HTTP 5xx/429, timeout, connection error,
    │                    provider throttling (Aliyun isv.BUSINESS_LIMIT_CONTROL, Tencent LimitExceeded.*)
    └── PermanentError   sending it again cannot help: invalid number, template, sign, credentials

``NotifierConfigError`` (a ``ValueError``) is raised at construction, never by ``send``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from core.redact import mask_phone

__all__ = [
    "AlarmEvent",
    "DeliveryReport",
    "Lookup",
    "Message",
    "Notifier",
    "NotifierConfigError",
    "NotifyError",
    "PermanentError",
    "Receipt",
    "RecordingNotifier",
    "RetryableError",
    "Secret",
    "mask_phone",
    "read_secret",
]


@dataclass(frozen=True)
class AlarmEvent:
    """The alarm event a message announces, as its outbox row has it (alarms.journal.OutboxRow) plus
    when it happened: for channels that carry the event itself (webhook, MQTT, file) rather than text."""

    alarm_key: str
    event: str  # raised | reraised | resolved
    priority: str
    labels: tuple[tuple[str, str | None], ...]  # pairs, so that a Message stays hashable
    message_zh: str
    message_en: str
    at_us: int  # when it happened (the journal row's time), microseconds since the Unix epoch


@dataclass(frozen=True)
class Message:
    """One notification to one recipient: template parameters by name (in template order) and the
    idempotency key the dispatcher derives from (alarm event, recipient, channel). ``event`` is the
    alarm event for channels that send it whole; None for a summary of several (a flood)."""

    recipient: str
    params: tuple[tuple[str, str], ...]
    idempotency_key: str
    event: AlarmEvent | None = None

    def __repr__(self) -> str:  # the phone number is personal data (issue 12 item 2)
        return f"Message(recipient={mask_phone(self.recipient)!r}, idempotency_key={self.idempotency_key!r})"


@dataclass(frozen=True)
class Receipt:
    """The provider accepted the message: its id for the message (for delivery receipts) and request."""

    provider: str
    provider_message_id: str
    idempotency_key: str
    request_id: str = ""


class NotifyError(Exception):
    """A send failed; ``provider`` and ``code`` (the provider's error code, or HTTP_5xx, TIMEOUT, ...)."""

    def __init__(self, provider: str, code: str, detail: str) -> None:
        super().__init__(f"{provider}: {code}: {detail}")
        self.provider = provider
        self.code = code


class RetryableError(NotifyError):
    """The same message may succeed if sent again later; not before ``retry_after_s`` seconds when the
    provider said so (HTTP Retry-After), None when it did not."""

    def __init__(self, provider: str, code: str, detail: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(provider, code, detail)
        self.retry_after_s = retry_after_s


class PermanentError(NotifyError):
    """Sending the same message again cannot succeed."""


class NotifierConfigError(ValueError):
    """A notifier's configuration is unusable (raised at construction, naming the setting)."""


class Notifier(Protocol):
    async def send(self, message: Message) -> Receipt: ...


@dataclass(frozen=True)
class DeliveryReport:
    """What the provider says became of an accepted message (an SMS delivery receipt, a call's result):
    ``status`` DELIVERED, FAILED or PENDING (not known yet); ``code`` and ``detail`` as the provider
    gave them (no personal data); ``at_us`` when the handset received it or the attempt ended."""

    status: str
    code: str = ""
    detail: str = ""
    at_us: int | None = None


class Lookup(Protocol):
    """Optional, for channels whose provider can be asked about a message after the fact. The dispatcher
    uses ``lookup`` after a crash, for a message whose send began but whose answer was never recorded:
    a Receipt means the provider had accepted it (it is not sent again), None that it had not, and
    RetryableError that it cannot tell now (asked again later). ``sent_at_us`` is when the send began.
    ``report`` fetches the delivery receipt of an accepted message (None: nothing known yet)."""

    async def lookup(self, message: Message, sent_at_us: int) -> Receipt | None: ...

    async def report(self, receipt: Receipt, message: Message, sent_at_us: int) -> DeliveryReport | None: ...


class Secret:
    """A credential: ``str()`` and ``repr()`` show ``***``; only ``reveal()`` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> str:  # not picklable: a pickle would carry the value out
        raise TypeError("a Secret is not picklable")


def read_secret(setting: str, env_var: str, env: Mapping[str, str] | None = None) -> Secret:
    """The credential in environment variable ``env_var``, or in the file named by ``env_var + '_FILE'``
    (a Docker/systemd secret). Errors name the setting and the variables, never a value."""
    env = os.environ if env is None else env
    value = env.get(env_var)
    file_var = env_var + "_FILE"
    if not value and env.get(file_var):
        path = Path(env[file_var])
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise NotifierConfigError(
                f"{setting}: cannot read the file named by ${file_var} ({path}): {exc.strerror}"
            ) from None
    if not value:
        raise NotifierConfigError(f"{setting}: set ${env_var} or ${file_var}")
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise NotifierConfigError(f"{setting}: the value of ${env_var} holds a control character")
    return Secret(value)


@dataclass
class RecordingNotifier:
    """The fake shipped with the package: records every message; ``fail`` scripts failures by order
    (None = accept), then accepts. Provider message ids are ``fake-1``, ``fake-2``, ..."""

    provider: str = "fake"
    fail: list[NotifyError | None] = field(default_factory=list)
    sent: list[Message] = field(default_factory=list)
    attempts: list[Message] = field(default_factory=list)

    async def send(self, message: Message) -> Receipt:
        self.attempts.append(message)
        outcome = self.fail.pop(0) if self.fail else None
        if outcome is not None:
            raise outcome
        self.sent.append(message)
        return Receipt(self.provider, f"fake-{len(self.sent)}", message.idempotency_key)
