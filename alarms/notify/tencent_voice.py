"""Voice calls through Tencent Cloud VMS ``SendTtsVoice`` (API 2020-09-02): a text-to-speech template read to
the duty officer's phone, signed with TC3-HMAC-SHA256 by ``alarms.notify.tencent_sms.tc3_authorization``.

Sources: SendTtsVoice, https://cloud.tencent.com/document/api/1128/51558 (TemplateId, CalledNumber in E.164,
VoiceSdkAppid, TemplateParamSet, PlayTimes "最多3次，默认2次", SessionContext "腾讯 server 回包中会原样返回";
answer Response.SendStatus {CallId, SessionContext}, RequestId; the spoken message at most 350 characters) and the
SDK's models and error codes (TencentCloud/tencentcloud-sdk-go tencentcloud/vms/v20200902/models.go, errors.go).

SessionContext carries the idempotency key. VMS 2020-09-02 has no call-status query (SendCodeVoice and
SendTtsVoice are its only actions; outcomes arrive by callback), so this channel offers no ``Lookup``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from alarms.notify import (
    Message,
    NotifierConfigError,
    PermanentError,
    Receipt,
    RetryableError,
    mask_phone,
    read_secret,
)
from alarms.notify.sms import SmsGateway, SmsTemplate, exchange, national_number, redact
from alarms.notify.tencent_sms import RETRYABLE_PREFIXES, tc3_authorization

__all__ = ["PERMANENT_CODES", "RETRYABLE_PREFIXES", "TencentVoice", "TencentVoiceConfig"]

PROVIDER = "tencent_voice"
VERSION = "2020-09-02"
CONTENT_TYPE = "application/json; charset=utf-8"
# VMS publishes no per-variable figure, only InvalidParameterValue.ContentLengthLimit ("单个变量长度超过限制")
# and the 350-character message; Tencent SMS's strictest rule by default, raised per template.
DEFAULT_MAX_PARAM_CHARS = 12

# RETRYABLE_PREFIXES (imported, as for SMS): LimitExceeded.* (LimitExceeded.DeliveryFrequencyLimit, the
# per-number frequency), RequestLimitExceeded.*, InternalError.* (AccessUpstreamTimeout, UpstreamError),
# ResourceUnavailable.*; plus the older FailedOperation.AccessUpstreamTimeout. Except where sending the same
# request again cannot help: a signature the backend refused, an action it lacks, a clock 10 min off.
RETRYABLE_CODES = frozenset({"FailedOperation.AccessUpstreamTimeout"})
PERMANENT_CODES = frozenset(
    {
        "InternalError.SigVerificationFail",
        "InternalError.RestApiInterfaceNotExist",
        "InternalError.RequestTimeException",
        "InvalidParameterValue.CalledNumberVerifyFail",
        "InvalidParameterValue.ContentLengthLimit",
        "InvalidParameterValue.SdkAppidNotExist",
        "FailedOperation.TemplateIncorrectOrUnapproved",
        "FailedOperation.ContainSensitiveWord",
        "FailedOperation.InsufficientBalanceInVoicePackage",
        "FailedOperation.PhonenumberUnappliedOrExpired",
        "UnauthorizedOperation.SdkAppidIsDisabled",
        "UnauthorizedOperation.ServiceSuspendDueToArrears",
        "UnauthorizedOperation.VoiceSdkAppidVerifyFail",
        "AuthFailure.SignatureFailure",
        "AuthFailure.SecretIdNotFound",
    }
)


@dataclass(frozen=True)
class TencentVoiceConfig:
    voice_sdk_app_id: str
    template_id: str
    template_params: tuple[str, ...]
    play_times: int = 2
    region: str = "ap-guangzhou"
    secret_id_env: str = "TENCENTCLOUD_SECRET_ID"
    secret_key_env: str = "TENCENTCLOUD_SECRET_KEY"
    endpoint: str = "https://vms.tencentcloudapi.com"
    timeout_s: float = 10.0
    max_param_chars: int = DEFAULT_MAX_PARAM_CHARS


def _retryable(code: str) -> bool:
    if code in PERMANENT_CODES:
        return False
    return code in RETRYABLE_CODES or code.startswith(RETRYABLE_PREFIXES)


class TencentVoice(SmsGateway):
    """``Notifier`` for Tencent Cloud voice notification calls; ``transport`` may be shared."""

    provider = PROVIDER

    def __init__(
        self,
        config: TencentVoiceConfig,
        *,
        env: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for setting in ("voice_sdk_app_id", "template_id", "region"):
            if not getattr(config, setting).strip():
                raise NotifierConfigError(f"{PROVIDER}: {setting} is empty")
        if config.play_times not in (1, 2, 3):
            raise NotifierConfigError(f"{PROVIDER}: play_times must be 1, 2 or 3")
        super().__init__(config.endpoint, config.timeout_s, transport)
        self.config = config
        self.template = SmsTemplate(PROVIDER, config.template_params, config.max_param_chars)
        self._secret_id = read_secret(f"{PROVIDER}.secret_id", config.secret_id_env, env)
        self._secret_key = read_secret(f"{PROVIDER}.secret_key", config.secret_key_env, env)
        self._url = f"{self.url.scheme}://{self._host}/"
        self._clock = clock

    def __repr__(self) -> str:
        return f"TencentVoice(endpoint={self._url!r}, template_id={self.config.template_id!r})"

    async def _send(self, message: Message) -> Receipt:
        values = self.template.values(message)
        phone = "+86" + national_number(PROVIDER, message.recipient)
        request = {
            "TemplateId": self.config.template_id,
            "CalledNumber": phone,
            "VoiceSdkAppid": self.config.voice_sdk_app_id,
            "TemplateParamSet": values,
            "PlayTimes": self.config.play_times,
            "SessionContext": message.idempotency_key,
        }
        body = json.dumps(request, ensure_ascii=False, separators=(",", ":")).encode()
        timestamp = int(self._clock())
        signed = {"content-type": CONTENT_TYPE, "host": self._host, "x-tc-action": "SendTtsVoice"}
        authorization = tc3_authorization(
            self._secret_id.reveal(), self._secret_key.reveal(), "vms", timestamp, signed, body
        )
        headers = {
            **signed,
            "authorization": authorization,
            "x-tc-version": VERSION,
            "x-tc-timestamp": str(timestamp),
            "x-tc-region": self.config.region,
        }
        status, answer = await exchange(
            self._transport, PROVIDER, self._url, headers, body, self.config.timeout_s
        )
        response = answer.get("Response")
        if not isinstance(response, dict):
            raise PermanentError(PROVIDER, f"HTTP_{status}", "the answer has no Response object")
        request_id = str(response.get("RequestId", ""))
        error = response.get("Error")
        if isinstance(error, dict):
            code = str(error.get("Code", ""))
            detail = redact(str(error.get("Message") or ""), [self._secret_id, self._secret_key])
            detail = detail.replace(phone, mask_phone(phone)).replace(phone[3:], mask_phone(phone[3:]))
            detail = f"{detail} (HTTP {status}, request {request_id or '?'})"
            if _retryable(code):
                raise RetryableError(PROVIDER, code, detail)
            raise PermanentError(PROVIDER, code or f"HTTP_{status}", detail)
        send_status = response.get("SendStatus")
        call_id = send_status.get("CallId") if isinstance(send_status, dict) else None
        if not call_id:
            raise PermanentError(
                PROVIDER, f"HTTP_{status}", f"no SendStatus.CallId (request {request_id or '?'})"
            )
        return Receipt(PROVIDER, str(call_id), message.idempotency_key, request_id)
