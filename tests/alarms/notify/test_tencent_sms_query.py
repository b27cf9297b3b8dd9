"""TencentSms.lookup and report against a loopback SMS API that keeps one number's status reports and answers
PullSmsSendStatusByPhoneNumber as the API page describes it (BeginTime/EndTime, Offset fixed at 0, Limit at
most 100); every request's TC3 signature recomputed by the verifier of test_tencent_sms."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from alarms.notify import DeliveryReport, Lookup, NotifyError, PermanentError, Receipt, RetryableError
from alarms.notify.tencent_sms import TencentSms
from alarms.notify.tencent_sms_query import MAX_REQUESTS, SKEW_S
from tests.alarms.notify.conftest import Gateway
from tests.alarms.notify.test_tencent_sms import PHONE, SECRET_ID, SECRET_KEY, message, notifier, tc3_verify
from tests.support.http_server import CLOSE, HANG, RawRequest, Reply, free_port

KEY = "evt-42:duty-7:sms"
NOW = 1796000000  # 2026-11-30 18:13:20 UTC
SENT_US = (NOW - 600) * 1_000_000
SERIAL = "14:19325917feb3914eb78b50d6182d7e452e"


def report_entry(
    context: str, at: int, status: str = "SUCCESS", serial: str = "", description: str = "DELIVRD"
) -> dict[str, Any]:
    return {
        "UserReceiveTime": at, "CountryCode": "86", "SubscriberNumber": PHONE, "PhoneNumber": "+86" + PHONE,
        "SerialNo": serial or f"14:{context}", "ReportStatus": status, "Description": description,
        "SessionContext": context,
    }  # fmt: skip


class SmsApi:
    """The status reports of PHONE; an answer holds those inside [BeginTime, EndTime], at most Limit."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.entries = sorted(entries, key=lambda e: int(e["UserReceiveTime"]))
        self.asked: list[dict[str, Any]] = []

    def __call__(self, request: RawRequest) -> Reply:
        body = json.loads(request.body)
        self.asked.append(body)
        wrong = (
            request.header("X-TC-Action") != "PullSmsSendStatusByPhoneNumber"
            or request.header("X-TC-Version") != "2021-01-11"
            or body.get("PhoneNumber") != "+86" + PHONE
            or body.get("SmsSdkAppId") != "1400006666"
            or body.get("Offset") != 0  # "注:目前固定设置为0"
            or not 1 <= body.get("Limit", 0) <= 100
            or not body["BeginTime"] <= body["EndTime"]
        )
        if wrong:
            error = {"Code": "InvalidParameterValue", "Message": "bad request"}
            return Reply(200, {"Response": {"Error": error, "RequestId": "r-q"}})
        inside = [e for e in self.entries if body["BeginTime"] <= e["UserReceiveTime"] <= body["EndTime"]]
        return Reply(200, {"Response": {"PullSmsSendStatusSet": inside[: body["Limit"]], "RequestId": "r-q"}})


@pytest.fixture
def verified(gateway: Gateway) -> Gateway:
    gateway.verify = lambda request: tc3_verify(request, {SECRET_ID: SECRET_KEY}, "sms", NOW)
    return gateway


def sms_at(url: str, timeout_s: float = 5.0) -> TencentSms:
    return notifier(url, timeout_s=timeout_s, clock=lambda: NOW + 0.25)


def test_tencent_sms_is_a_lookup() -> None:
    sms: Lookup = notifier("http://127.0.0.1:9")  # mypy checks Lookup's methods and their types
    assert callable(sms.lookup) and callable(sms.report)


async def test_lookup_finds_the_report_by_session_context(verified: Gateway) -> None:
    sent_s = SENT_US // 1_000_000
    verified.answer = SmsApi(
        [report_entry("evt-41:duty-7:sms", sent_s - 60), report_entry(KEY, sent_s + 5, serial=SERIAL)]
    )
    sms = sms_at(verified.url)
    receipt = await sms.lookup(message(KEY), SENT_US)
    await sms.aclose()
    assert verified.refused == []
    assert receipt == Receipt("tencent_sms", SERIAL, KEY, "r-q")
    (request,) = verified.requests
    assert (request.method, request.target) == ("POST", "/")
    assert json.loads(request.body) == {
        "BeginTime": sent_s - SKEW_S, "EndTime": NOW, "Offset": 0, "Limit": 100,
        "PhoneNumber": "+86" + PHONE, "SmsSdkAppId": "1400006666",
    }  # fmt: skip


async def test_lookup_without_a_report_is_none(verified: Gateway) -> None:
    verified.answer = SmsApi([report_entry("evt-41:duty-7:sms", NOW - 100)])
    sms = sms_at(verified.url)
    assert await sms.lookup(message(KEY), SENT_US) is None
    await sms.aclose()
    assert len(verified.requests) == 1 and verified.refused == []


async def test_a_full_answer_is_paged_by_halving_its_window(verified: Gateway) -> None:
    begin, end = SENT_US // 1_000_000 - SKEW_S, NOW
    middle = (begin + end) // 2
    earlier = [report_entry(f"old-{i}", begin + i) for i in range(99)]  # all before the middle
    later = [report_entry(f"new-{i}", middle + 1 + i) for i in range(60)]
    api = SmsApi([*earlier, *later, report_entry(KEY, end - 10, serial=SERIAL)])
    verified.answer = api
    sms = sms_at(verified.url)
    assert await sms.lookup(message(KEY), SENT_US) == Receipt("tencent_sms", SERIAL, KEY, "r-q")
    # The whole window is full (100 of 160) without the key; its earlier half (99) is not full and has no
    # key; the later half has it.
    windows = [(a["BeginTime"], a["EndTime"]) for a in api.asked]
    assert windows == [(begin, end), (begin, middle), (middle, end)]
    api.asked.clear()
    assert await sms.lookup(message("evt-99:duty-7:sms"), SENT_US) is None
    await sms.aclose()
    assert verified.refused == []
    assert [(a["BeginTime"], a["EndTime"]) for a in api.asked] == windows
    assert all(a["Offset"] == 0 and a["Limit"] == 100 for a in api.asked)


async def test_too_many_reports_in_one_second_cannot_tell(verified: Gateway) -> None:
    api = SmsApi([report_entry(f"old-{i}", NOW - 30) for i in range(100)])
    verified.answer = api
    sms = sms_at(verified.url)
    with pytest.raises(RetryableError) as caught:
        await sms.lookup(message(KEY), SENT_US)
    await sms.aclose()
    assert caught.value.code == "TOO_MANY_REPORTS"
    assert len(api.asked) < MAX_REQUESTS, "a one-second window is not halved"


@pytest.mark.parametrize(
    ("kept", "expected"),
    [
        (report_entry(KEY, NOW - 590, "SUCCESS", SERIAL), DeliveryReport("DELIVERED", "DELIVRD", at_us=(NOW - 590) * 1_000_000)),
        (report_entry(KEY, NOW - 500, "FAIL", SERIAL, "MK:0001"), DeliveryReport("FAILED", "MK:0001", at_us=(NOW - 500) * 1_000_000)),
    ],
)  # fmt: skip
async def test_report_maps_report_status(
    verified: Gateway, kept: dict[str, Any], expected: DeliveryReport
) -> None:
    verified.answer = SmsApi([report_entry(KEY, NOW - 595, "FAIL", "14:other", "MK:0005"), kept])
    sms = sms_at(verified.url)
    found = await sms.report(Receipt("tencent_sms", SERIAL, KEY), message(KEY), SENT_US)
    await sms.aclose()
    assert verified.refused == []
    assert found == expected


async def test_report_not_there_yet_is_none(verified: Gateway) -> None:
    verified.answer = SmsApi([report_entry(KEY, NOW - 595, serial="14:another-send")])
    sms = sms_at(verified.url)
    assert await sms.report(Receipt("tencent_sms", SERIAL, KEY), message(KEY), SENT_US) is None
    # Without a SerialNo the report is found by SessionContext.
    found = await sms.report(Receipt("tencent_sms", "", KEY), message(KEY), SENT_US)
    await sms.aclose()
    assert found is not None and found.status == "DELIVERED"


CALLS: dict[str, Callable[[TencentSms], Any]] = {
    "lookup": lambda sms: sms.lookup(message(KEY), SENT_US),
    "report": lambda sms: sms.report(Receipt("tencent_sms", SERIAL, KEY), message(KEY), SENT_US),
}


def error(code: str, text: str = "refused") -> Callable[[RawRequest], Reply]:
    return lambda r: Reply(200, {"Response": {"Error": {"Code": code, "Message": text}, "RequestId": "r-2"}})


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize(
    ("answer", "failure", "error_code"),
    [
        (error("RequestLimitExceeded"), RetryableError, "RequestLimitExceeded"),
        (error("InternalError.Timeout"), RetryableError, "InternalError.Timeout"),
        (error("InvalidParameterValue.IncorrectPhoneNumber", f"+86{PHONE} 格式错误"), PermanentError, "InvalidParameterValue.IncorrectPhoneNumber"),
        (error("UnauthorizedOperation.SmsSdkAppIdVerifyFail", f"{PHONE}"), PermanentError, "UnauthorizedOperation.SmsSdkAppIdVerifyFail"),
        (lambda r: Reply(200, {"Result": {}}), PermanentError, "HTTP_200"),
        (lambda r: Reply(502, None, raw=b"bad gateway"), RetryableError, "HTTP_502"),
        (lambda r: CLOSE, RetryableError, "CONNECTION"),
    ],
)  # fmt: skip
async def test_query_failures_are_classified_like_sends(
    verified: Gateway,
    call: str,
    answer: Callable[[RawRequest], object],
    failure: type[NotifyError],
    error_code: str,
) -> None:
    verified.answer = answer
    sms = sms_at(verified.url)
    with pytest.raises(failure) as caught:
        await CALLS[call](sms)
    await sms.aclose()
    assert caught.value.code == error_code
    assert verified.refused == []
    assert PHONE not in str(caught.value), "phone numbers are masked"


LEAKY = error(
    "AuthFailure.SecretIdNotFound", f"SecretId {SECRET_ID} (key {SECRET_KEY}) for +86{PHONE} not found"
)


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("shape", ["timeout", "connection_refused", "provider_error", "bad_signature"])
async def test_query_failures_never_show_credentials_or_the_number(
    gateway: Gateway, caplog: pytest.LogCaptureFixture, call: str, shape: str
) -> None:
    caplog.set_level(logging.DEBUG)
    gateway.verify = lambda request: None
    if shape == "bad_signature":
        gateway.verify = lambda request: tc3_verify(request, {SECRET_ID: "another-key"}, "sms", time.time())
    gateway.answer = {"timeout": lambda r: HANG, "provider_error": LEAKY}.get(shape, SmsApi([]))
    url = f"http://127.0.0.1:{free_port()}" if shape == "connection_refused" else gateway.url
    sms = notifier(url, timeout_s=0.3)
    with pytest.raises(NotifyError) as caught:
        await CALLS[call](sms)
    await sms.aclose()
    if shape == "bad_signature":
        assert caught.value.code == "AuthFailure.SignatureFailure"
    exc: BaseException | None = caught.value
    texts = [caplog.text]
    while exc is not None:
        texts += [str(exc), repr(exc)]
        exc = exc.__cause__ or exc.__context__
    assert "tencent_sms" in caplog.text, "the failure is logged"
    for text in texts:
        assert SECRET_KEY not in text and SECRET_ID not in text, text
        assert PHONE not in text, text
