"""EmailNotifier against a real SMTP server on loopback (aiosmtpd): STARTTLS or implicit TLS with a server
certificate from a private CA made here, AUTH PLAIN/LOGIN checked by an authenticator; the received mail
parsed as a mail reader would; SMTP replies classified; the password never in errors, reprs or logs."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import email.parser
import email.policy
import ipaddress
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from alarms.notify import AlarmEvent, Message, NotifierConfigError, PermanentError, RetryableError
from alarms.notify.email import EmailConfig, EmailNotifier
from tests.support.http_server import free_port

USER = "alarm@plant.example.cn"
PASSWORD = "smtp-Pa55word-7f3e!q"
WRONG = "not-the-Pa55word-91c2"
SENDER = "hazardwatch@plant.example.cn"
TO = "duty-desk@plant.example.cn"
NOW = 1_796_030_000.0  # the injected clock: Mon, 30 Nov 2026 09:13:20 +0000
EVENT = AlarmEvent(
    alarm_key="hs-1.TK-101.AT.H",
    event="raised",
    priority="critical",
    labels=(("enterprise", "某某化工"), ("hazard_source", "一号罐区"), ("tag", "TK-101"), ("unit", None)),
    message_zh="可燃气体报警",
    message_en="TK-101 combustible gas high: 28 %LEL (limit 25 %LEL)",
    at_us=1_796_026_500_123_456,  # 2026-11-30 08:15:00.123456 UTC = 16:15:00 in Shanghai
)
MESSAGE = Message(TO, (), "evt-42:duty-7:email", EVENT)


# ---- a private CA and a server certificate for 127.0.0.1, made per test


def make_pki(tmp: Path) -> tuple[Path, ssl.SSLContext]:
    """The CA's PEM (what the notifier trusts) and the server's TLS context."""
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "HazardWatch test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    leaf = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    ca_file, cert_file, key_file = tmp / "ca.pem", tmp / "server.pem", tmp / "server-key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return ca_file, context


# ---- the mail server


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool
    mechanism: str | None


@dataclass
class Mailbox:
    """aiosmtpd handler and authenticator: ``rcpt_reply``/``data_reply`` script a refusal (None = accept);
    ``auth_reply`` is what a failed AUTH answers (None: aiosmtpd's 535)."""

    rcpt_reply: str | None = None
    data_reply: str | None = None
    auth_reply: str | None = None
    received: list[Received] = field(default_factory=list)
    mechanisms: dict[int, str] = field(default_factory=dict)  # id(session) → the AUTH mechanism used
    logins: list[tuple[str, str]] = field(default_factory=list)

    def __call__(
        self, server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login.decode(), data.password.decode()))
        if (data.login.decode(), data.password.decode()) == (USER, PASSWORD):
            self.mechanisms[id(session)] = mechanism
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False, message=self.auth_reply)

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        if self.data_reply is not None:
            return self.data_reply
        assert isinstance(envelope.content, bytes) and envelope.mail_from is not None
        mechanism = self.mechanisms.get(id(session))
        tls = session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None
        self.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content, tls, mechanism)
        )
        return "250 Message accepted"


@dataclass
class Server:
    mailbox: Mailbox
    port: int
    ca_file: Path

    def config(self, **overrides: Any) -> EmailConfig:
        settings: dict[str, Any] = dict(
            host="127.0.0.1", port=self.port, sender=SENDER, username=USER, ca_file=str(self.ca_file),
            local_hostname="hazardwatch.test", timeout_s=5.0,
        )  # fmt: skip
        return EmailConfig(**(settings | overrides))


Start = Callable[..., Server]


@pytest.fixture
def smtp(tmp_path: Path) -> Any:
    """``smtp(tls="starttls" | "implicit" | "none", exclude=("LOGIN",))`` starts a server; stopped after the test."""
    controllers: list[Controller] = []
    ca_file, context = make_pki(tmp_path)

    def start(tls: str = "starttls", exclude: tuple[str, ...] = ()) -> Server:
        mailbox, port = Mailbox(), free_port()
        kwargs: dict[str, Any] = dict(authenticator=mailbox, auth_exclude_mechanism=list(exclude))
        if tls == "starttls":
            kwargs |= dict(tls_context=context, require_starttls=True, auth_required=True)
        elif tls == "implicit":
            kwargs |= dict(
                ssl_context=context, auth_require_tls=False
            )  # aiosmtpd sees no STARTTLS: TLS all along
        controller = Controller(mailbox, hostname="127.0.0.1", port=port, **kwargs)
        controller.start()
        controllers.append(controller)
        return Server(mailbox, port, ca_file)

    yield start
    for controller in controllers:
        controller.stop()


def notifier(config: EmailConfig, password: str = PASSWORD) -> EmailNotifier:
    return EmailNotifier(config, env={"HAZARDWATCH_SMTP_PASSWORD": password}, clock=lambda: NOW)


def parse(content: bytes) -> email.message.EmailMessage:
    mail = email.parser.BytesParser(policy=email.policy.default).parsebytes(content)
    assert isinstance(mail, email.message.EmailMessage)
    return mail


# ---- delivery


@pytest.mark.parametrize(
    ("tls", "exclude", "mechanism"),
    [("starttls", ("LOGIN",), "PLAIN"), ("starttls", ("PLAIN",), "LOGIN"), ("implicit", ("LOGIN",), "PLAIN")],
)
async def test_delivers_the_event_in_chinese_over_tls_with_auth(
    smtp: Start, tls: str, exclude: tuple[str, ...], mechanism: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = smtp(tls, exclude)
    receipt = await notifier(server.config(implicit_tls=tls == "implicit")).send(MESSAGE)

    [got] = server.mailbox.received
    assert (got.mail_from, got.rcpt_tos, got.tls, got.mechanism) == (SENDER, [TO], True, mechanism)
    mail = parse(got.content)
    assert mail["Subject"] == "[紧急] 某某化工 一号罐区 可燃气体报警 — 报警"
    assert (mail["From"], mail["To"], mail["Date"]) == (SENDER, TO, "Mon, 30 Nov 2026 09:13:20 +0000")
    assert mail["X-HazardWatch-Idempotency-Key"] == "evt-42:duty-7:email"
    assert mail["X-HazardWatch-Event"] == "raised"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail.get_content_type() == "text/plain" and mail.get_content_charset() == "utf-8"
    body = mail.get_content()
    for text in (
        "可燃气体报警\nTK-101 combustible gas high: 28 %LEL (limit 25 %LEL)\n",
        "优先级 Priority: 紧急 critical",
        "2026-11-30 16:15:00 北京时间 (Asia/Shanghai) / 2026-11-30T08:15:00.123456Z UTC",
        "enterprise=某某化工, hazard_source=一号罐区, tag=TK-101\n",
        "Alarm key: hs-1.TK-101.AT.H\n",
        "Idempotency key: evt-42:duty-7:email\n",
    ):
        assert text in body
    assert (receipt.provider, receipt.provider_message_id) == ("email", mail["Message-ID"])
    assert receipt.idempotency_key == MESSAGE.idempotency_key
    assert all(PASSWORD not in r.getMessage() for r in caplog.records if not r.name.startswith("mail."))


async def test_message_id_is_the_same_on_every_send_of_a_key(smtp: Start) -> None:
    server = smtp()
    await notifier(server.config()).send(MESSAGE)
    await notifier(server.config()).send(MESSAGE)  # a new instance: as after a crash and restart
    params = (
        ("enterprise", "3家企业"), ("hazard_source", "2处危险源"), ("tag", "共37条报警（紧急5 高12 中20）"),
        ("priority", "紧急"), ("event", "汇总"), ("count", "37"), ("text", "【报警汇总】共37条报警，请立即处置并反馈"),
    )  # fmt: skip
    other = Message(TO, params, "flood-9:duty-7:email")
    await notifier(server.config()).send(other)

    first, again, summary = (parse(r.content) for r in server.mailbox.received)
    assert first["Message-ID"] == again["Message-ID"]
    assert first["Message-ID"].startswith("<") and first["Message-ID"].endswith("@plant.example.cn>")
    assert summary["Message-ID"] != first["Message-ID"]
    assert summary["Subject"] == "[紧急] 3家企业 2处危险源 共37条报警（紧急5 高12 中20） — 汇总"
    assert summary["X-HazardWatch-Event"] == "summary"
    body = summary.get_content()
    assert body.startswith("【报警汇总】共37条报警，请立即处置并反馈\n") and "count: 37\n" in body
    assert "Idempotency key: flood-9:duty-7:email\n" in body


# ---- failures


@pytest.mark.parametrize(
    ("stage", "reply", "error", "code"),
    [
        ("rcpt", "451 4.3.0 Temporary failure, try again later", RetryableError, "SMTP_451"),
        ("rcpt", "450 4.2.1 <duty-desk@plant.example.cn>: mailbox busy", RetryableError, "SMTP_450"),
        ("rcpt", "550 5.1.1 <duty-desk@plant.example.cn>: mailbox unavailable", PermanentError, "SMTP_550"),
        ("rcpt", "553 5.1.3 mailbox name not allowed", PermanentError, "SMTP_553"),
        ("data", "554 5.7.1 Message rejected", PermanentError, "SMTP_554"),
        ("data", "452 4.3.1 Insufficient system storage", RetryableError, "SMTP_452"),
    ],
)
async def test_smtp_replies_are_classified(
    smtp: Start, stage: str, reply: str, error: type[Exception], code: str
) -> None:
    server = smtp()
    setattr(server.mailbox, f"{stage}_reply", reply)
    with pytest.raises(error) as caught:
        await notifier(server.config()).send(MESSAGE)
    assert type(caught.value) is error and caught.value.code == code  # type: ignore[attr-defined]
    assert "duty-desk@" not in str(caught.value)  # the address a server echoes is shown masked
    assert server.mailbox.received == []


@pytest.mark.parametrize("reply", [None, f"535 5.7.8 Authentication failed for password {WRONG}"])
async def test_wrong_password_is_permanent_and_never_shown(
    smtp: Start, reply: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = smtp()
    server.mailbox.auth_reply = reply  # a server that echoes the password it was given, too
    email_notifier = notifier(server.config(), password=WRONG)
    with pytest.raises(PermanentError) as caught:
        await email_notifier.send(MESSAGE)
    assert caught.value.code == "SMTP_535"
    assert (USER, WRONG) in server.mailbox.logins  # it was tried, and refused
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith("mail.")]  # not aiosmtpd's own
    assert any("SMTP_535" in line for line in ours)
    for text in (str(caught.value), repr(caught.value), repr(email_notifier), *ours):
        assert WRONG not in text
    assert server.mailbox.received == []


async def test_server_down_is_retryable(smtp: Start, tmp_path: Path) -> None:
    config = smtp().config(port=free_port())  # nobody listens there
    with pytest.raises(RetryableError) as caught:
        await notifier(config).send(MESSAGE)
    assert caught.value.code == "CONNECTION"


@pytest.mark.parametrize(
    ("script", "code"),
    [
        ([], "TIMEOUT"),  # accepts, never greets
        (
            [b"220 ready\r\n", b"250-hi\r\n250 STARTTLS\r\n", b"220 go ahead\r\n", None],
            "CONNECTION",
        ),  # TLS cut
        ([b"421 4.3.2 System not accepting network messages\r\n"], "SMTP_421"),
    ],
)
async def test_network_failures_are_retryable(smtp: Start, script: list[bytes | None], code: str) -> None:
    """A scripted server: each element answers one line read (the first, the connection); None closes."""

    handlers: list[asyncio.Task[None]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        for i, answer in enumerate(script):
            if i:
                await reader.readline()
            if answer is None:
                break
            writer.write(answer)
        else:
            await reader.read()  # hang until the client gives up
        writer.close()
        await writer.wait_closed()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        with pytest.raises(RetryableError) as caught:
            await notifier(smtp().config(port=port, timeout_s=0.5)).send(MESSAGE)
        assert caught.value.code == code
    finally:
        listener.close()
        await asyncio.wait_for(asyncio.gather(*handlers), 5)
        await listener.wait_closed()


async def test_starttls_required_but_not_offered_is_permanent(smtp: Start) -> None:
    server = smtp(tls="none")
    with pytest.raises(PermanentError) as caught:
        await notifier(server.config()).send(MESSAGE)
    assert caught.value.code == "NO_STARTTLS"
    assert server.mailbox.logins == []  # the password never crossed in clear


async def test_untrusted_certificate_is_permanent(smtp: Start) -> None:
    server = smtp()
    with pytest.raises(PermanentError) as caught:
        await notifier(server.config(ca_file="")).send(MESSAGE)  # the system store does not know our CA
    assert caught.value.code == "TLS_CERT"
    assert server.mailbox.logins == []


@pytest.mark.parametrize(
    "recipient",
    [
        "duty-desk@plant.example.cn\r\nBcc: everyone@example.com",
        "duty-desk@plant.example.cn\nSubject: 假报警",
        "duty-desk@plant.example.cn\r",
        "值班 <duty-desk@plant.example.cn>",
        "duty-desk@plant.example.cn, everyone@example.com",
        "13812345678",
        "",
    ],
)
async def test_recipient_not_one_address_is_refused(smtp: Start, recipient: str) -> None:
    server = smtp()
    with pytest.raises(PermanentError) as caught:
        await notifier(server.config()).send(Message(recipient, (), "evt-42:x:email", EVENT))
    assert caught.value.code == "BAD_RECIPIENT"
    assert "everyone@" not in str(caught.value) and "\n" not in str(caught.value)
    assert server.mailbox.received == [] and server.mailbox.logins == []


@pytest.mark.parametrize(
    ("overrides", "env", "names"),
    [
        ({"starttls": False}, {"HAZARDWATCH_SMTP_PASSWORD": PASSWORD}, "in clear"),
        ({}, {}, "$HAZARDWATCH_SMTP_PASSWORD"),
        ({"sender": "HazardWatch <hw@plant.example.cn>"}, {"HAZARDWATCH_SMTP_PASSWORD": PASSWORD}, "sender"),
        ({"ca_file": "/nonexistent/ca.pem"}, {"HAZARDWATCH_SMTP_PASSWORD": PASSWORD}, "ca_file"),
    ],
)
def test_unusable_configuration_is_refused_at_construction(
    overrides: dict[str, Any], env: dict[str, str], names: str
) -> None:
    config = dataclasses.replace(EmailConfig(host="127.0.0.1", sender=SENDER, username=USER), **overrides)
    with pytest.raises(NotifierConfigError, match=re.escape(names)) as caught:
        EmailNotifier(config, env=env)
    assert PASSWORD not in str(caught.value)


def test_no_username_needs_no_password_and_port_follows_the_tls_mode() -> None:
    plain = EmailNotifier(EmailConfig(host="relay.plant.local", sender=SENDER, starttls=False), env={})
    smtps = EmailNotifier(EmailConfig(host="smtp.example.cn", sender=SENDER, implicit_tls=True), env={})
    assert (plain.port, smtps.port) == (587, 465)


async def test_line_breaks_in_the_event_cannot_add_headers(smtp: Start) -> None:
    server = smtp()
    event = dataclasses.replace(
        EVENT,
        labels=(("enterprise", "某某化工\r\nBcc: everyone@example.com"), ("hazard_source", "一号罐区")),
        message_zh="可燃气体报警\nX-Injected: yes",
    )
    await notifier(server.config()).send(Message(TO, (), "evt-43:duty-7:email\r\nX-Injected: yes", event))

    [got] = server.mailbox.received
    mail = parse(got.content)
    assert mail["Bcc"] is None and mail["X-Injected"] is None and got.rcpt_tos == [TO]
    assert (
        mail["Subject"]
        == "[紧急] 某某化工 Bcc: everyone@example.com 一号罐区 可燃气体报警 X-Injected: yes — 报警"
    )
    assert mail["X-HazardWatch-Idempotency-Key"] == "evt-43:duty-7:email X-Injected: yes"
