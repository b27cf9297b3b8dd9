"""SMS through Aliyun Dysmsapi ``SendSms`` (API 2017-05-25), signed with ACS3-HMAC-SHA256 on httpx.

Why not the vendor SDK (``alibabacloud-dysmsapi20170525``): it is synchronous at heart (its ``_async``
twins sit on a second HTTP stack), pulls in the Tea/darabonba runtime, retries on its own (retries
belong to the dispatcher) and its exceptions carry the request. The signature is one page of the docs.

Which signature: the official SDK's ``alibabacloud_tea_openapi.client.Client.call_api`` (aliyun/darabonba-openapi
@8b916ca, python/alibabacloud_tea_openapi/client.py) sends every call through ``do_request`` with
``signature_algorithm or 'ACS3-HMAC-SHA256'`` unless ``signature_algorithm == 'v2'`` (the old RPC HMAC-SHA1)
is configured, and ``SendSms`` is RPC style with its parameters in the query of a POST to ``/``. The V3
scheme: https://help.aliyun.com/zh/sdk/product-overview/v3-request-structure-and-signature ("V3 版本请求体
& 签名机制"; its worked example is a test vector in tests/alarms/notify/test_aliyun_sms.py).

OutId carries the idempotency key. Aliyun does not deduplicate on it: it is echoed in the send records
(QuerySendDetails), which is how ``lookup`` reconciles a send interrupted by a crash and ``report`` finds
the delivery receipt (aliyun_sms_query.py).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from alarms.notify import (
    DeliveryReport,
    Message,
    NotifierConfigError,
    NotifyError,
    PermanentError,
    Receipt,
    RetryableError,
    aliyun_sms_query,
    mask_phone,
    read_secret,
)
from alarms.notify.sms import SmsGateway, SmsTemplate, exchange, national_number, redact

__all__ = ["PERMANENT_CODES", "RETRYABLE_CODES", "AliyunSms", "AliyunSmsConfig", "acs3_authorization"]

log = logging.getLogger(__name__)

PROVIDER = "aliyun_sms"
ALGORITHM = "ACS3-HMAC-SHA256"
# Per-variable limit for notification templates: "单个模板变量的长度可以超过默认的 35 字符上限" only after
# the limit is lifted for the template (help.aliyun.com/zh/document_detail/3041859.html).
DEFAULT_MAX_PARAM_CHARS = 35

# Codes from the SendSms error table (help.aliyun.com/document_detail/101346.html). Retryable: the
# per-number frequency control (1/min, 5/h, 10/day to one number) and the platform's own failures.
RETRYABLE_CODES = frozenset(
    {
        "isv.BUSINESS_LIMIT_CONTROL",
        "isp.SYSTEM_ERROR",
        "isp.GATEWAY_ERROR",
        "ServiceUnavailable",
        "InternalError",
        "SignatureNonceUsed",  # a new request gets a new nonce
    }
)
# Named so the table documents them; any other code is permanent too (a retry that cannot succeed costs
# money and hides the fault; the dispatcher falls back to another channel instead).
PERMANENT_CODES = frozenset(
    {
        "isv.MOBILE_NUMBER_ILLEGAL",
        "isv.MOBILE_COUNT_OVER_LIMIT",
        "isv.SMS_TEMPLATE_ILLEGAL",
        "isv.SMS_SIGNATURE_ILLEGAL",
        "isv.SMS_SIGNATURE_SCENE_ILLEGAL",
        "isv.TEMPLATE_MISSING_PARAMETERS",
        "isv.TEMPLATE_PARAMS_ILLEGAL",
        "isv.INVALID_PARAMETERS",
        "isv.INVALID_JSON_PARAM",
        "isv.PARAM_LENGTH_LIMIT",
        "isv.DAY_LIMIT_CONTROL",
        "isv.MONTH_LIMIT_CONTROL",
        "isv.AMOUNT_NOT_ENOUGH",
        "isv.OUT_OF_SERVICE",
        "isv.BLACK_KEY_CONTROL_LIMIT",
        "isv.DENY_IP_RANGE",
        "isp.RAM_PERMISSION_DENY",
        "InvalidAccessKeyId.NotFound",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
    }
)


@dataclass(frozen=True)
class AliyunSmsConfig:
    sign_name: str
    template_code: str
    template_params: tuple[str, ...]
    access_key_id_env: str = "ALIBABA_CLOUD_ACCESS_KEY_ID"
    access_key_secret_env: str = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
    endpoint: str = "https://dysmsapi.aliyuncs.com"
    timeout_s: float = 10.0
    max_param_chars: int = DEFAULT_MAX_PARAM_CHARS


def _encode(text: str) -> str:
    """RFC 3986 as the V3 docs give it: only A-Z a-z 0-9 - _ . ~ stay; space is %20, * is %2A."""
    return quote(text, safe="")


def acs3_authorization(
    access_key_id: str,
    access_key_secret: str,
    method: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    body: bytes,
) -> tuple[str, str]:
    """(canonical query string, Authorization header) for a request with these query parameters and
    these headers to sign (host, x-acs-*, content-type when there is a body)."""
    canonical_query = "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(query.items()))
    signed = sorted((k.lower(), v.strip()) for k, v in headers.items())
    canonical_headers = "".join(f"{k}:{v}\n" for k, v in signed)
    signed_headers = ";".join(k for k, _ in signed)
    canonical_request = "\n".join(
        [method, "/", canonical_query, canonical_headers, signed_headers, hashlib.sha256(body).hexdigest()]
    )
    string_to_sign = f"{ALGORITHM}\n{hashlib.sha256(canonical_request.encode()).hexdigest()}"
    signature = hmac.new(access_key_secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()
    return canonical_query, (
        f"{ALGORITHM} Credential={access_key_id},SignedHeaders={signed_headers},Signature={signature}"
    )


class AliyunSms(SmsGateway):
    """``Notifier`` for Aliyun SMS; ``transport`` (connection pool) may be shared with other notifiers."""

    provider = PROVIDER

    def __init__(
        self,
        config: AliyunSmsConfig,
        *,
        env: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        nonce: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        for setting in ("sign_name", "template_code"):
            if not getattr(config, setting).strip():
                raise NotifierConfigError(f"{PROVIDER}: {setting} is empty")
        super().__init__(config.endpoint, config.timeout_s, transport)
        self.config = config
        self.template = SmsTemplate(PROVIDER, config.template_params, config.max_param_chars)
        self._key_id = read_secret(f"{PROVIDER}.access_key_id", config.access_key_id_env, env)
        self._key_secret = read_secret(f"{PROVIDER}.access_key_secret", config.access_key_secret_env, env)
        self._base = f"{self.url.scheme}://{self._host}"
        self._clock = clock
        self._nonce = nonce

    def __repr__(self) -> str:
        return f"AliyunSms(endpoint={self._base!r}, template_code={self.config.template_code!r})"

    async def _send(self, message: Message) -> Receipt:
        values = self.template.values(message)
        number = national_number(PROVIDER, message.recipient)
        query = {
            "OutId": message.idempotency_key,
            "PhoneNumbers": number,
            "SignName": self.config.sign_name,
            "TemplateCode": self.config.template_code,
            "TemplateParam": json.dumps(
                dict(zip(self.template.names, values, strict=True)), ensure_ascii=False, separators=(",", ":")
            ),
        }
        answer = await self._call("SendSms", query, number)
        request_id = str(answer.get("RequestId", ""))
        if not answer.get("BizId"):
            raise PermanentError(
                PROVIDER, "NO_BIZID", f"accepted without a BizId (request {request_id or '?'})"
            )
        return Receipt(PROVIDER, str(answer["BizId"]), message.idempotency_key, request_id)

    async def lookup(self, message: Message, sent_at_us: int) -> Receipt | None:
        """``Lookup``: the record whose OutId is the message's idempotency key (aliyun_sms_query)."""
        number = national_number(PROVIDER, message.recipient)
        try:
            return await aliyun_sms_query.lookup(
                self._query_call(number), number, message.idempotency_key, sent_at_us
            )
        except NotifyError as exc:
            log.debug("%s", exc)
            raise

    async def report(self, receipt: Receipt, message: Message, sent_at_us: int) -> DeliveryReport | None:
        """``Lookup``: the delivery receipt of that record (aliyun_sms_query)."""
        number = national_number(PROVIDER, message.recipient)
        try:
            return await aliyun_sms_query.report(self._query_call(number), number, receipt, sent_at_us)
        except NotifyError as exc:
            log.debug("%s", exc)
            raise

    def _query_call(self, number: str) -> aliyun_sms_query.Call:
        async def call(query: dict[str, str]) -> dict[str, Any]:
            return await self._call("QuerySendDetails", query, number)

        return call

    async def _call(self, action: str, query: Mapping[str, str], number: str) -> dict[str, Any]:
        """One signed Dysmsapi 2017-05-25 call; its answer when Code is OK, else the classified error."""
        body = b""
        headers = {
            "host": self._host,
            "x-acs-action": action,
            "x-acs-version": "2017-05-25",
            "x-acs-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._clock())),
            "x-acs-signature-nonce": self._nonce(),
            "x-acs-content-sha256": hashlib.sha256(body).hexdigest(),
        }
        canonical_query, authorization = acs3_authorization(
            self._key_id.reveal(), self._key_secret.reveal(), "POST", query, headers, body
        )
        status, answer = await exchange(
            self._transport,
            PROVIDER,
            f"{self._base}/?{canonical_query}",
            {**headers, "Authorization": authorization, "Accept": "application/json"},
            body,
            self.config.timeout_s,
        )
        code = str(answer.get("Code", ""))
        if status == 200 and code == "OK":
            return answer
        request_id = str(answer.get("RequestId", ""))
        detail = redact(str(answer.get("Message", "")), [self._key_id, self._key_secret])
        detail = detail.replace(number, mask_phone(number))
        detail = f"{detail} (HTTP {status}, request {request_id or '?'})"
        if code in RETRYABLE_CODES or code.startswith("Throttling"):
            raise RetryableError(PROVIDER, code, detail)
        raise PermanentError(PROVIDER, code or f"HTTP_{status}", detail)
