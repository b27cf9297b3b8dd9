"""E-mail: one alarm event (or a flood summary) as a UTF-8 mail to one address over SMTP, with STARTTLS
(port 587) or implicit TLS (465), authenticated when a username is set. One connection per message.

Headers a mail system or a reader can rely on: ``Message-ID: <hw.(sha256 of the idempotency key, 32 hex)@(the
sender's domain)>``, the same on every send of a message (after a crash too), so a resend can be deduplicated;
``X-HazardWatch-Idempotency-Key`` (the key itself); ``X-HazardWatch-Event`` (raised | reraised | resolved |
summary); ``Auto-Submitted: auto-generated`` (RFC 3834: no auto-replies).

Failures: a 4xx reply, a refused, reset or timed-out connection, a TLS handshake cut short → RetryableError;
a 5xx reply (550, 553, 554, 535 authentication), STARTTLS required but not offered, no AUTH in common, a
server certificate that does not verify, a recipient that is not one plain address (CR/LF: header injection)
→ PermanentError. A timeout after the message's data is sent may mean it was delivered: the resend carries
the same Message-ID. Invariants: the password comes from ``read_secret`` and is never in a log, error or
repr (a server's reply is scrubbed of it too); the recipient appears masked (w***@example.com).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime

import aiosmtplib

from alarms.notify import (
    Message,
    NotifierConfigError,
    NotifyError,
    PermanentError,
    Receipt,
    RetryableError,
    read_secret,
)
from core.redact import mask_email

__all__ = ["EmailConfig", "EmailNotifier", "compose", "message_id"]

log = logging.getLogger(__name__)

PROVIDER = "email"
# China has kept UTC+8 without daylight saving since 1991: a fixed offset needs no tz database on the host.
SHANGHAI = timezone(timedelta(hours=8), "CST")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS = re.compile(rf"[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]{{1,64}}@{_LABEL}(?:\.{_LABEL})+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
PRIORITY_ZH = {"critical": "紧急", "high": "高", "medium": "中", "low": "低"}
EVENT_ZH = {"raised": "报警", "reraised": "再次报警", "resolved": "消警"}  # as alarms.delivery_text has them


@dataclass(frozen=True)
class EmailConfig:
    host: str
    sender: str  # the From address, a plain address (alarm@plant.example.cn)
    port: int | None = None  # None: 465 with implicit_tls, else 587
    starttls: bool = True  # required: a server not offering it is refused (ignored with implicit_tls)
    implicit_tls: bool = False  # TLS from the first byte (SMTPS, port 465)
    username: str = ""  # empty: no AUTH
    password_env: str = "HAZARDWATCH_SMTP_PASSWORD"  # or the file named by $HAZARDWATCH_SMTP_PASSWORD_FILE
    ca_file: str = ""  # PEM bundle of a private CA, trusted instead of the system's store
    local_hostname: str = ""  # said in EHLO; empty: this machine's FQDN (a DNS lookup per connection)
    timeout_s: float = 15.0  # per step: connect, TLS handshake, each command


def check_address(address: str) -> bool:
    return len(address) <= 254 and _ADDRESS.fullmatch(address) is not None


def message_id(idempotency_key: str, domain: str) -> str:
    """The Message-ID of every send of the message with this key."""
    # 32 hex digits keep the header short enough not to be folded
    return f"<hw.{hashlib.sha256(idempotency_key.encode('utf-8')).hexdigest()[:32]}@{domain}>"


def _one_line(text: str) -> str:
    return " ".join(_CONTROL.sub(" ", text).split())


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _subject_and_body(message: Message) -> tuple[str, str]:
    ev = message.event
    key_lines = f"幂等键 Idempotency key: {message.idempotency_key}\n"
    footer = "\n-- \nHazardWatch 自动发送，请勿回复。Sent automatically by HazardWatch; do not reply.\n"
    if ev is None:  # a summary: the dispatcher's standard parameters (alarms.delivery_text.summary_params)
        p = dict(message.params)
        head = " ".join(v for k in ("enterprise", "hazard_source", "tag") if (v := p.get(k)))
        subject = f"[{p.get('priority', '汇总')}] {head or 'HazardWatch 报警汇总'} — {p.get('event', '汇总')}"
        lines = "".join(f"{k}: {v}\n" for k, v in message.params)
        return subject, f"{p.get('text', '报警汇总 Alarm summary')}\n\n{lines}\n{key_lines}{footer}"
    labels = dict(ev.labels)
    priority = PRIORITY_ZH.get(ev.priority.lower(), ev.priority.upper())
    event = EVENT_ZH.get(ev.event, ev.event)
    where = " ".join(v for k in ("enterprise", "hazard_source") if (v := labels.get(k)))
    text = _clip(_one_line(ev.message_zh), 60)
    subject = f"[{priority}] {where} {text} — {event}"
    at = datetime.fromtimestamp(ev.at_us // 1_000_000, UTC).replace(microsecond=ev.at_us % 1_000_000)
    body = (
        f"{ev.message_zh}\n{ev.message_en}\n\n"
        f"优先级 Priority: {priority} {ev.priority}\n"
        f"事件 Event: {event} {ev.event}\n"
        f"时间 Time: {at.astimezone(SHANGHAI):%Y-%m-%d %H:%M:%S} 北京时间 (Asia/Shanghai) / "
        f"{at:%Y-%m-%dT%H:%M:%S.%fZ} UTC\n"
        f"标签 Labels: {', '.join(f'{k}={v}' for k, v in ev.labels if v is not None)}\n"
        f"报警键 Alarm key: {ev.alarm_key}\n{key_lines}{footer}"
    )
    return subject, body


def compose(message: Message, sender: str, recipient: str, now: float) -> EmailMessage:
    """The mail for ``message``: the same but for Date on every send."""
    subject, body = _subject_and_body(message)
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = recipient
    mail["Subject"] = _clip(_one_line(subject), 160)
    mail["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    mail["Message-ID"] = message_id(message.idempotency_key, sender.rpartition("@")[2])
    mail["Auto-Submitted"] = "auto-generated"
    mail["X-HazardWatch-Idempotency-Key"] = _one_line(message.idempotency_key)
    mail["X-HazardWatch-Event"] = message.event.event if message.event else "summary"
    # base64: Chinese text passes any relay, 8BITMIME or not, with no line-length surprises.
    mail.set_content(body, charset="utf-8", cte="base64")
    return mail


async def _hang_up(smtp: aiosmtplib.SMTP) -> None:
    """QUIT while the connection is up, then drop it. The mail's fate is settled by then, so a failing QUIT
    changes nothing, and a TLS close_notify exchange protects nothing: waiting for one would keep the
    socket open after the send has returned (to the end of the event loop, if the peer is slow)."""
    transport = smtp.transport
    if smtp.is_connected:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await smtp.quit()
    smtp.close()
    if isinstance(transport, asyncio.Transport):
        transport.abort()
        await asyncio.sleep(0)  # the socket is closed on the loop's next turn


class EmailNotifier:
    """``Notifier`` sending each message as one mail to ``Message.recipient`` (an e-mail address)."""

    def __init__(
        self,
        config: EmailConfig,
        *,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not config.host or _CONTROL.search(config.host) or " " in config.host:
            raise NotifierConfigError(f"{PROVIDER}: host must be a host name or address, got {config.host!r}")
        if not check_address(config.sender):
            raise NotifierConfigError(f"{PROVIDER}: sender must be a plain address (alarm@example.cn)")
        port = config.port if config.port is not None else (465 if config.implicit_tls else 587)
        if not 0 < port < 65536:
            raise NotifierConfigError(f"{PROVIDER}: port must be 1..65535, got {port}")
        if not config.timeout_s > 0:
            raise NotifierConfigError(f"{PROVIDER}: timeout_s must be positive")
        if config.username and not (config.implicit_tls or config.starttls):
            raise NotifierConfigError(
                f"{PROVIDER}: username set without starttls or implicit_tls: the password would cross in clear"
            )
        self._password = (
            read_secret(f"{PROVIDER}.password", config.password_env, env) if config.username else None
        )
        try:
            self._context = ssl.create_default_context(cafile=config.ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise NotifierConfigError(f"{PROVIDER}: ca_file {config.ca_file}: {exc}") from None
        self.config = config
        self.port = port
        self._where = f"{config.host}:{port}"
        self._clock = clock

    def __repr__(self) -> str:
        return f"EmailNotifier(host={self.config.host!r}, port={self.port}, sender={self.config.sender!r})"

    async def send(self, message: Message) -> Receipt:
        recipient = message.recipient
        if not check_address(recipient):  # which also refuses CR/LF: no header injection through it
            raise PermanentError(PROVIDER, "BAD_RECIPIENT", "recipient is not one plain e-mail address")
        mail = compose(message, self.config.sender, recipient, self._clock())
        try:
            await self._deliver(mail, recipient)
        except NotifyError as exc:
            log.debug("%s", exc)
            raise
        return Receipt(PROVIDER, str(mail["Message-ID"]), message.idempotency_key)

    async def _deliver(self, mail: EmailMessage, recipient: str) -> None:
        c = self.config
        smtp = aiosmtplib.SMTP(
            hostname=c.host, port=self.port, use_tls=c.implicit_tls, start_tls=False, tls_context=self._context,
            timeout=c.timeout_s, local_hostname=c.local_hostname or None,
        )  # fmt: skip
        try:
            await smtp.connect()
            if c.starttls and not c.implicit_tls:
                await smtp.ehlo()
                if not smtp.supports_extension("starttls"):
                    raise PermanentError(PROVIDER, "NO_STARTTLS", f"{self._where}: STARTTLS not offered")
                await smtp.starttls()
            if self._password is not None:
                await smtp.login(c.username, self._password.reveal())
            await smtp.send_message(mail, sender=c.sender, recipients=[recipient])
        except (aiosmtplib.SMTPException, OSError, ValueError) as exc:
            raise self._classify(exc, recipient) from None
        finally:
            await _hang_up(smtp)

    def _scrub(self, text: str, recipient: str) -> str:
        text = _one_line(text).replace(recipient, mask_email(recipient))
        if self._password is not None and self._password.reveal():
            text = text.replace(self._password.reveal(), "***")
        return _clip(text, 200)

    def _classify(self, exc: Exception, recipient: str) -> NotifyError:
        where = self._where
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
            exc = exc.recipients[0]
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            code, what = exc.code, type(exc).__name__.removeprefix("SMTP")
            detail = f"{where} answered {code} ({what}): {self._scrub(exc.message, recipient)}"
            if 500 <= code < 600:  # mailbox unavailable, address refused, rejected, authentication failed
                return PermanentError(PROVIDER, f"SMTP_{code}", detail)
            return RetryableError(PROVIDER, f"SMTP_{code}", detail)  # 4xx: try again later
        text = self._scrub(str(exc), recipient)
        if isinstance(exc, ssl.SSLCertVerificationError):
            return PermanentError(PROVIDER, "TLS_CERT", f"{where}: server certificate refused: {text}")
        if isinstance(exc, TimeoutError):
            return RetryableError(PROVIDER, "TIMEOUT", f"{where}: no answer within {self.config.timeout_s} s")
        if isinstance(exc, OSError):  # refused, reset, unreachable, a TLS handshake cut short
            return RetryableError(PROVIDER, "CONNECTION", f"{where}: {type(exc).__name__}: {text}")
        # an address aiosmtplib will not send, no AUTH method in common, an SMTP exchange gone wrong
        return PermanentError(PROVIDER, "SMTP", f"{where}: {type(exc).__name__}: {text}")
