"""AliyunVoice against a loopback Dyvmsapi: each request's ACS3-HMAC-SHA256 signature recomputed by the SMS
test's verifier (written from the docs, not with alarms.notify code), then the gateway answers the call
(success, throttling, invalid number) or the call-detail query; credentials and numbers never leak."""

from __future__ import annotations

import calendar
import json
import logging
import time
from collections.abc import Callable

import httpx
import pytest

from alarms.notify import (
    DeliveryReport,
    Message,
    NotifierConfigError,
    NotifyError,
    PermanentError,
    Receipt,
    RetryableError,
)
from alarms.notify.aliyun_voice import AliyunVoice, AliyunVoiceConfig, out_id
from tests.alarms.notify.conftest import Gateway
from tests.alarms.notify.test_aliyun_sms import acs3_verify
from tests.support.http_server import CLOSE, HANG, RawRequest, Reply, free_port

KEY_ID = "LTAI5tVoiceKeyIdForTests01"
KEY_SECRET = "aLiYunVoiceS3cretForTests0123456"
ENV = {"ALIBABA_CLOUD_ACCESS_KEY_ID": KEY_ID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": KEY_SECRET}
PHONE = "13912345678"
NAMES = ("source", "tag", "level")
PARAMS = {"source": "一号罐区 A*B~C+D&E=F", "tag": "TK-101 液位", "level": "一级"}
CALL_ID = "116012354148^10281378****"
SENT_AT_US = 1_764_460_800_123_456  # 2025-11-30 00:00:00.123456 UTC


def ok(request: RawRequest) -> Reply:
    return Reply(200, {"Code": "OK", "Message": "OK", "CallId": CALL_ID, "RequestId": "req-ok"})


def code(answer_code: str, message: str = "refused") -> Callable[[RawRequest], Reply]:
    return lambda request: Reply(200, {"Code": answer_code, "Message": message, "RequestId": "req-x"})


def detail(**data: object) -> Callable[[RawRequest], Reply]:
    """A QueryCallDetailByCallId answer: Data is a JSON string, as the docs' example has it."""
    return lambda request: Reply(
        200, {"Code": "OK", "Message": "OK", "RequestId": "req-d", "Data": json.dumps(data) if data else ""}
    )


def notifier(
    url: str, timeout_s: float = 5.0, env: dict[str, str] = ENV, show: str = "057188773344"
) -> AliyunVoice:
    config = AliyunVoiceConfig(
        tts_code="TTS_123456789",
        template_params=NAMES,
        called_show_number=show,
        endpoint=url,
        timeout_s=timeout_s,
    )
    return AliyunVoice(config, env=env)


def message(key: str = "evt42:duty7:v") -> Message:
    return Message(PHONE, tuple(PARAMS.items()), key)


@pytest.fixture
def verified(gateway: Gateway) -> Gateway:
    nonces: set[str] = set()
    gateway.verify = lambda request: acs3_verify(request, {KEY_ID: KEY_SECRET}, time.time(), nonces)
    return gateway


async def test_call_is_signed_as_documented_and_carries_the_parameters(verified: Gateway) -> None:
    verified.answer = ok
    voice = notifier(verified.url)
    receipt = await voice.send(message())
    await voice.aclose()
    assert verified.refused == []
    assert receipt == Receipt("aliyun_voice", CALL_ID, "evt42:duty7:v", "req-ok")
    (request,) = verified.requests
    assert (request.method, request.path, request.body) == ("POST", "/", b"")
    assert (request.header("x-acs-action"), request.header("x-acs-version")) == (
        "SingleCallByTts",
        "2017-05-25",
    )
    query = request.query()
    assert json.loads(query.pop("TtsParam")) == PARAMS
    assert query == {
        "CalledShowNumber": "057188773344", "CalledNumber": PHONE, "TtsCode": "TTS_123456789", "PlayTimes": "2",
        "OutId": "evt42:duty7:v",
    }  # fmt: skip


async def test_public_mode_sends_no_called_show_number(verified: Gateway) -> None:
    verified.answer = ok
    voice = notifier(verified.url, show="")
    await voice.send(Message("+86" + PHONE, tuple(PARAMS.items()), "k"))
    await voice.aclose()
    query = verified.requests[0].query()
    assert "CalledShowNumber" not in query and query["CalledNumber"] == PHONE


async def test_a_key_longer_than_15_bytes_becomes_a_stable_out_id(verified: Gateway) -> None:
    verified.answer = ok
    voice = notifier(verified.url)
    long_key = "evt-000042:duty-officer-7:aliyun_voice"
    await voice.send(message(long_key))
    await voice.aclose()
    sent = verified.requests[0].query()["OutId"]
    assert sent == out_id(long_key) and len(sent.encode()) <= 15 and sent != out_id(long_key + "x")
    assert out_id("short-key") == "short-key" and len(out_id("告警" * 3)) == 15


async def test_wrong_secret_is_refused_by_the_verifier(verified: Gateway) -> None:
    verified.answer = ok
    voice = notifier(verified.url, env={**ENV, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "not-the-secret"})
    with pytest.raises(PermanentError) as caught:
        await voice.send(message())
    await voice.aclose()
    assert caught.value.code == "SignatureDoesNotMatch"


@pytest.mark.parametrize(
    ("answer", "error", "error_code"),
    [
        (code("isv.BUSINESS_LIMIT_CONTROL", "触发分钟级流控Permits:1"), RetryableError, "isv.BUSINESS_LIMIT_CONTROL"),
        (code("Throttling.User", "Request was denied due to user flow control."), RetryableError, "Throttling.User"),
        (code("isp.SYSTEM_ERROR"), RetryableError, "isp.SYSTEM_ERROR"),
        (code("isv.MOBILE_NUMBER_ILLEGAL", f"号码格式非法 {PHONE}"), PermanentError, "isv.MOBILE_NUMBER_ILLEGAL"),
        (code("isv.TTS_TEMPLATE_ILLEGAL"), PermanentError, "isv.TTS_TEMPLATE_ILLEGAL"),
        (code("isv.SOMETHING_NEW"), PermanentError, "isv.SOMETHING_NEW"),
        (lambda r: Reply(200, {"Code": "OK", "RequestId": "r"}), PermanentError, "HTTP_200"),
        (lambda r: Reply(500, {"Code": "InternalError"}), RetryableError, "HTTP_500"),
        (lambda r: Reply(429, None, raw=b"slow down"), RetryableError, "HTTP_429"),
        (lambda r: Reply(200, None, raw=b"not json"), PermanentError, "HTTP_200"),
        (lambda r: CLOSE, RetryableError, "CONNECTION"),
    ],
)  # fmt: skip
async def test_failures_are_classified(
    verified: Gateway, answer: Callable[[RawRequest], object], error: type[NotifyError], error_code: str
) -> None:
    verified.answer = answer
    voice = notifier(verified.url)
    with pytest.raises(error) as caught:
        await voice.send(message())
    await voice.aclose()
    assert caught.value.code == error_code
    assert verified.refused == [], "the request reached the answer only after its signature checked out"
    assert PHONE not in str(caught.value), "phone numbers are masked"


LEAKY = code(
    "InvalidAccessKeyId.NotFound", f"Specified access key {KEY_ID} / {KEY_SECRET} for {PHONE} not found"
)


@pytest.mark.parametrize(
    "shape", ["http_500", "timeout", "connection_refused", "provider_error", "bad_signature"]
)
@pytest.mark.parametrize("operation", ["send", "report"])
async def test_credentials_never_leak(
    gateway: Gateway, caplog: pytest.LogCaptureFixture, shape: str, operation: str
) -> None:
    caplog.set_level(logging.DEBUG)
    gateway.verify = lambda request: None
    if shape == "bad_signature":
        gateway.verify = lambda request: acs3_verify(request, {KEY_ID: "another-secret"}, time.time())
    gateway.answer = {
        "http_500": lambda r: Reply(500, {"Message": "oops"}),
        "timeout": lambda r: HANG,
        "provider_error": LEAKY,
    }.get(shape, ok)
    url = f"http://127.0.0.1:{free_port()}" if shape == "connection_refused" else gateway.url
    voice = notifier(url, timeout_s=0.3)
    with pytest.raises(NotifyError) as caught:
        if operation == "send":
            await voice.send(message())
        else:
            await voice.report(Receipt("aliyun_voice", CALL_ID, "k"), message(), SENT_AT_US)
    await voice.aclose()
    exc: BaseException | None = caught.value
    texts = [repr(voice), repr(voice.config), caplog.text]
    while exc is not None:
        texts += [str(exc), repr(exc)]
        exc = exc.__cause__ or exc.__context__
    if operation == "send":
        assert "aliyun_voice" in caplog.text, "the failure is logged"
    for text in texts:
        assert KEY_SECRET not in text and KEY_ID not in text, text
        assert PHONE not in text, text


# ---- report(): QueryCallDetailByCallId

END = "2025-11-30 08:00:41"  # Beijing time: 00:00:41 UTC
END_US = (calendar.timegm((2025, 11, 30, 0, 0, 41, 0, 0, 0))) * 1_000_000
BASE = {"caller": "0571****", "callee": PHONE, "gmtCreate": "2025-11-30 08:00:05", "endDate": END}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (detail(**BASE, state="200000", stateDesc="用户听完语音", duration=36), DeliveryReport("DELIVERED", "200000", "用户听完语音", END_US)),
        (detail(**BASE, state="200001", stateDesc="提前挂机", duration=4), DeliveryReport("DELIVERED", "200001", "提前挂机", END_US)),
        (detail(**BASE, state="200100", stateDesc="呼叫结束", duration=20), DeliveryReport("DELIVERED", "200100", "呼叫结束", END_US)),
        (detail(**BASE, state="200003", stateDesc="未接听", duration=0), DeliveryReport("FAILED", "200003", "未接听", END_US)),
        (detail(**{**BASE, "endDate": ""}, state="200010", stateDesc=f"{PHONE} 关机", duration=0, bEndTime=END), DeliveryReport("FAILED", "200010", "139****5678 关机", END_US)),
        (detail(**{**BASE, "endDate": ""}, state="200201", stateDesc="被叫响铃", duration=0), DeliveryReport("PENDING", "200201", "被叫响铃")),
        (detail(), None),
        (detail(caller="0571****", callee=PHONE), None),
    ],
)  # fmt: skip
async def test_report_maps_the_call_state(
    verified: Gateway, answer: Callable[[RawRequest], Reply], expected: DeliveryReport | None
) -> None:
    verified.answer = answer
    voice = notifier(verified.url)
    report = await voice.report(Receipt("aliyun_voice", CALL_ID, "k"), message(), SENT_AT_US)
    await voice.aclose()
    assert verified.refused == []
    assert report == expected
    (request,) = verified.requests
    assert request.header("x-acs-action") == "QueryCallDetailByCallId"
    assert request.query() == {"CallId": CALL_ID, "ProdId": "11000000300006", "QueryDate": "1764460800123"}


async def test_report_failures_are_classified(verified: Gateway) -> None:
    voice = notifier(verified.url)
    verified.answer = code("Throttling.Api")
    with pytest.raises(RetryableError):
        await voice.report(Receipt("aliyun_voice", CALL_ID, "k"), message(), SENT_AT_US)
    verified.answer = code("isv.INVALID_PARAMETERS")
    with pytest.raises(PermanentError):
        await voice.report(Receipt("aliyun_voice", CALL_ID, "k"), message(), SENT_AT_US)
    await voice.aclose()


async def test_lookup_cannot_find_a_call_by_out_id_and_asks_nothing(verified: Gateway) -> None:
    voice = notifier(verified.url)
    assert await voice.lookup(message(), SENT_AT_US) is None
    await voice.aclose()
    assert verified.requests == []


# ---- construction


def test_configuration_is_checked_naming_the_setting() -> None:
    with pytest.raises(NotifierConfigError, match="play_times must be 1, 2 or 3"):
        AliyunVoice(AliyunVoiceConfig("TTS_1", NAMES, play_times=4), env=ENV)
    with pytest.raises(NotifierConfigError, match="tts_code is empty"):
        AliyunVoice(AliyunVoiceConfig(" ", NAMES), env=ENV)
    with pytest.raises(
        NotifierConfigError, match=r"access_key_secret: set \$ALIBABA_CLOUD_ACCESS_KEY_SECRET"
    ):
        AliyunVoice(AliyunVoiceConfig("TTS_1", NAMES), env={"ALIBABA_CLOUD_ACCESS_KEY_ID": KEY_ID})
    with pytest.raises(NotifierConfigError, match="named twice"):
        AliyunVoice(AliyunVoiceConfig("TTS_1", ("tag", "tag")), env=ENV)
    voice = AliyunVoice(
        AliyunVoiceConfig("TTS_1", NAMES),
        env=ENV,
        transport=httpx.MockTransport(lambda r: httpx.Response(500)),
    )
    assert KEY_SECRET not in repr(voice) and KEY_SECRET not in repr(vars(voice))
    with pytest.raises(ValueError, match="'tag' has 36 characters, at most 35"):
        voice.template.message(PHONE, "k", **{**PARAMS, "tag": "液" * 36})


async def test_a_number_that_is_not_a_mainland_mobile_is_refused_before_calling(verified: Gateway) -> None:
    voice = notifier(verified.url)
    with pytest.raises(PermanentError, match=r"123\*\*\*\*8901 is not a mainland mobile number"):
        await voice.send(Message("12345678901", tuple(PARAMS.items()), "k"))
    await voice.aclose()
    assert verified.requests == []
