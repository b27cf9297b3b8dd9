"""AliyunSms against a loopback Dysmsapi: every request's ACS3-HMAC-SHA256 signature recomputed here from the
raw request, as "V3 版本请求体 & 签名机制" describes it (not with alarms.notify code), then the gateway answers
success, throttling or an invalid number; credentials never leak into errors, reprs or logs."""

from __future__ import annotations

import calendar
import hashlib
import hmac
import json
import logging
import re
import string
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from alarms.notify import Message, NotifierConfigError, NotifyError, PermanentError, RetryableError
from alarms.notify.aliyun_sms import AliyunSms, AliyunSmsConfig, acs3_authorization
from tests.alarms.notify.conftest import Gateway
from tests.support.http_server import CLOSE, HANG, RawRequest, Reply, free_port

KEY_ID = "LTAI5tK3yIdForTests0001"
KEY_SECRET = "aLiYunS3cretForTests0123456789"
ENV = {"ALIBABA_CLOUD_ACCESS_KEY_ID": KEY_ID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": KEY_SECRET}
PHONE = "13912345678"
NAMES = ("enterprise", "source", "tag", "level", "value", "time")
# Chinese text and the characters the RFC 3986 rules single out (space, *, ~) plus the query's own (&, =, +).
PARAMS = {
    "enterprise": "某某化工 A*B~C+D&E=F",
    "source": "一号罐区",
    "tag": "TK-101 液位",
    "level": "二级",
    "value": "92.5%",
    "time": "2026-11-30 08:15",
}

# ---- the verifier, from the docs (help.aliyun.com/zh/sdk/product-overview/v3-request-structure-and-signature)

UNRESERVED = set(string.ascii_letters + string.digits + "-_.~")


def rfc3986(text: str) -> str:
    """Letters, digits, - _ . ~ stay; every other UTF-8 byte is %XX (space %20, * %2A)."""
    return "".join(chr(b) if chr(b) in UNRESERVED else f"%{b:02X}" for b in text.encode("utf-8"))


def acs3_verify(
    request: RawRequest, secrets: dict[str, str], now: float, seen_nonces: set[str] | None = None
) -> Reply | None:
    def refuse(code: str) -> Reply:
        return Reply(400, {"Code": code, "Message": f"verification failed: {code}", "RequestId": "loopback"})

    auth = request.header("Authorization") or ""
    m = re.fullmatch(
        r"ACS3-HMAC-SHA256 Credential=([^,]+),SignedHeaders=([^,]+),Signature=([0-9a-f]{64})", auth
    )
    if not m:
        return refuse("IncompleteSignature")
    key_id, signed_headers, signature = m.groups()
    if key_id not in secrets:
        return refuse("InvalidAccessKeyId.NotFound")
    names = signed_headers.split(";")
    if names != sorted(names) or any(n != n.lower() for n in names):
        return refuse("IncompleteSignature")
    required = {
        "host",
        "x-acs-action",
        "x-acs-content-sha256",
        "x-acs-date",
        "x-acs-signature-nonce",
        "x-acs-version",
    }
    present = {k.lower() for k, _ in request.headers}
    # Every x-acs-* header, Host and Content-Type sent must be signed; every signed header sent.
    must_sign = {h for h in present if h.startswith("x-acs-") or h in ("host", "content-type")}
    if not required <= set(names) or not must_sign <= set(names) or not set(names) <= present:
        return refuse("IncompleteSignature")
    if request.header("x-acs-content-sha256") != hashlib.sha256(request.body).hexdigest():
        return refuse("InvalidParameter.ContentSHA256")
    sent = calendar.timegm(time.strptime(request.header("x-acs-date") or "", "%Y-%m-%dT%H:%M:%SZ"))
    if abs(sent - now) > 15 * 60:
        return refuse("InvalidTimeStamp.Expired")
    if seen_nonces is not None:
        nonce = request.header("x-acs-signature-nonce") or ""
        if nonce in seen_nonces:
            return refuse("SignatureNonceUsed")
        seen_nonces.add(nonce)
    pairs = sorted(request.query().items())
    canonical_query = "&".join(f"{rfc3986(k)}={rfc3986(v)}" for k, v in pairs)
    canonical_headers = "".join(f"{n}:{(request.header(n) or '').strip()}\n" for n in names)
    canonical_request = (
        f"{request.method}\n{request.path}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n"
        f"{hashlib.sha256(request.body).hexdigest()}"
    )
    string_to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
    expected = hmac.new(secrets[key_id].encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        return refuse("SignatureDoesNotMatch")
    return None


# ---- the published example (same page, "固定参数示例值")

DOC_QUERY = {"ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd", "RegionId": "cn-shanghai"}
DOC_HEADERS = {
    "host": "ecs.cn-shanghai.aliyuncs.com",
    "x-acs-action": "RunInstances",
    "x-acs-content-sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "x-acs-date": "2023-10-26T10:22:32Z",
    "x-acs-signature-nonce": "3156853299f313e23d1673dc12e1703d",
    "x-acs-version": "2014-05-26",
}
DOC_AUTHORIZATION = (
    "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;x-acs-content-sha256;"
    "x-acs-date;x-acs-signature-nonce;x-acs-version,"
    "Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
)


def test_signer_reproduces_the_published_example() -> None:
    query, authorization = acs3_authorization(
        "YourAccessKeyId", "YourAccessKeySecret", "POST", DOC_QUERY, DOC_HEADERS, b""
    )
    assert query == "ImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai"
    assert authorization == DOC_AUTHORIZATION
    # Parameters and headers are sorted by the signer, whatever order they come in.
    reordered = acs3_authorization(
        "YourAccessKeyId",
        "YourAccessKeySecret",
        "POST",
        dict(reversed(DOC_QUERY.items())),
        {k.upper(): v for k, v in reversed(DOC_HEADERS.items())},
        b"",
    )
    assert reordered == (query, authorization)


def test_verifier_accepts_the_published_example_and_nothing_else() -> None:
    doc_now = calendar.timegm((2023, 10, 26, 10, 22, 32, 0, 0, 0))
    headers = (*DOC_HEADERS.items(), ("Authorization", DOC_AUTHORIZATION))
    request = RawRequest("POST", "/?" + "&".join(f"{k}={v}" for k, v in DOC_QUERY.items()), headers, b"")
    assert acs3_verify(request, {"YourAccessKeyId": "YourAccessKeySecret"}, doc_now) is None
    tampered = RawRequest("POST", request.target.replace("shanghai", "beijing"), headers, b"")
    refusal = acs3_verify(tampered, {"YourAccessKeyId": "YourAccessKeySecret"}, doc_now)
    assert refusal is not None and refusal.body["Code"] == "SignatureDoesNotMatch"


# ---- the notifier against the loopback gateway


def ok(request: RawRequest) -> Reply:
    return Reply(200, {"Code": "OK", "Message": "OK", "BizId": "900619746936498440^0", "RequestId": "req-ok"})


def code(answer_code: str, message: str = "refused") -> Callable[[RawRequest], Reply]:
    return lambda request: Reply(200, {"Code": answer_code, "Message": message, "RequestId": "req-x"})


def notifier(gateway_url: str, timeout_s: float = 5.0, env: dict[str, str] = ENV) -> AliyunSms:
    config = AliyunSmsConfig(
        sign_name="危化监测", template_code="SMS_123456789", template_params=NAMES, endpoint=gateway_url,
        timeout_s=timeout_s,
    )  # fmt: skip
    return AliyunSms(config, env=env)


def message(key: str = "evt-42:duty-7:sms") -> Message:
    return Message(PHONE, tuple(PARAMS.items()), key)


@pytest.fixture
def verified(gateway: Gateway) -> Gateway:
    nonces: set[str] = set()
    gateway.verify = lambda request: acs3_verify(request, {KEY_ID: KEY_SECRET}, time.time(), nonces)
    return gateway


async def test_send_is_signed_as_documented_and_carries_the_parameters(verified: Gateway) -> None:
    verified.answer = ok
    sms = notifier(verified.url)
    receipt = await sms.send(message())
    await sms.aclose()
    assert verified.refused == []
    assert (receipt.provider, receipt.provider_message_id, receipt.request_id) == (
        "aliyun_sms", "900619746936498440^0", "req-ok",
    )  # fmt: skip
    assert receipt.idempotency_key == "evt-42:duty-7:sms"
    (request,) = verified.requests
    assert (request.method, request.path, request.body) == ("POST", "/", b"")
    query = request.query()
    assert json.loads(query.pop("TemplateParam")) == PARAMS
    assert query == {
        "PhoneNumbers": PHONE, "SignName": "危化监测", "TemplateCode": "SMS_123456789", "OutId": "evt-42:duty-7:sms",
    }  # fmt: skip
    assert (request.header("x-acs-action"), request.header("x-acs-version")) == ("SendSms", "2017-05-25")


async def test_two_sends_use_two_nonces(verified: Gateway) -> None:
    verified.answer = ok
    sms = notifier(verified.url)
    await sms.send(message("a"))
    await sms.send(message("b"))
    await sms.aclose()
    assert verified.refused == [] and len(verified.requests) == 2


async def test_wrong_secret_is_refused_by_the_verifier(verified: Gateway) -> None:
    verified.answer = ok
    sms = notifier(verified.url, env={**ENV, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "not-the-secret"})
    with pytest.raises(PermanentError) as caught:
        await sms.send(message())
    await sms.aclose()
    assert caught.value.code == "SignatureDoesNotMatch"


@pytest.mark.parametrize(
    ("answer", "error", "error_code"),
    [
        (
            code("isv.BUSINESS_LIMIT_CONTROL", "触发分钟级流控Permits:1"),
            RetryableError,
            "isv.BUSINESS_LIMIT_CONTROL",
        ),
        (
            code("Throttling.User", "Request was denied due to user flow control."),
            RetryableError,
            "Throttling.User",
        ),
        (code("isp.SYSTEM_ERROR"), RetryableError, "isp.SYSTEM_ERROR"),
        (
            code("isv.MOBILE_NUMBER_ILLEGAL", f"非法手机号 {PHONE}"),
            PermanentError,
            "isv.MOBILE_NUMBER_ILLEGAL",
        ),
        (code("isv.SMS_TEMPLATE_ILLEGAL"), PermanentError, "isv.SMS_TEMPLATE_ILLEGAL"),
        (code("isv.SOMETHING_NEW"), PermanentError, "isv.SOMETHING_NEW"),
        (lambda r: Reply(500, {"Code": "InternalError"}), RetryableError, "HTTP_500"),
        (lambda r: Reply(503, None, raw=b"<html>busy</html>"), RetryableError, "HTTP_503"),
        (lambda r: Reply(200, None, raw=b"not json"), PermanentError, "HTTP_200"),
        (lambda r: CLOSE, RetryableError, "CONNECTION"),
    ],
)
async def test_failures_are_classified(
    verified: Gateway, answer: Callable[[RawRequest], object], error: type[NotifyError], error_code: str
) -> None:
    verified.answer = answer
    sms = notifier(verified.url)
    with pytest.raises(error) as caught:
        await sms.send(message())
    await sms.aclose()
    assert caught.value.code == error_code
    assert verified.refused == [], "the request reached the answer only after its signature checked out"
    assert PHONE not in str(caught.value), "phone numbers are masked"


LEAKY = code("InvalidAccessKeyId.NotFound", f"Specified access key {KEY_ID} / {KEY_SECRET} is not found.")


@pytest.mark.parametrize(
    "shape", ["http_500", "timeout", "connection_refused", "provider_error", "bad_signature"]
)
async def test_credentials_never_leak(gateway: Gateway, caplog: pytest.LogCaptureFixture, shape: str) -> None:
    caplog.set_level(logging.DEBUG)
    gateway.verify = lambda request: acs3_verify(request, {KEY_ID: "another-secret"}, time.time())
    if shape != "bad_signature":
        gateway.verify = lambda request: None
    gateway.answer = {
        "http_500": lambda r: Reply(500, {"Message": "oops"}),
        "timeout": lambda r: HANG,
        "provider_error": LEAKY,
    }.get(shape, ok)
    url = f"http://127.0.0.1:{free_port()}" if shape == "connection_refused" else gateway.url
    sms = notifier(url, timeout_s=0.3)
    with pytest.raises(NotifyError) as caught:
        await sms.send(message())
    await sms.aclose()
    exc: BaseException | None = caught.value
    texts = [repr(sms), repr(sms.config), caplog.text]
    while exc is not None:
        texts += [str(exc), repr(exc)]
        exc = exc.__cause__ or exc.__context__
    assert "aliyun_sms" in caplog.text, "the failure is logged"
    for text in texts:
        assert KEY_SECRET not in text and KEY_ID not in text, text
        assert PHONE not in text, text


def test_credentials_come_from_named_variables_or_files(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(KEY_SECRET + "\n")
    config = AliyunSmsConfig(
        "危化监测", "SMS_1", NAMES, access_key_id_env="HW_AK", access_key_secret_env="HW_SK"
    )
    sms = AliyunSms(config, env={"HW_AK": KEY_ID, "HW_SK_FILE": str(tmp_path / "secret")})
    assert KEY_SECRET not in repr(sms) and KEY_SECRET not in repr(vars(sms))
    with pytest.raises(
        NotifierConfigError, match=r"access_key_secret: set \$HW_SK or \$HW_SK_FILE"
    ) as caught:
        AliyunSms(config, env={"HW_AK": KEY_ID})
    assert KEY_ID not in str(caught.value)


def test_template_parameters_are_checked_naming_the_parameter() -> None:
    sms = AliyunSms(
        AliyunSmsConfig("危化监测", "SMS_1", NAMES),
        env=ENV,
        transport=httpx.MockTransport(lambda r: httpx.Response(500)),
    )
    with pytest.raises(ValueError, match="'tag' has 36 characters, at most 35"):
        sms.template.message(PHONE, "k", **{**PARAMS, "tag": "液" * 36})
    with pytest.raises(ValueError, match="'level' is empty"):
        sms.template.message(PHONE, "k", **{**PARAMS, "level": ""})
    with pytest.raises(ValueError, match="no parameter 'extra'"):
        sms.template.message(PHONE, "k", **PARAMS, extra="x")
    assert sms.template.message(PHONE, "k", **PARAMS) == message("k")


async def test_a_number_that_is_not_a_mainland_mobile_is_refused_before_sending(verified: Gateway) -> None:
    sms = notifier(verified.url)
    with pytest.raises(PermanentError, match=r"123\*\*\*\*8901 is not a mainland mobile number"):
        await sms.send(Message("12345678901", tuple(PARAMS.items()), "k"))
    await sms.aclose()
    assert verified.requests == []
