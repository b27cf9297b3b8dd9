"""Tencent Cloud SMS ``PullSmsSendStatusByPhoneNumber`` (API 2021-01-11) behind ``TencentSms.lookup`` and
``report``: the status reports of one number between BeginTime and EndTime (Unix seconds; the last 7 days
only), at most 100 an answer.

Parameters and fields as the API page has them (tencentcloud.com/document/api/382/40518; the CLI's example,
TencentCloud/tencentcloud-cli tccli/examples/sms/v20210111/PullSmsSendStatusByPhoneNumber.md):
PullSmsSendStatusSet[] with SerialNo, SessionContext, ReportStatus (SUCCESS | FAIL), Description (DELIVRD or
the operator's code), UserReceiveTime (Unix seconds). Two limits shape this module:

- Offset "目前固定设置为0" (is fixed at 0): a full answer is not paged by offset but by halving its window.
- Only messages with a status report are listed: a message accepted moments ago, or whose report the operator
  has not returned yet, is not there, so ``lookup`` answering None can be wrong for a few seconds to minutes
  after the send (hours when the handset is off).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from alarms.notify import DeliveryReport, Receipt, RetryableError

__all__ = ["LIMIT", "MAX_REQUESTS", "Call", "lookup", "report", "window"]

PROVIDER = "tencent_sms"
# PullSmsSendStatusByPhoneNumber with these parameters (BeginTime, EndTime, Offset, Limit; the caller adds
# PhoneNumber and SmsSdkAppId): the Response object, or the send's RetryableError/PermanentError.
Call = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

LIMIT = 100  # the API's maximum
# Halvings of a full window: 32 requests cover thousands of reports; Tencent's per-number frequency limits
# (default 10 a day) make even one full answer unlikely.
MAX_REQUESTS = 32
# The window starts this long before the send began: our clock and Tencent's differ.
SKEW_S = 300
STATUS = {"SUCCESS": "DELIVERED", "FAIL": "FAILED"}


def window(sent_at_us: int, now_s: float) -> tuple[int, int]:
    """(BeginTime, EndTime) for a send begun at ``sent_at_us``: from just before it until now (whether
    Tencent filters on the send time or the report time, the message's report is inside)."""
    begin = sent_at_us // 1_000_000 - SKEW_S
    return begin, max(int(now_s), begin)


async def lookup(call: Call, key: str, sent_at_us: int, now_s: float) -> Receipt | None:
    """The status report whose SessionContext is ``key`` (the message was accepted), None when there is
    none (yet: see the module's docstring)."""
    found = await _find(call, "SessionContext", key, window(sent_at_us, now_s))
    if found is None:
        return None
    entry, request_id = found
    return Receipt(PROVIDER, str(entry.get("SerialNo") or ""), key, request_id)


async def report(call: Call, receipt: Receipt, sent_at_us: int, now_s: float) -> DeliveryReport | None:
    """The status report of the accepted message (by SerialNo, by SessionContext if the receipt has no
    SerialNo); None when there is none yet."""
    field, value = ("SerialNo", receipt.provider_message_id)
    if not value:
        field, value = "SessionContext", receipt.idempotency_key
    found = await _find(call, field, value, window(sent_at_us, now_s))
    if found is None:
        return None
    entry = found[0]
    status = STATUS.get(str(entry.get("ReportStatus", "")), "PENDING")
    received = str(entry.get("UserReceiveTime", ""))
    at_us = int(received) * 1_000_000 if received.isdigit() else None
    return DeliveryReport(status, str(entry.get("Description") or ""), at_us=at_us)


async def _find(
    call: Call, field: str, value: str, span: tuple[int, int]
) -> tuple[dict[str, Any], str] | None:
    spans = [span]
    requests = 0
    while spans:
        begin, end = spans.pop()
        if requests == MAX_REQUESTS:
            raise RetryableError(PROVIDER, "TOO_MANY_REPORTS", f"more than {MAX_REQUESTS} pulls needed")
        requests += 1
        response = await call({"BeginTime": begin, "EndTime": end, "Offset": 0, "Limit": LIMIT})
        entries = response.get("PullSmsSendStatusSet")
        entries = entries if isinstance(entries, list) else []
        for entry in entries:
            if isinstance(entry, dict) and entry.get(field) == value:
                return entry, str(response.get("RequestId", ""))
        if len(entries) >= LIMIT:
            if end - begin < 2:
                raise RetryableError(
                    PROVIDER, "TOO_MANY_REPORTS", f"more than {LIMIT} reports within {end - begin + 1} s"
                )
            middle = (begin + end) // 2  # the halves share a second: bounds may be inclusive or not
            spans += [(middle, end), (begin, middle)]  # the earlier half first: the send began there
    return None
