"""TencentVoice against a loopback VMS API: each request's TC3-HMAC-SHA256 signature recomputed by the SMS
test's verifier (written from "Signature v3", not with alarms.notify code) for service ``vms``, then the
gateway answers success, throttling or an invalid number; credentials and numbers never leak."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import pytest

from alarms.notify import Message, NotifierConfigError, NotifyError, PermanentError, Receipt, RetryableError
from alarms.notify.tencent_voice import TencentVoice, TencentVoiceConfig
from tests.alarms.notify.conftest import Gateway
from tests.alarms.notify.test_tencent_sms import tc3_verify
from tests.support.http_server import CLOSE, HANG, RawRequest, Reply, free_port

SECRET_ID = "AKIDvOiCeTeStSeCrEtId0123456789ab"
SECRET_KEY = "vOiCeTeNcEnTsEcReTkEy0123456789"
ENV = {"TENCENTCLOUD_SECRET_ID": SECRET_ID, "TENCENTCLOUD_SECRET_KEY": SECRET_KEY}
PHONE = "13912345678"
NAMES = ("source", "tag", "level")
PARAMS = {"source": "一号罐区", "tag": "TK-101 液位", "level": "一级"}
CALL_ID = "12582bce-4a4c-4cd3-9e07-0a1d8ae6c1a1"


def ok(request: RawRequest) -> Reply:
    context = json.loads(request.body)["SessionContext"]
    return Reply(
        200, {"Response": {"SendStatus": {"CallId": CALL_ID, "SessionContext": context}, "RequestId": "r-1"}}
    )


def error(code: str, message: str = "refused") -> Callable[[RawRequest], Reply]:
    return lambda r: Reply(
        200, {"Response": {"Error": {"Code": code, "Message": message}, "RequestId": "r-2"}}
    )


def notifier(url: str, timeout_s: float = 5.0, clock: Callable[[], float] = time.time) -> TencentVoice:
    config = TencentVoiceConfig(
        voice_sdk_app_id="1400006666", template_id="4356", template_params=NAMES, play_times=3,
        endpoint=url, timeout_s=timeout_s,
    )  # fmt: skip
    return TencentVoice(config, env=ENV, clock=clock)


def message(key: str = "evt-42:duty-7:voice") -> Message:
    return Message(PHONE, tuple(PARAMS.items()), key)


@pytest.fixture
def verified(gateway: Gateway) -> Gateway:
    gateway.verify = lambda request: tc3_verify(request, {SECRET_ID: SECRET_KEY}, "vms", time.time())
    return gateway


async def test_call_is_signed_as_documented_and_carries_the_parameters(verified: Gateway) -> None:
    verified.answer = ok
    voice = notifier(verified.url)
    receipt = await voice.send(message())
    await voice.aclose()
    assert verified.refused == []
    assert receipt == Receipt("tencent_voice", CALL_ID, "evt-42:duty-7:voice", "r-1")
    (request,) = verified.requests
    assert (request.method, request.target) == ("POST", "/")
    assert request.header("Content-Type") == "application/json; charset=utf-8"
    assert (request.header("X-TC-Action"), request.header("X-TC-Version"), request.header("X-TC-Region")) == (
        "SendTtsVoice", "2020-09-02", "ap-guangzhou",
    )  # fmt: skip
    assert json.loads(request.body) == {
        "TemplateId": "4356", "CalledNumber": "+86" + PHONE, "VoiceSdkAppid": "1400006666",
        "TemplateParamSet": list(PARAMS.values()), "PlayTimes": 3, "SessionContext": "evt-42:duty-7:voice",
    }  # fmt: skip


async def test_the_credential_scope_is_the_utc_date_and_the_vms_service(gateway: Gateway) -> None:
    # 1551113065 is 2019-02-26 00:44:25 in Beijing and 2019-02-25 16:44:25 UTC.
    gateway.verify = lambda request: tc3_verify(request, {SECRET_ID: SECRET_KEY}, "vms", 1551113065)
    gateway.answer = ok
    voice = notifier(gateway.url, clock=lambda: 1551113065.7)
    await voice.send(message())
    await voice.aclose()
    assert gateway.refused == []
    assert "/2019-02-25/vms/tc3_request" in (gateway.requests[0].header("Authorization") or "")


@pytest.mark.parametrize(
    ("answer", "failure", "error_code"),
    [
        (error("LimitExceeded.DeliveryFrequencyLimit"), RetryableError, "LimitExceeded.DeliveryFrequencyLimit"),
        (error("RequestLimitExceeded"), RetryableError, "RequestLimitExceeded"),
        (error("InternalError.UpstreamError"), RetryableError, "InternalError.UpstreamError"),
        (error("FailedOperation.AccessUpstreamTimeout"), RetryableError, "FailedOperation.AccessUpstreamTimeout"),
        (error("InternalError.SigVerificationFail"), PermanentError, "InternalError.SigVerificationFail"),
        (error("InvalidParameterValue.CalledNumberVerifyFail", f"+86{PHONE} / {PHONE} 校验失败"), PermanentError, "InvalidParameterValue.CalledNumberVerifyFail"),
        (error("FailedOperation.TemplateIncorrectOrUnapproved"), PermanentError, "FailedOperation.TemplateIncorrectOrUnapproved"),
        (error("FailedOperation.SomethingNew"), PermanentError, "FailedOperation.SomethingNew"),
        (lambda r: Reply(200, {"Response": {"SendStatus": {}, "RequestId": "r"}}), PermanentError, "HTTP_200"),
        (lambda r: Reply(200, {"Error": "no Response"}), PermanentError, "HTTP_200"),
        (lambda r: Reply(200, {"Response": "busy"}), PermanentError, "HTTP_200"),
        (lambda r: Reply(502, None, raw=b"bad gateway"), RetryableError, "HTTP_502"),
        (lambda r: CLOSE, RetryableError, "CONNECTION"),
    ],
)  # fmt: skip
async def test_failures_are_classified(
    verified: Gateway, answer: Callable[[RawRequest], object], failure: type[NotifyError], error_code: str
) -> None:
    verified.answer = answer
    voice = notifier(verified.url)
    with pytest.raises(failure) as caught:
        await voice.send(message())
    await voice.aclose()
    assert caught.value.code == error_code
    assert verified.refused == []
    assert PHONE not in str(caught.value)


LEAKY = error("AuthFailure.SecretIdNotFound", f"SecretId {SECRET_ID} (key {SECRET_KEY}) not found")


@pytest.mark.parametrize(
    "shape", ["http_500", "timeout", "connection_refused", "provider_error", "bad_signature"]
)
async def test_credentials_never_leak(gateway: Gateway, caplog: pytest.LogCaptureFixture, shape: str) -> None:
    caplog.set_level(logging.DEBUG)
    gateway.verify = lambda request: None
    if shape == "bad_signature":
        gateway.verify = lambda request: tc3_verify(request, {SECRET_ID: "another-key"}, "vms", time.time())
    gateway.answer = {
        "http_500": lambda r: Reply(500, {"Response": {}}),
        "timeout": lambda r: HANG,
        "provider_error": LEAKY,
    }.get(shape, ok)
    url = f"http://127.0.0.1:{free_port()}" if shape == "connection_refused" else gateway.url
    voice = notifier(url, timeout_s=0.3)
    with pytest.raises(NotifyError) as caught:
        await voice.send(message())
    await voice.aclose()
    if shape == "bad_signature":
        assert caught.value.code == "AuthFailure.SignatureFailure"
    exc: BaseException | None = caught.value
    texts = [repr(voice), repr(voice.config), caplog.text]
    while exc is not None:
        texts += [str(exc), repr(exc)]
        exc = exc.__cause__ or exc.__context__
    assert "tencent_voice" in caplog.text
    for text in texts:
        assert SECRET_KEY not in text and SECRET_ID not in text, text
        assert PHONE not in text, text


def test_configuration_is_checked_naming_the_setting() -> None:
    with pytest.raises(NotifierConfigError, match="play_times must be 1, 2 or 3"):
        TencentVoice(TencentVoiceConfig("1400006666", "4356", NAMES, play_times=0), env=ENV)
    with pytest.raises(NotifierConfigError, match="voice_sdk_app_id is empty"):
        TencentVoice(TencentVoiceConfig("", "4356", NAMES), env=ENV)
    with pytest.raises(NotifierConfigError, match=r"secret_key: set \$TENCENTCLOUD_SECRET_KEY"):
        TencentVoice(
            TencentVoiceConfig("1400006666", "4356", NAMES), env={"TENCENTCLOUD_SECRET_ID": SECRET_ID}
        )
    voice = TencentVoice(TencentVoiceConfig("1400006666", "4356", NAMES), env=ENV)
    assert SECRET_KEY not in repr(voice) and SECRET_KEY not in repr(vars(voice))
    with pytest.raises(ValueError, match="'source' has 13 characters, at most 12"):
        voice.template.message(PHONE, "k", **{**PARAMS, "source": "罐" * 13})


async def test_a_number_that_is_not_a_mainland_mobile_is_refused_before_calling(verified: Gateway) -> None:
    voice = notifier(verified.url)
    with pytest.raises(PermanentError, match=r"123\*\*\*\*8901 is not a mainland mobile number"):
        await voice.send(Message("12345678901", tuple(PARAMS.items()), "k"))
    await voice.aclose()
    assert verified.requests == []
