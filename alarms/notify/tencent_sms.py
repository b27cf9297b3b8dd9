"""SMS through Tencent Cloud ``SendSms`` (API 2021-01-11), signed with TC3-HMAC-SHA256 on httpx.

Why not the vendor SDK (``tencentcloud-sdk-python-sms``): it is synchronous (requests), retries on its own
(retries belong to the dispatcher) and would be the only user of its runtime. The signature is one page:
"Signature v3", the same text in every product's API docs (e.g. https://tencentcloud.com/document/api/1150/49447);
its worked CVM example is a test vector in tests/alarms/notify/test_tencent_sms.py. SendSms 2021-01-11 request
and answer shapes as in the SDK's models; codes from the SMS error table
(https://cloud.tencent.com/document/api/382/59177) and the API 3.0 common codes (.../382/38780).

SessionContext carries the idempotency key. Tencent does not deduplicate on it: it is returned unchanged
in the answer and in status pulls/callbacks, which is how ``lookup`` reconciles a send interrupted by a
crash and ``report`` finds the delivery receipt (tencent_sms_query.py).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from alarms.notify import (
    DeliveryReport,
    Message,
    NotifierConfigError,
    NotifyError,
    PermanentError,
    Receipt,
    RetryableError,
    mask_phone,
    read_secret,
    tencent_sms_query,
)
from alarms.notify.sms import SmsGateway, SmsTemplate, exchange, national_number, redact

__all__ = ["RETRYABLE_PREFIXES", "TencentSms", "TencentSmsConfig", "tc3_authorization"]

log = logging.getLogger(__name__)

PROVIDER = "tencent_sms"
ALGORITHM = "TC3-HMAC-SHA256"
CONTENT_TYPE = "application/json; charset=utf-8"
# "单个变量取值最多支持12个字" for accounts with personal real-name authentication; enterprise accounts have no
# per-variable limit, only the 500-character message (tencentcloud.com/zh/document/product/382/40653; an older
# FAQ, cloud.tencent.com/document/product/382/13301, still says 6 for non-verification templates). The
# strictest current rule by default: an enterprise account raises it.
DEFAULT_MAX_PARAM_CHARS = 12

# LimitExceeded.* is throttling (per-number 30 s / 1 h / day frequency, app frequency);
# RequestLimitExceeded.* the API's own rate limit; InternalError.Timeout and friends the platform's.
RETRYABLE_PREFIXES = ("LimitExceeded", "RequestLimitExceeded", "InternalError", "ResourceUnavailable")
# Except where waiting cannot help within the alarm's lifetime: the day's quota is spent.
PERMANENT_LIMITS = frozenset({"LimitExceeded.AppDailyLimit", "LimitExceeded.PhoneNumberDailyLimit"})


@dataclass(frozen=True)
class TencentSmsConfig:
    sms_sdk_app_id: str
    sign_name: str
    template_id: str
    template_params: tuple[str, ...]
    region: str = "ap-guangzhou"
    secret_id_env: str = "TENCENTCLOUD_SECRET_ID"
    secret_key_env: str = "TENCENTCLOUD_SECRET_KEY"
    endpoint: str = "https://sms.tencentcloudapi.com"
    timeout_s: float = 10.0
    max_param_chars: int = DEFAULT_MAX_PARAM_CHARS


def tc3_authorization(
    secret_id: str,
    secret_key: str,
    service: str,
    timestamp: int,
    headers: Mapping[str, str],
    body: bytes,
) -> str:
    """Authorization header for a POST to ``/`` signing ``headers`` (content-type and host at least)."""
    signed = sorted((k.strip().lower(), v.strip().lower()) for k, v in headers.items())
    canonical_headers = "".join(f"{k}:{v}\n" for k, v in signed)
    signed_headers = ";".join(k for k, _ in signed)
    canonical_request = "\n".join(
        ["POST", "/", "", canonical_headers, signed_headers, hashlib.sha256(body).hexdigest()]
    )
    # The UTC date of the timestamp: a local (UTC+8) date fails every request between 00:00 and 08:00.
    date = time.strftime("%Y-%m-%d", time.gmtime(timestamp))
    scope = f"{date}/{service}/tc3_request"
    string_to_sign = "\n".join(
        [ALGORITHM, str(timestamp), scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )

    def sign(key: bytes, text: str) -> bytes:
        return hmac.new(key, text.encode(), hashlib.sha256).digest()

    key = sign(sign(sign(("TC3" + secret_key).encode(), date), service), "tc3_request")
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return (
        f"{ALGORITHM} Credential={secret_id}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
    )


class TencentSms(SmsGateway):
    """``Notifier`` for Tencent Cloud SMS; ``transport`` (connection pool) may be shared with other notifiers."""

    provider = PROVIDER

    def __init__(
        self,
        config: TencentSmsConfig,
        *,
        env: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        service: str = "sms",
    ) -> None:
        for setting in ("sms_sdk_app_id", "sign_name", "template_id", "region"):
            if not getattr(config, setting).strip():
                raise NotifierConfigError(f"{PROVIDER}: {setting} is empty")
        super().__init__(config.endpoint, config.timeout_s, transport)
        self.config = config
        self.template = SmsTemplate(PROVIDER, config.template_params, config.max_param_chars)
        self._secret_id = read_secret(f"{PROVIDER}.secret_id", config.secret_id_env, env)
        self._secret_key = read_secret(f"{PROVIDER}.secret_key", config.secret_key_env, env)
        self._url = f"{self.url.scheme}://{self._host}/"
        self._service = service
        self._clock = clock

    def __repr__(self) -> str:
        return f"TencentSms(endpoint={self._url!r}, template_id={self.config.template_id!r})"

    async def _send(self, message: Message) -> Receipt:
        values = self.template.values(message)
        phone = "+86" + national_number(PROVIDER, message.recipient)
        request = {
            "PhoneNumberSet": [phone],
            "SmsSdkAppId": self.config.sms_sdk_app_id,
            "SignName": self.config.sign_name,
            "TemplateId": self.config.template_id,
            "TemplateParamSet": values,
            "SessionContext": message.idempotency_key,
        }
        status, response = await self._call("SendSms", request, phone)
        request_id = str(response.get("RequestId", ""))
        entries = response.get("SendStatusSet")
        entry: dict[str, Any] = entries[0] if isinstance(entries, list) and len(entries) == 1 else {}
        if not isinstance(entry, dict) or entry.get("PhoneNumber") != phone:
            raise PermanentError(
                PROVIDER, f"HTTP_{status}", f"no SendStatusSet entry (request {request_id or '?'})"
            )
        code = str(entry.get("Code", ""))
        if code == "Ok" and entry.get("SerialNo"):
            return Receipt(PROVIDER, str(entry["SerialNo"]), message.idempotency_key, request_id)
        self._raise(code, entry.get("Message"), status, request_id, phone)
        raise AssertionError("unreachable")

    async def lookup(self, message: Message, sent_at_us: int) -> Receipt | None:
        """``Lookup``: the status report whose SessionContext is the message's idempotency key
        (tencent_sms_query; a message is listed only once its status report exists)."""
        phone = "+86" + national_number(PROVIDER, message.recipient)
        try:
            return await tencent_sms_query.lookup(
                self._query_call(phone), message.idempotency_key, sent_at_us, self._clock()
            )
        except NotifyError as exc:
            log.debug("%s", exc)
            raise

    async def report(self, receipt: Receipt, message: Message, sent_at_us: int) -> DeliveryReport | None:
        """``Lookup``: the status report of the accepted message (tencent_sms_query)."""
        phone = "+86" + national_number(PROVIDER, message.recipient)
        try:
            return await tencent_sms_query.report(self._query_call(phone), receipt, sent_at_us, self._clock())
        except NotifyError as exc:
            log.debug("%s", exc)
            raise

    def _query_call(self, phone: str) -> tencent_sms_query.Call:
        async def call(request: dict[str, Any]) -> dict[str, Any]:
            request = {**request, "PhoneNumber": phone, "SmsSdkAppId": self.config.sms_sdk_app_id}
            return (await self._call("PullSmsSendStatusByPhoneNumber", request, phone))[1]

        return call

    async def _call(self, action: str, request: dict[str, Any], phone: str) -> tuple[int, dict[str, Any]]:
        """One signed SMS 2021-01-11 call: (HTTP status, its Response object), or the classified error
        the Response carries."""
        body = json.dumps(request, ensure_ascii=False, separators=(",", ":")).encode()
        timestamp = int(self._clock())
        signed = {"content-type": CONTENT_TYPE, "host": self._host, "x-tc-action": action}
        authorization = tc3_authorization(
            self._secret_id.reveal(), self._secret_key.reveal(), self._service, timestamp, signed, body
        )
        headers = {
            **signed,
            "authorization": authorization,
            "x-tc-version": "2021-01-11",
            "x-tc-timestamp": str(timestamp),
            "x-tc-region": self.config.region,
        }
        status, answer = await exchange(
            self._transport, PROVIDER, self._url, headers, body, self.config.timeout_s
        )
        response = answer.get("Response")
        if not isinstance(response, dict):
            raise PermanentError(PROVIDER, f"HTTP_{status}", "the answer has no Response object")
        error = response.get("Error")
        if isinstance(error, dict):
            request_id = str(response.get("RequestId", ""))
            self._raise(str(error.get("Code", "")), error.get("Message"), status, request_id, phone)
        return status, response

    def _raise(self, code: str, text: object, status: int, request_id: str, phone: str) -> None:
        detail = redact(str(text or ""), [self._secret_id, self._secret_key])
        detail = detail.replace(phone, mask_phone(phone)).replace(phone[3:], mask_phone(phone))
        detail = f"{detail} (HTTP {status}, request {request_id or '?'})"
        if code not in PERMANENT_LIMITS and code.startswith(RETRYABLE_PREFIXES):
            raise RetryableError(PROVIDER, code, detail)
        raise PermanentError(PROVIDER, code or f"HTTP_{status}", detail)
