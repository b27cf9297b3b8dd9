"""Webhook against a loopback receiver that verifies X-HazardWatch-Signature as webhook.py's docstring
documents it (recomputed here from the raw request, not with alarms.notify code); failures classified;
the secret never in errors, reprs or logs."""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from alarms.notify import AlarmEvent, Message, NotifierConfigError, PermanentError, RetryableError
from alarms.notify.webhook import Webhook, WebhookConfig
from tests.support.http_server import CLOSE, HANG, LoopbackHttpServer, RawRequest, Reply, free_port

SECRET = "whsec-Loopback-0123456789abcdef"
ENV = {"HAZARDWATCH_WEBHOOK_SECRET": SECRET}
TOKEN = "tok-in-the-path-5f3a"  # a receiver's token in the URL (DingTalk style): never in errors
TOLERANCE_S = 300
EVENT = AlarmEvent(
    alarm_key="hs-1.TK-101.LT.HH",
    event="raised",
    priority="CRITICAL",
    labels=(
        ("enterprise", "某某化工有限公司"),
        ("hazard_source", "一号罐区"),
        ("tag", "TK-101"),
        ("unit", None),
    ),
    message_zh="一号罐区 TK-101 液位高高报警：92.5%（限值 90%），请立即处置并反馈",
    message_en="TK-101 level high-high: 92.5% (limit 90%)",
    at_us=1_796_026_500_123_456,
)
MESSAGE = Message("duty-desk", (("level", "二级"),), "evt-42:duty-7:webhook", EVENT)


# ---- the receiver's verifier, written from the documented scheme


def verify(request: RawRequest, secret: str, now: float, seen: set[str] | None = None) -> str | None:
    """None if the request is authentic and fresh, else why not."""
    header = request.header("X-HazardWatch-Signature")
    if header is None:
        return "no signature"
    parts = dict(p.partition("=")[::2] for p in header.split(","))
    if set(parts) != {"t", "v1"} or not parts["t"].isdigit():
        return "malformed"
    signed = parts["t"].encode() + b"." + request.body
    expected = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, parts["v1"]):
        return "signature mismatch"
    if abs(now - int(parts["t"])) > TOLERANCE_S:
        return "stale"
    if seen is not None:
        key = request.header("Idempotency-Key") or ""
        if key in seen:
            return "replayed"
        seen.add(key)
    return None


# ---- a loopback receiver answering ``answers`` in order


@dataclass
class Receiver(LoopbackHttpServer):
    """Answers ``answers`` in order ((status, extra header lines), HANG or CLOSE), then (200, "")."""

    answers: list[object] = field(default_factory=list)


def _reply(answer: object) -> object:
    if not isinstance(answer, tuple):
        return answer  # HANG or CLOSE
    status, extra = answer
    headers = tuple(
        (k, v.strip()) for k, _, v in (line.partition(":") for line in extra.split("\r\n") if line)
    )
    return Reply(status, {}, headers=headers)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    answers: list[object] = []

    async def handle(request: RawRequest) -> object:
        return _reply(answers.pop(0) if answers else (200, ""))

    server = Receiver(handle, answers=answers)
    await server.start()
    yield server
    await server.stop()


def webhook(url: str, clock: Callable[[], float] = time.time, timeout_s: float = 5.0) -> Webhook:
    return Webhook(WebhookConfig(url=url, name="wh-test", timeout_s=timeout_s), env=ENV, clock=clock)


async def test_send_is_signed_as_documented_and_carries_the_event(receiver: Receiver) -> None:
    hook = webhook(f"{receiver.url}/hooks/{TOKEN}?x=1")
    receipt = await hook.send(MESSAGE)
    await hook.aclose()
    (request,) = receiver.requests
    assert verify(request, SECRET, time.time()) is None
    assert (request.method, request.target) == ("POST", f"/hooks/{TOKEN}?x=1")
    assert request.header("Content-Type") == "application/json; charset=utf-8"
    assert request.header("Idempotency-Key") == "evt-42:duty-7:webhook"
    assert request.header("X-HazardWatch-Event") == "raised"
    assert "某某化工有限公司".encode() in request.body and b"\\u" not in request.body  # Chinese as is
    body = json.loads(request.body.decode("utf-8"))
    assert body == {
        "version": 1,
        "idempotency_key": "evt-42:duty-7:webhook",
        "event": {
            "alarm_key": "hs-1.TK-101.LT.HH", "event": "raised", "priority": "CRITICAL",
            "labels": {"enterprise": "某某化工有限公司", "hazard_source": "一号罐区", "tag": "TK-101", "unit": None},
            "message_zh": EVENT.message_zh, "message_en": EVENT.message_en,
            "at": "2026-11-30T08:15:00.123456Z", "at_us": EVENT.at_us,
        },
        "params": {"level": "二级"},
    }  # fmt: skip
    assert (receipt.provider, receipt.idempotency_key) == ("wh-test", "evt-42:duty-7:webhook")


async def test_tampered_stale_replayed_or_wrongly_keyed_requests_fail_verification(
    receiver: Receiver,
) -> None:
    now = time.time()
    hook = webhook(receiver.url, clock=lambda: now)
    await hook.send(MESSAGE)
    (request,) = receiver.requests
    seen: set[str] = set()
    assert verify(request, SECRET, now, seen) is None
    tampered = RawRequest(
        request.method, request.target, request.headers, request.body.replace(b"92.5", b"12.5")
    )
    assert verify(tampered, SECRET, now) == "signature mismatch"
    assert verify(request, SECRET + "x", now) == "signature mismatch"
    assert verify(request, SECRET, now + TOLERANCE_S + 1) == "stale"
    assert verify(request, SECRET, now, seen) == "replayed"


async def test_a_retry_sends_the_same_body_with_a_fresh_timestamp(receiver: Receiver) -> None:
    clock = iter([1_796_026_500.0, 1_796_026_560.0])
    hook = webhook(receiver.url, clock=lambda: next(clock))
    await hook.send(MESSAGE)
    await hook.send(MESSAGE)
    first, second = receiver.requests
    assert first.body == second.body
    stamps = [r.header("X-HazardWatch-Signature") or "" for r in (first, second)]
    assert [s.split(",")[0] for s in stamps] == ["t=1796026500", "t=1796026560"]
    assert verify(second, SECRET, 1_796_026_560.0) is None


async def test_a_summary_without_an_event_is_sent_as_one(receiver: Receiver) -> None:
    await webhook(receiver.url).send(Message("duty-desk", (("count", "37"),), "flood-9"))
    (request,) = receiver.requests
    assert verify(request, SECRET, time.time()) is None
    assert request.header("X-HazardWatch-Event") == "summary"
    assert json.loads(request.body)["event"] is None and json.loads(request.body)["params"] == {"count": "37"}


HTTP_DATE_IN_90_S = email.utils.formatdate(1_796_026_590, usegmt=True)

CASES = [
    # answer, error class, code, retry_after_s
    ((200, ""), None, None, None),
    ((204, ""), None, None, None),
    ((500, ""), RetryableError, "HTTP_500", None),
    ((503, f"Retry-After: {HTTP_DATE_IN_90_S}\r\n"), RetryableError, "HTTP_503", 90.0),
    ((429, "Retry-After: 7\r\n"), RetryableError, "HTTP_429", 7.0),
    ((429, ""), RetryableError, "HTTP_429", None),
    ((408, ""), RetryableError, "HTTP_408", None),
    ((400, ""), PermanentError, "HTTP_400", None),
    ((401, ""), PermanentError, "HTTP_401", None),
    ((404, ""), PermanentError, "HTTP_404", None),
    ((301, "Location: http://elsewhere.invalid/\r\n"), PermanentError, "HTTP_301", None),
    (HANG, RetryableError, "TIMEOUT", None),
    (CLOSE, RetryableError, "CONNECTION", None),
]


@pytest.mark.parametrize(("answer", "error", "code", "retry_after"), CASES)
async def test_answers_are_classified(
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
    answer: object,
    error: type[Exception] | None,
    code: str | None,
    retry_after: float | None,
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.answers.append(answer)
    hook = webhook(f"{receiver.url}/hooks/{TOKEN}", clock=lambda: 1_796_026_500.0, timeout_s=0.3)
    if error is None:
        receipt = await hook.send(MESSAGE)
        assert receipt.idempotency_key == MESSAGE.idempotency_key
        return
    with pytest.raises(error) as caught:
        await hook.send(MESSAGE)
    assert type(caught.value) is error and caught.value.code == code  # type: ignore[attr-defined]
    assert getattr(caught.value, "retry_after_s", None) == retry_after
    assert_nothing_leaks(f"{caught.value} {caught.value!r} {hook!r}", caplog)
    assert "wh-test" in str(caught.value) and "127.0.0.1" in str(caught.value)


async def test_connection_refused_is_retryable(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    hook = webhook(f"http://127.0.0.1:{free_port()}/hooks/{TOKEN}")
    with pytest.raises(RetryableError) as caught:
        await hook.send(MESSAGE)
    assert caught.value.code == "CONNECTION"
    assert_nothing_leaks(f"{caught.value} {caught.value!r}", caplog)


def assert_nothing_leaks(text: str, caplog: pytest.LogCaptureFixture) -> None:
    logged = " ".join(f"{r.getMessage()} {r.args}" for r in caplog.records)
    assert caplog.records, "the notifier logs each failure at DEBUG"
    for needle in (SECRET, TOKEN):
        assert needle not in text and needle not in logged


@pytest.mark.parametrize(
    ("url", "env", "match"),
    [
        (f"https://duty:{SECRET}@hooks.example.cn/x", ENV, r"wh-test: url holds credentials"),
        ("ftp://hooks.example.cn/x", ENV, r"wh-test: url must be http\(s\)"),
        ("https://hooks.example.cn/x", {}, r"wh-test.secret: set \$HAZARDWATCH_WEBHOOK_SECRET"),
        (
            "https://hooks.example.cn/x",
            {"HAZARDWATCH_WEBHOOK_SECRET": "short-s3cret"},
            r"at least 16 characters",
        ),
    ],
)
def test_unusable_configuration_is_refused_at_construction(url: str, env: dict[str, str], match: str) -> None:
    with pytest.raises(NotifierConfigError, match=match) as caught:
        Webhook(WebhookConfig(url=url, name="wh-test"), env=env)
    assert SECRET not in str(caught.value) and "short-s3cret" not in str(caught.value)


def test_repr_shows_the_origin_only() -> None:
    hook = Webhook(WebhookConfig(url=f"https://hooks.example.cn/robot/{TOKEN}?k=1", name="wh-test"), env=ENV)
    assert repr(hook) == "Webhook(name='wh-test', origin='https://hooks.example.cn')"
    assert SECRET not in repr(vars(hook))
