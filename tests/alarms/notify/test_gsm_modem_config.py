"""GsmModem without a modem: settings refused at construction (naming the setting, never a PIN) and the
modem's final result lines classified as retryable or permanent."""

from __future__ import annotations

import pytest

from alarms.notify import NotifierConfigError, PermanentError, RetryableError
from alarms.notify.gsm_modem import GsmModem, GsmModemConfig, classify

BASE: dict[str, object] = {
    "text_template": "{enterprise}：{alarm}",
    "template_params": ("enterprise", "alarm"),
}


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"text_template": "{enterprise} {level}"}, "{level} is not one of template_params"),
        ({"smsc": "+8613800100500"}, "smsc"),
        ({"pin_env": "NO_SUCH_PIN_VAR"}, "$NO_SUCH_PIN_VAR"),
        ({"pin_env": "SHORT_PIN"}, "a SIM PIN is 4 to 8 digits"),
        ({"timeout_s": 0}, "timeout_s"),
    ],
)
def test_config_errors(settings: dict[str, object], needle: str) -> None:
    config = GsmModemConfig("/dev/null", **{**BASE, **settings})  # type: ignore[arg-type]
    with pytest.raises(NotifierConfigError) as exc_info:
        GsmModem(config, env={"SHORT_PIN": "123"})
    assert needle in str(exc_info.value) and "123" not in str(exc_info.value)


def test_result_lines_classified() -> None:
    assert isinstance(classify("+CME ERROR: 16"), PermanentError)  # incorrect password (the PIN)
    assert isinstance(classify("+CME ERROR: 14"), RetryableError)  # SIM busy
    assert isinstance(classify("+CMS ERROR: 331"), RetryableError)  # no network service
    assert isinstance(classify("+CMS ERROR: 304"), PermanentError)  # the PDU itself is refused
    assert classify("ERROR").code == "ERROR" and isinstance(classify("ERROR"), RetryableError)
