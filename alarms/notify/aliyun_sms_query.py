"""Aliyun Dysmsapi ``QuerySendDetails`` (API 2017-05-25) behind ``AliyunSms.lookup`` and ``report``: the send
records of one number on one date (yyyyMMdd, Beijing), 1 to 50 a page, the last 30 days only.

Record fields as the official SDK's model has them (aliyun/alibabacloud-go-sdk, dysmsapi-20170525/client/
query_send_details_response_body_model.go: SmsSendDetailDTOs.SmsSendDetailDTO[] with OutId, SendStatus,
ErrCode, ReceiveDate, SendDate, PhoneNum, TemplateCode, Content) and the API page
(help.aliyun.com/document_detail/419277.html: SendStatus 1 等待回执, 2 发送失败, 3 发送成功). A record carries
no BizId: a Receipt found by ``lookup`` has an empty provider message id, and ``report`` then finds the
record by OutId among the number's records of the day.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from alarms.notify import DeliveryReport, Receipt, RetryableError

__all__ = ["MAX_PAGES", "PAGE_SIZE", "Call", "lookup", "report", "send_dates"]

PROVIDER = "aliyun_sms"
# QuerySendDetails with these parameters (PhoneNumber, SendDate, PageSize, CurrentPage, BizId): the
# answer when its Code is OK, else the send's RetryableError/PermanentError (AliyunSms._call).
Call = Callable[[dict[str, str]], Awaitable[dict[str, Any]]]

PAGE_SIZE = 50  # the API's maximum
# 1,000 records of one number in one day: far past Aliyun's per-number frequency control (10 a day by
# default); more means something else sends to the number, and the answer cannot be trusted to be complete.
MAX_PAGES = 20
# SendDate is the Beijing date; China has kept UTC+8 without daylight saving since 1991.
BEIJING = timezone(timedelta(hours=8))
# A send begun this close to midnight may be dated the other day: Aliyun dates it by its own clock,
# after the request's travel (and our clock's error).
MIDNIGHT_MARGIN_S = 300
STATUS = {"1": "PENDING", "2": "FAILED", "3": "DELIVERED"}


def send_dates(sent_at_us: int) -> list[str]:
    """The SendDate values a send begun at ``sent_at_us`` may be recorded under, likeliest first."""
    dates: list[str] = []
    for offset_s in (0, MIDNIGHT_MARGIN_S, -MIDNIGHT_MARGIN_S):
        date = datetime.fromtimestamp(sent_at_us / 1e6 + offset_s, BEIJING).strftime("%Y%m%d")
        if date not in dates:
            dates.append(date)
    return dates


async def lookup(call: Call, number: str, key: str, sent_at_us: int) -> Receipt | None:
    """The record whose OutId is ``key`` (the message was accepted), None when there is none."""
    found = await _find(call, number, key, "", sent_at_us)
    if found is None:
        return None
    record, request_id = found
    return Receipt(PROVIDER, str(record.get("BizId") or ""), key, request_id)


async def report(call: Call, number: str, receipt: Receipt, sent_at_us: int) -> DeliveryReport | None:
    """The delivery receipt of the accepted message (by BizId when the receipt has one); None when
    Aliyun has no record of it (yet)."""
    found = await _find(call, number, receipt.idempotency_key, receipt.provider_message_id, sent_at_us)
    if found is None:
        return None
    record = found[0]
    status = STATUS.get(str(record.get("SendStatus", "")), "PENDING")
    if status == "PENDING":
        return DeliveryReport("PENDING")
    return DeliveryReport(
        status, str(record.get("ErrCode") or ""), at_us=_beijing_us(record.get("ReceiveDate"))
    )


async def _find(
    call: Call, number: str, key: str, biz_id: str, sent_at_us: int
) -> tuple[dict[str, Any], str] | None:
    for date in send_dates(sent_at_us):
        for page in range(1, MAX_PAGES + 1):
            query = {
                "PhoneNumber": number,
                "SendDate": date,
                "PageSize": str(PAGE_SIZE),
                "CurrentPage": str(page),
            }
            if biz_id:
                query["BizId"] = biz_id
            answer = await call(query)
            dtos = answer.get("SmsSendDetailDTOs")
            records = dtos.get("SmsSendDetailDTO") if isinstance(dtos, dict) else None
            records = records if isinstance(records, list) else []
            for record in records:
                if isinstance(record, dict) and record.get("OutId") == key:
                    return record, str(answer.get("RequestId", ""))
            total = str(answer.get("TotalCount", ""))
            if len(records) < PAGE_SIZE or (total.isdigit() and page * PAGE_SIZE >= int(total)):
                break
        else:
            raise RetryableError(
                PROVIDER, "TOO_MANY_RECORDS", f"more than {MAX_PAGES * PAGE_SIZE} records on {date}"
            )
    return None


def _beijing_us(text: object) -> int | None:
    """``2017-05-25 00:00:00`` (Beijing time) in microseconds since the epoch; None if absent or malformed."""
    try:
        when = datetime.strptime(str(text), "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING)
    except ValueError:
        return None
    return int(when.timestamp()) * 1_000_000
