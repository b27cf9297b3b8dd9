"""Voice calls through Aliyun Dyvmsapi ``SingleCallByTts`` (API 2017-05-25): a text-to-speech template read
to the duty officer's phone, signed with ACS3-HMAC-SHA256 by ``alarms.notify.aliyun_sms.acs3_authorization``.

Sources (help.aliyun.com): SingleCallByTts, document_detail/393519 (CalledShowNumber optional: empty means the
shared number pool, "公共模式"; one CalledNumber a call; 1/min, 5/h, 20/24 h to one number; answer Code, Message,
RequestId, CallId); OutId "字符串类型，长度为1~15个字节" (the API's request model, e.g. muzea/aliyun-sdk-node
dist/dyvmsapi/SingleCallByTts/req.d.ts); PlayTimes 1-3. Error codes: document_detail/178344 ("API错误码").
QueryCallDetailByCallId, document_detail/393529: CallId, ProdId (11000000300006 for voice notification),
QueryDate (Unix ms; the 24 h from it are searched); ``Data`` is a JSON string (state, stateDesc, duration, endDate,
...), empty until the record is synchronised ("建议您呼叫结束后等待 3 到 5 分钟"). Call states:
document_detail/55085 and 112804 (200000 heard it all, 200001 hung up early, 200101/200201 calling/ringing).

OutId carries the idempotency key, or ``h`` + 14 hex digits of its SHA-256 when the key is longer than the
15 bytes Aliyun takes (``out_id``). Aliyun has no query by OutId (it only comes back in VoiceReport receipts
pushed through MNS), so ``lookup`` answers None: after a crash mid-send the officer may be called twice, which
is the lesser harm for a critical alarm than not being called.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import time
import uuid
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
)
from alarms.notify.aliyun_sms import RETRYABLE_CODES, acs3_authorization
from alarms.notify.sms import SmsGateway, SmsTemplate, exchange, national_number, redact

__all__ = ["PERMANENT_CODES", "RETRYABLE_CODES", "AliyunVoice", "AliyunVoiceConfig", "out_id"]

PROVIDER = "aliyun_voice"
VERSION = "2017-05-25"
VOICE_NOTIFICATION = "11000000300006"  # ProdId of SingleCallByTts/SingleCallByVoice calls
MAX_OUT_ID_BYTES = 15
# No per-variable limit is published for voice templates (the whole text is 1-1000 characters,
# help.aliyun.com/document_detail/414170); the SMS default keeps a spoken value short.
DEFAULT_MAX_PARAM_CHARS = 35
# Call states (document_detail/55085, 112804): heard it all, hung up early, answered (in progress).
ANSWERED = frozenset({"200000", "200001", "200102"})
CALLING = frozenset({"200101", "200201"})  # dialling, ringing
BEIJING_OFFSET_S = 8 * 3600  # Data's times are local (UTC+8) without a zone

# RETRYABLE_CODES (imported): the Dyvmsapi table has the same throttling and platform codes as SendSms
# (isv.BUSINESS_LIMIT_CONTROL, isp.SYSTEM_ERROR, isp.GATEWAY_ERROR, InternalError, ServiceUnavailable) plus
# Throttling.*. Named here so the table documents them; any other code is permanent too.
PERMANENT_CODES = frozenset(
    {
        "isv.MOBILE_NUMBER_ILLEGAL",
        "isv.DISPLAY_NUMBER_ILLEGAL",
        "isv.TTS_TEMPLATE_ILLEGAL",
        "isv.TEMPLATE_ILLEGAL",
        "isv.TEMPLATE_MISSING_PARAMETERS",
        "isv.TEMPLATE_PARAMS_ILLEGAL",
        "isv.BLACK_KEY_CONTROL_LIMIT",
        "isv.PARAM_LENGTH_LIMIT",
        "isv.PARAM_NOT_SUPPORT_URL",
        "isv.INVALID_PARAMETERS",
        "isv.COMPLAINT_REJECT",
        "isv.VOICE_CALL_FAIL",
        "isv.OUT_OF_SERVICE",
        "isv.AMOUNT_NOT_ENOUGH",
        "isv.ACCOUNT_ABNORMAL",
        "isv.ACCOUNT_NOT_EXISTS",
        "isv.PRODUCT_UNSUBSCRIBE",
        "isv.PRODUCT_UN_SUBSCRIPT",
        "isp.RAM_PERMISSION_DENY",
        "InvalidAccessKeyId.NotFound",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
    }
)


@dataclass(frozen=True)
class AliyunVoiceConfig:
    tts_code: str
    template_params: tuple[str, ...]
    called_show_number: str = ""  # empty: the shared number pool (public mode)
    play_times: int = 2
    access_key_id_env: str = "ALIBABA_CLOUD_ACCESS_KEY_ID"
    access_key_secret_env: str = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
    endpoint: str = "https://dyvmsapi.aliyuncs.com"
    timeout_s: float = 10.0
    max_param_chars: int = DEFAULT_MAX_PARAM_CHARS


def out_id(idempotency_key: str) -> str:
    """The OutId for a key: the key itself when it fits Aliyun's 15 bytes, else a stable digest of it."""
    if 0 < len(idempotency_key.encode()) <= MAX_OUT_ID_BYTES:
        return idempotency_key
    return "h" + hashlib.sha256(idempotency_key.encode()).hexdigest()[: MAX_OUT_ID_BYTES - 1]


class AliyunVoice(SmsGateway):
    """``Notifier`` and ``Lookup`` for Aliyun voice notification calls; ``transport`` may be shared."""

    provider = PROVIDER

    def __init__(
        self,
        config: AliyunVoiceConfig,
        *,
        env: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        nonce: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        if not config.tts_code.strip():
            raise NotifierConfigError(f"{PROVIDER}: tts_code is empty")
        if config.play_times not in (1, 2, 3):
            raise NotifierConfigError(f"{PROVIDER}: play_times must be 1, 2 or 3")
        super().__init__(config.endpoint, config.timeout_s, transport)
        self.config = config
        self.template = SmsTemplate(PROVIDER, config.template_params, config.max_param_chars)
        self._key_id = read_secret(f"{PROVIDER}.access_key_id", config.access_key_id_env, env)
        self._key_secret = read_secret(f"{PROVIDER}.access_key_secret", config.access_key_secret_env, env)
        self._base = f"{self.url.scheme}://{self._host}"
        self._clock = clock
        self._nonce = nonce

    def __repr__(self) -> str:
        return f"AliyunVoice(endpoint={self._base!r}, tts_code={self.config.tts_code!r})"

    async def _send(self, message: Message) -> Receipt:
        values = self.template.values(message)
        number = national_number(PROVIDER, message.recipient)
        query = {
            "CalledNumber": number,
            "TtsCode": self.config.tts_code,
            "TtsParam": json.dumps(
                dict(zip(self.template.names, values, strict=True)), ensure_ascii=False, separators=(",", ":")
            ),
            "PlayTimes": str(self.config.play_times),
            "OutId": out_id(message.idempotency_key),
        }
        if self.config.called_show_number:
            query["CalledShowNumber"] = self.config.called_show_number
        status, answer = await self._call("SingleCallByTts", query)
        request_id = str(answer.get("RequestId", ""))
        if status == 200 and answer.get("Code") == "OK":
            if not answer.get("CallId"):
                raise PermanentError(PROVIDER, "HTTP_200", f"no CallId (request {request_id or '?'})")
            return Receipt(PROVIDER, str(answer["CallId"]), message.idempotency_key, request_id)
        raise self._refusal(status, answer, number)

    async def lookup(self, message: Message, sent_at_us: int) -> Receipt | None:
        """Always None, so the dispatcher calls again: Dyvmsapi cannot find a call by OutId (module docstring)."""
        return None

    async def report(self, receipt: Receipt, message: Message, sent_at_us: int) -> DeliveryReport | None:
        """The call's outcome from QueryCallDetailByCallId: DELIVERED once answered, PENDING while dialling
        or ringing, FAILED otherwise (busy, no answer, powered off, ...); None before the record exists."""
        number = national_number(PROVIDER, message.recipient)
        query = {
            "CallId": receipt.provider_message_id,
            "ProdId": VOICE_NOTIFICATION,
            "QueryDate": str(sent_at_us // 1000),
        }
        status, answer = await self._call("QueryCallDetailByCallId", query)
        if status != 200 or answer.get("Code") != "OK":
            raise self._refusal(status, answer, number)
        data = answer.get("Data")
        if isinstance(data, str):
            try:
                data = json.loads(data) if data.strip() else None
            except ValueError:
                raise PermanentError(PROVIDER, "HTTP_200", "Data is not JSON") from None
        if not isinstance(data, dict) or not data.get("state"):
            return None
        state = str(data["state"])
        detail = str(data.get("stateDesc") or "").replace(number, mask_phone(number))
        if state in CALLING:
            return DeliveryReport("PENDING", state, detail)
        answered = state in ANSWERED or _int(data.get("duration")) > 0
        at_us = _beijing_us(data.get("endDate")) or _beijing_us(data.get("bEndTime"))
        return DeliveryReport("DELIVERED" if answered else "FAILED", state, detail, at_us)

    async def _call(self, action: str, query: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        body = b""
        headers = {
            "host": self._host,
            "x-acs-action": action,
            "x-acs-version": VERSION,
            "x-acs-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._clock())),
            "x-acs-signature-nonce": self._nonce(),
            "x-acs-content-sha256": hashlib.sha256(body).hexdigest(),
        }
        canonical_query, authorization = acs3_authorization(
            self._key_id.reveal(), self._key_secret.reveal(), "POST", query, headers, body
        )
        return await exchange(
            self._transport,
            PROVIDER,
            f"{self._base}/?{canonical_query}",
            {**headers, "Authorization": authorization, "Accept": "application/json"},
            body,
            self.config.timeout_s,
        )

    def _refusal(self, status: int, answer: Mapping[str, Any], number: str) -> NotifyError:
        code = str(answer.get("Code", ""))
        request_id = str(answer.get("RequestId", ""))
        detail = redact(str(answer.get("Message", "")), [self._key_id, self._key_secret])
        detail = detail.replace(number, mask_phone(number))
        detail = f"{detail} (HTTP {status}, request {request_id or '?'})"
        if code in RETRYABLE_CODES or code.startswith("Throttling"):
            return RetryableError(PROVIDER, code, detail)
        return PermanentError(PROVIDER, code or f"HTTP_{status}", detail)


def _int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def _beijing_us(text: object) -> int | None:
    """``yyyy-MM-dd HH:mm:ss`` in Beijing time as microseconds since the epoch; None if absent or malformed."""
    try:
        parsed = time.strptime(str(text or ""), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return (calendar.timegm(parsed) - BEIJING_OFFSET_S) * 1_000_000
