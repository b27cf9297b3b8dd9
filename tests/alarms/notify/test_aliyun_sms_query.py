"""AliyunSms.lookup and report against a loopback Dysmsapi that keeps one number's send records and answers
QuerySendDetails as the API page describes it (SendDate, PageSize at most 50, CurrentPage, optional BizId);
every request's ACS3 signature recomputed by the verifier of test_aliyun_sms."""

from __future__ import annotations

import calendar
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from alarms.notify import DeliveryReport, Lookup, NotifyError, PermanentError, Receipt, RetryableError
from alarms.notify.aliyun_sms import AliyunSms
from alarms.notify.aliyun_sms_query import MAX_PAGES, send_dates
from tests.alarms.notify.conftest import Gateway
from tests.alarms.notify.test_aliyun_sms import KEY_ID, KEY_SECRET, PHONE, acs3_verify, message, notifier
from tests.support.http_server import CLOSE, HANG, RawRequest, Reply, free_port

KEY = "evt-42:duty-7:sms"


def utc_us(*fields: int) -> int:
    return calendar.timegm((*fields, 0, 0, 0)) * 1_000_000


SENT_US = utc_us(2026, 11, 30, 0, 15, 0)  # 08:15 in Beijing


def record(
    out_id: str, status: int = 3, err: str = "DELIVERED", receive: str = "2026-11-30 08:15:07"
) -> dict[str, Any]:
    return {
        "PhoneNum": PHONE, "SendStatus": status, "ErrCode": err, "TemplateCode": "SMS_123456789",
        "Content": "【危化监测】某某化工 一号罐区 TK-101 液位 二级", "SendDate": "2026-11-30 08:15:03",
        "ReceiveDate": receive, "OutId": out_id,
    }  # fmt: skip


class Dysmsapi:
    """The records of PHONE by SendDate (and BizId), answered a page at a time."""

    def __init__(
        self, by_date: dict[str, list[dict[str, Any]]], biz_ids: dict[str, str] | None = None
    ) -> None:
        self.by_date = by_date
        self.biz_ids = biz_ids or {}  # BizId -> OutId of the record it names

    def __call__(self, request: RawRequest) -> Reply:
        q = request.query()
        if (
            request.header("x-acs-action") != "QuerySendDetails"
            or request.header("x-acs-version") != "2017-05-25"
        ):
            return Reply(400, {"Code": "InvalidAction.NotFound", "Message": "?", "RequestId": "req-q"})
        size, page = int(q["PageSize"]), int(q["CurrentPage"])
        if not 1 <= size <= 50 or page < 1 or q["PhoneNumber"] != PHONE:
            return Reply(200, {"Code": "isv.INVALID_PARAMETERS", "Message": "bad", "RequestId": "req-q"})
        records = self.by_date.get(q["SendDate"], [])
        if "BizId" in q:
            records = [r for r in records if self.biz_ids.get(q["BizId"]) == r["OutId"]]
        shown = records[(page - 1) * size : page * size]
        return Reply(200, {
            "Code": "OK", "Message": "OK", "RequestId": "req-q", "TotalCount": str(len(records)),
            "SmsSendDetailDTOs": {"SmsSendDetailDTO": shown},
        })  # fmt: skip


@pytest.fixture
def verified(gateway: Gateway) -> Gateway:
    nonces: set[str] = set()
    gateway.verify = lambda request: acs3_verify(request, {KEY_ID: KEY_SECRET}, time.time(), nonces)
    return gateway


def queries(gateway: Gateway) -> list[dict[str, str]]:
    return [r.query() for r in gateway.requests]


def test_aliyun_sms_is_a_lookup() -> None:
    sms: Lookup = notifier("http://127.0.0.1:9")  # mypy checks Lookup's methods and their types
    assert callable(sms.lookup) and callable(sms.report)


@pytest.mark.parametrize(
    ("sent_us", "dates"),
    [
        (SENT_US, ["20261130"]),
        (utc_us(2026, 11, 30, 17, 0, 0), ["20261201"]),  # 01:00 in Beijing: the Beijing date, not UTC's
        (utc_us(2026, 11, 30, 15, 58, 0), ["20261130", "20261201"]),  # 23:58 in Beijing
        (utc_us(2026, 11, 30, 16, 1, 0), ["20261201", "20261130"]),  # 00:01 in Beijing
        (utc_us(2026, 11, 30, 15, 54, 0), ["20261130"]),  # 23:54: outside the 5-minute margin
    ],
)
def test_send_dates_are_beijing_dates_with_the_other_day_near_midnight(
    sent_us: int, dates: list[str]
) -> None:
    assert send_dates(sent_us) == dates


async def test_lookup_finds_the_record_by_out_id(verified: Gateway) -> None:
    verified.answer = Dysmsapi({"20261130": [record("evt-41:duty-7:sms"), record(KEY)]})
    sms = notifier(verified.url)
    receipt = await sms.lookup(message(KEY), SENT_US)
    await sms.aclose()
    assert verified.refused == []
    assert receipt == Receipt("aliyun_sms", "", KEY, "req-q")
    (request,) = verified.requests
    assert (request.method, request.path, request.body) == ("POST", "/", b"")
    assert request.query() == {
        "PhoneNumber": PHONE,
        "SendDate": "20261130",
        "PageSize": "50",
        "CurrentPage": "1",
    }


async def test_lookup_without_a_record_is_none_after_every_candidate_date(verified: Gateway) -> None:
    near_midnight = utc_us(2026, 11, 30, 15, 58, 0)
    verified.answer = Dysmsapi({"20261130": [record("another")], "20261201": [record("yet-another")]})
    sms = notifier(verified.url)
    assert await sms.lookup(message(KEY), near_midnight) is None
    await sms.aclose()
    assert [q["SendDate"] for q in queries(verified)] == ["20261130", "20261201"]


async def test_lookup_finds_a_send_recorded_on_the_next_day(verified: Gateway) -> None:
    verified.answer = Dysmsapi({"20261201": [record(KEY)]})
    sms = notifier(verified.url)
    receipt = await sms.lookup(message(KEY), utc_us(2026, 11, 30, 15, 59, 58))
    await sms.aclose()
    assert receipt is not None and receipt.idempotency_key == KEY


async def test_lookup_pages_through_the_day(verified: Gateway) -> None:
    others = [record(f"old-{i}:duty-7:sms") for i in range(50)]
    verified.answer = Dysmsapi({"20261130": [*others, record(KEY)]})
    sms = notifier(verified.url)
    assert await sms.lookup(message(KEY), SENT_US) == Receipt("aliyun_sms", "", KEY, "req-q")
    assert await sms.lookup(message("evt-99:duty-7:sms"), SENT_US) is None
    await sms.aclose()
    assert [q["CurrentPage"] for q in queries(verified)] == ["1", "2", "1", "2"]


async def test_a_full_last_page_ends_the_paging(verified: Gateway) -> None:
    verified.answer = Dysmsapi({"20261130": [record(f"old-{i}:duty-7:sms") for i in range(50)]})
    sms = notifier(verified.url)
    assert await sms.lookup(message(KEY), SENT_US) is None
    await sms.aclose()
    assert [q["CurrentPage"] for q in queries(verified)] == ["1"], "TotalCount 50: no second page"


async def test_more_records_than_the_page_bound_cannot_tell(verified: Gateway) -> None:
    verified.answer = Dysmsapi({"20261130": [record(f"e{i}") for i in range(MAX_PAGES * 50 + 1)]})
    sms = notifier(verified.url)
    with pytest.raises(RetryableError) as caught:
        await sms.lookup(message(KEY), SENT_US)
    await sms.aclose()
    assert caught.value.code == "TOO_MANY_RECORDS" and len(verified.requests) == MAX_PAGES


@pytest.mark.parametrize(
    ("kept", "expected"),
    [
        (record(KEY, 3, "DELIVERED", "2026-11-30 08:15:07"), DeliveryReport("DELIVERED", "DELIVERED", at_us=utc_us(2026, 11, 30, 0, 15, 7))),
        (record(KEY, 2, "MK:0001", "2026-11-30 08:16:00"), DeliveryReport("FAILED", "MK:0001", at_us=utc_us(2026, 11, 30, 0, 16, 0))),
        (record(KEY, 1, "", ""), DeliveryReport("PENDING")),
        (record(KEY, 2, "IC:0001", ""), DeliveryReport("FAILED", "IC:0001")),
    ],
)  # fmt: skip
async def test_report_maps_send_status(
    verified: Gateway, kept: dict[str, Any], expected: DeliveryReport
) -> None:
    verified.answer = Dysmsapi({"20261130": [record("another", 2, "X"), kept]}, {"900619746936498440^0": KEY})
    sms = notifier(verified.url)
    found = await sms.report(Receipt("aliyun_sms", "900619746936498440^0", KEY), message(KEY), SENT_US)
    await sms.aclose()
    assert verified.refused == []
    assert found == expected
    assert queries(verified)[0]["BizId"] == "900619746936498440^0"


async def test_report_without_biz_id_finds_the_record_by_out_id(verified: Gateway) -> None:
    verified.answer = Dysmsapi({"20261130": [record("another", 2, "X"), record(KEY)]})
    sms = notifier(verified.url)
    found = await sms.report(Receipt("aliyun_sms", "", KEY), message(KEY), SENT_US)
    assert found is not None and found.status == "DELIVERED"
    assert await sms.report(Receipt("aliyun_sms", "", "evt-0:duty-7:sms"), message(KEY), SENT_US) is None
    await sms.aclose()
    assert all("BizId" not in q for q in queries(verified))


LookupCall = Callable[[AliyunSms], Any]
CALLS: dict[str, LookupCall] = {
    "lookup": lambda sms: sms.lookup(message(KEY), SENT_US),
    "report": lambda sms: sms.report(Receipt("aliyun_sms", "1^0", KEY), message(KEY), SENT_US),
}


def code(answer_code: str, text: str = "refused") -> Callable[[RawRequest], Reply]:
    return lambda request: Reply(200, {"Code": answer_code, "Message": text, "RequestId": "req-x"})


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize(
    ("answer", "error", "error_code"),
    [
        (code("isv.BUSINESS_LIMIT_CONTROL"), RetryableError, "isv.BUSINESS_LIMIT_CONTROL"),
        (code("Throttling.User"), RetryableError, "Throttling.User"),
        (code("isp.SYSTEM_ERROR"), RetryableError, "isp.SYSTEM_ERROR"),
        (
            code("isv.MOBILE_NUMBER_ILLEGAL", f"非法手机号 {PHONE}"),
            PermanentError,
            "isv.MOBILE_NUMBER_ILLEGAL",
        ),
        (code("isp.RAM_PERMISSION_DENY"), PermanentError, "isp.RAM_PERMISSION_DENY"),
        (lambda r: Reply(500, {"Code": "InternalError"}), RetryableError, "HTTP_500"),
        (lambda r: Reply(200, None, raw=b"not json"), PermanentError, "HTTP_200"),
        (lambda r: CLOSE, RetryableError, "CONNECTION"),
    ],
)
async def test_query_failures_are_classified_like_sends(
    verified: Gateway,
    call: str,
    answer: Callable[[RawRequest], object],
    error: type[NotifyError],
    error_code: str,
) -> None:
    verified.answer = answer
    sms = notifier(verified.url)
    with pytest.raises(error) as caught:
        await CALLS[call](sms)
    await sms.aclose()
    assert caught.value.code == error_code
    assert verified.refused == []
    assert PHONE not in str(caught.value), "phone numbers are masked"


LEAKY = code("InvalidAccessKeyId.NotFound", f"access key {KEY_ID} / {KEY_SECRET} for {PHONE} is not found.")


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("shape", ["timeout", "connection_refused", "provider_error", "bad_signature"])
async def test_query_failures_never_show_credentials_or_the_number(
    gateway: Gateway, caplog: pytest.LogCaptureFixture, call: str, shape: str
) -> None:
    caplog.set_level(logging.DEBUG)
    gateway.verify = lambda request: None
    if shape == "bad_signature":
        gateway.verify = lambda request: acs3_verify(request, {KEY_ID: "another-secret"}, time.time())
    gateway.answer = {"timeout": lambda r: HANG, "provider_error": LEAKY}.get(shape, Dysmsapi({}))
    url = f"http://127.0.0.1:{free_port()}" if shape == "connection_refused" else gateway.url
    sms = notifier(url, timeout_s=0.3)
    with pytest.raises(NotifyError) as caught:
        await CALLS[call](sms)
    await sms.aclose()
    if shape == "bad_signature":
        assert caught.value.code == "SignatureDoesNotMatch"
    exc: BaseException | None = caught.value
    texts = [caplog.text]
    while exc is not None:
        texts += [str(exc), repr(exc)]
        exc = exc.__cause__ or exc.__context__
    assert "aliyun_sms" in caplog.text, "the failure is logged"
    for text in texts:
        assert KEY_SECRET not in text and KEY_ID not in text, text
        assert PHONE not in text, text
