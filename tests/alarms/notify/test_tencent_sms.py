"""TencentSms against a loopback SMS API: every request's TC3-HMAC-SHA256 signature recomputed here from the raw
request as "Signature v3" describes it (not with alarms.notify code), then the gateway answers success,
throttling or an invalid number; credentials never leak into errors, reprs or logs."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from alarms.notify import Message, NotifyError, PermanentError, RetryableError
from alarms.notify.tencent_sms import TencentSms, TencentSmsConfig, tc3_authorization
from tests.alarms.notify.conftest import Gateway
from tests.support.http_server import CLOSE, HANG, RawRequest, Reply, free_port

SECRET_ID = "AKIDtEsTsEcReTiD0123456789abcdef"
SECRET_KEY = "tEnCeNtSeCrEtKeY0123456789abcd"
ENV = {"TENCENTCLOUD_SECRET_ID": SECRET_ID, "TENCENTCLOUD_SECRET_KEY": SECRET_KEY}
PHONE = "13912345678"
NAMES = ("enterprise", "source", "tag", "level", "value")
PARAMS = {
    "enterprise": "某某化工 A*B~C",
    "source": "一号罐区",
    "tag": "TK-101 液位",
    "level": "二级",
    "value": "92.5%",
}

# ---- the verifier, from the docs ("Signature v3": CanonicalRequest, StringToSign, derived keys)


def tc3_verify(request: RawRequest, secrets: dict[str, str], service: str, now: float) -> Reply | None:
    def refuse(code: str) -> Reply:
        return Reply(200, {"Response": {"Error": {"Code": code, "Message": code}, "RequestId": "loopback"}})

    auth = request.header("Authorization") or ""
    m = re.fullmatch(
        r"TC3-HMAC-SHA256 Credential=([^/]+)/(\d{4}-\d{2}-\d{2})/([a-z]+)/tc3_request, "
        r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})",
        auth,
    )
    if not m:
        return refuse("AuthFailure.InvalidAuthorization")
    secret_id, date, scope_service, signed_headers, signature = m.groups()
    if secret_id not in secrets:
        return refuse("AuthFailure.SecretIdNotFound")
    names = signed_headers.split(";")
    if names != sorted(names) or not {"content-type", "host"} <= set(names):
        return refuse("AuthFailure.InvalidAuthorization")
    timestamp = int(request.header("X-TC-Timestamp") or "0")
    if abs(timestamp - now) > 300:
        return refuse("AuthFailure.SignatureExpire")
    # Date: the UTC date of X-TC-Timestamp; service: the product the host names.
    if date != time.strftime("%Y-%m-%d", time.gmtime(timestamp)) or scope_service != service:
        return refuse("AuthFailure.SignatureFailure")
    # Key and value lowercased, blanks trimmed, sorted by key; content-type exactly as sent.
    canonical_headers = "".join(f"{n}:{(request.header(n) or '').strip().lower()}\n" for n in names)
    canonical_query = request.raw_query if request.method == "GET" else ""
    canonical_request = "\n".join(
        [
            request.method, request.path, canonical_query, canonical_headers, signed_headers,
            hashlib.sha256(request.body).hexdigest(),
        ]
    )  # fmt: skip
    string_to_sign = "\n".join(
        ["TC3-HMAC-SHA256", str(timestamp), f"{date}/{service}/tc3_request",
         hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()]
    )  # fmt: skip
    secret_date = hmac.new(("TC3" + secrets[secret_id]).encode(), date.encode(), hashlib.sha256).digest()
    secret_service = hmac.new(secret_date, service.encode(), hashlib.sha256).digest()
    secret_signing = hmac.new(secret_service, b"tc3_request", hashlib.sha256).digest()
    expected = hmac.new(secret_signing, string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        return refuse("AuthFailure.SignatureFailure")
    return None


# ---- the published example (the CVM DescribeInstances request of "Signature v3")

DOC_BODY = b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
DOC_SIGNATURE = "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
DOC_ID, DOC_KEY = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE", "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE"


def test_signer_reproduces_the_published_example() -> None:
    assert (
        hashlib.sha256(DOC_BODY).hexdigest()
        == "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
    )
    headers = {"content-type": "application/json; charset=utf-8", "host": "cvm.tencentcloudapi.com"}
    assert tc3_authorization(DOC_ID, DOC_KEY, "cvm", 1551113065, headers, DOC_BODY) == (
        f"TC3-HMAC-SHA256 Credential={DOC_ID}/2019-02-25/cvm/tc3_request, "
        f"SignedHeaders=content-type;host, Signature={DOC_SIGNATURE}"
    )


def test_verifier_accepts_the_published_example_and_nothing_else() -> None:
    authorization = (
        f"TC3-HMAC-SHA256 Credential={DOC_ID}/2019-02-25/cvm/tc3_request, "
        f"SignedHeaders=content-type;host, Signature={DOC_SIGNATURE}"
    )
    headers = (
        ("Authorization", authorization), ("Content-Type", "application/json; charset=utf-8"),
        ("Host", "cvm.tencentcloudapi.com"), ("X-TC-Action", "DescribeInstances"), ("X-TC-Version", "2017-03-12"),
        ("X-TC-Timestamp", "1551113065"), ("X-TC-Region", "ap-guangzhou"),
    )  # fmt: skip
    request = RawRequest("POST", "/", headers, DOC_BODY)
    assert tc3_verify(request, {DOC_ID: DOC_KEY}, "cvm", 1551113065) is None
    tampered = RawRequest("POST", "/", headers, DOC_BODY.replace(b"1", b"2"))
    refusal = tc3_verify(tampered, {DOC_ID: DOC_KEY}, "cvm", 1551113065)
    assert refusal is not None and refusal.body["Response"]["Error"]["Code"] == "AuthFailure.SignatureFailure"


# ---- the notifier against the loopback gateway


def status_entry(request: RawRequest, code: str, message: str) -> dict[str, Any]:
    body = json.loads(request.body)
    return {
        "SerialNo": "5000:1045710669157053657849499619", "PhoneNumber": body["PhoneNumberSet"][0], "Fee": 1,
        "SessionContext": body["SessionContext"], "Code": code, "Message": message, "IsoCode": "CN",
    }  # fmt: skip


def per_number(code: str, message: str = "") -> Callable[[RawRequest], Reply]:
    return lambda r: Reply(
        200, {"Response": {"SendStatusSet": [status_entry(r, code, message)], "RequestId": "r-1"}}
    )


def error(code: str, message: str = "refused") -> Callable[[RawRequest], Reply]:
    return lambda r: Reply(
        200, {"Response": {"Error": {"Code": code, "Message": message}, "RequestId": "r-2"}}
    )


ok = per_number("Ok", "send success")


def notifier(url: str, timeout_s: float = 5.0, clock: Callable[[], float] = time.time) -> TencentSms:
    config = TencentSmsConfig(
        sms_sdk_app_id="1400006666", sign_name="危化监测", template_id="1110", template_params=NAMES,
        endpoint=url, timeout_s=timeout_s,
    )  # fmt: skip
    return TencentSms(config, env=ENV, clock=clock)


def message(key: str = "evt-42:duty-7:sms") -> Message:
    return Message(PHONE, tuple(PARAMS.items()), key)


@pytest.fixture
def verified(gateway: Gateway) -> Gateway:
    gateway.verify = lambda request: tc3_verify(request, {SECRET_ID: SECRET_KEY}, "sms", time.time())
    return gateway


async def test_send_is_signed_as_documented_and_carries_the_parameters(verified: Gateway) -> None:
    verified.answer = ok
    sms = notifier(verified.url)
    receipt = await sms.send(message())
    await sms.aclose()
    assert verified.refused == []
    assert (receipt.provider, receipt.provider_message_id, receipt.request_id, receipt.idempotency_key) == (
        "tencent_sms", "5000:1045710669157053657849499619", "r-1", "evt-42:duty-7:sms",
    )  # fmt: skip
    (request,) = verified.requests
    assert (request.method, request.target) == ("POST", "/")
    assert request.header("Content-Type") == "application/json; charset=utf-8"
    assert (request.header("X-TC-Action"), request.header("X-TC-Version"), request.header("X-TC-Region")) == (
        "SendSms", "2021-01-11", "ap-guangzhou",
    )  # fmt: skip
    assert json.loads(request.body) == {
        "PhoneNumberSet": ["+86" + PHONE], "SmsSdkAppId": "1400006666", "SignName": "危化监测", "TemplateId": "1110",
        "TemplateParamSet": list(PARAMS.values()), "SessionContext": "evt-42:duty-7:sms",
    }  # fmt: skip


async def test_the_credential_date_is_the_utc_date(gateway: Gateway) -> None:
    # 1551113065 is 2019-02-26 00:44:25 in Beijing and 2019-02-25 16:44:25 UTC (the docs' warning).
    gateway.verify = lambda request: tc3_verify(request, {SECRET_ID: SECRET_KEY}, "sms", 1551113065)
    gateway.answer = ok
    sms = notifier(gateway.url, clock=lambda: 1551113065.7)
    await sms.send(message())
    await sms.aclose()
    assert gateway.refused == []
    assert "/2019-02-25/sms/tc3_request" in (gateway.requests[0].header("Authorization") or "")


@pytest.mark.parametrize(
    ("answer", "failure", "error_code"),
    [
        (per_number("LimitExceeded.PhoneNumberThirtySecondLimit"), RetryableError, "LimitExceeded.PhoneNumberThirtySecondLimit"),
        (per_number("LimitExceeded.DeliveryFrequencyLimit"), RetryableError, "LimitExceeded.DeliveryFrequencyLimit"),
        (error("RequestLimitExceeded"), RetryableError, "RequestLimitExceeded"),
        (error("InternalError.Timeout"), RetryableError, "InternalError.Timeout"),
        (per_number("InvalidParameterValue.IncorrectPhoneNumber", f"+86{PHONE} 格式错误"), PermanentError, "InvalidParameterValue.IncorrectPhoneNumber"),
        (error("FailedOperation.TemplateIncorrectOrUnapproved"), PermanentError, "FailedOperation.TemplateIncorrectOrUnapproved"),
        (error("FailedOperation.SignatureIncorrectOrUnapproved"), PermanentError, "FailedOperation.SignatureIncorrectOrUnapproved"),
        (per_number("LimitExceeded.PhoneNumberDailyLimit"), PermanentError, "LimitExceeded.PhoneNumberDailyLimit"),
        (lambda r: Reply(200, {"Response": {"SendStatusSet": [], "RequestId": "r"}}), PermanentError, "HTTP_200"),
        (lambda r: Reply(200, {"Response": {"SendStatusSet": [{**status_entry(r, "Ok", ""), "PhoneNumber": "+8613900000000"}]}}), PermanentError, "HTTP_200"),
        (lambda r: Reply(502, None, raw=b"bad gateway"), RetryableError, "HTTP_502"),
        (lambda r: CLOSE, RetryableError, "CONNECTION"),
    ],
)  # fmt: skip
async def test_failures_are_classified(
    verified: Gateway, answer: Callable[[RawRequest], object], failure: type[NotifyError], error_code: str
) -> None:
    verified.answer = answer
    sms = notifier(verified.url)
    with pytest.raises(failure) as caught:
        await sms.send(message())
    await sms.aclose()
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
        gateway.verify = lambda request: tc3_verify(request, {SECRET_ID: "another-key"}, "sms", time.time())
    gateway.answer = {
        "http_500": lambda r: Reply(500, {"Response": {}}),
        "timeout": lambda r: HANG,
        "provider_error": LEAKY,
    }.get(shape, ok)
    url = f"http://127.0.0.1:{free_port()}" if shape == "connection_refused" else gateway.url
    sms = notifier(url, timeout_s=0.3)
    with pytest.raises(NotifyError) as caught:
        await sms.send(message())
    await sms.aclose()
    if shape == "bad_signature":
        assert caught.value.code == "AuthFailure.SignatureFailure"
    exc: BaseException | None = caught.value
    texts = [repr(sms), repr(sms.config), caplog.text]
    while exc is not None:
        texts += [str(exc), repr(exc)]
        exc = exc.__cause__ or exc.__context__
    assert "tencent_sms" in caplog.text
    for text in texts:
        assert SECRET_KEY not in text and SECRET_ID not in text, text
        assert PHONE not in text, text


def test_template_parameters_default_to_twelve_characters_each() -> None:
    config = TencentSmsConfig("1400006666", "危化监测", "1110", NAMES)
    sms = TencentSms(config, env=ENV)
    with pytest.raises(ValueError, match="'source' has 13 characters, at most 12"):
        sms.template.message(PHONE, "k", **{**PARAMS, "source": "罐" * 13})
    assert sms.template.message(PHONE, "k", **{**PARAMS, "source": "罐" * 12}).params[1] == (
        "source",
        "罐" * 12,
    )
