"""The notifier seam: the shipped fake, secrets that never print, masked phone numbers."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from alarms.notify import (
    Message,
    NotifierConfigError,
    PermanentError,
    RecordingNotifier,
    RetryableError,
    Secret,
    mask_phone,
    read_secret,
)
from alarms.notify.sms import SmsTemplate


async def test_recording_notifier_scripts_failures_then_accepts() -> None:
    fake = RecordingNotifier(fail=[RetryableError("fake", "TIMEOUT", "x"), None])
    first = Message("13912345678", (("level", "二级"),), "k1")
    with pytest.raises(RetryableError):
        await fake.send(first)
    receipts = [await fake.send(first), await fake.send(Message("13912345678", (), "k2"))]
    assert [r.provider_message_id for r in receipts] == ["fake-1", "fake-2"]
    assert [r.idempotency_key for r in receipts] == ["k1", "k2"]
    assert fake.attempts == [first, first, fake.sent[1]] and len(fake.sent) == 2


def test_secrets_and_phone_numbers_do_not_print() -> None:
    secret = Secret("s3cr3t-value")
    assert "s3cr3t" not in f"{secret} {secret!r} {[secret]}"
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    assert secret.reveal() == "s3cr3t-value"
    message = Message("+8613912345678", (("a", "b"),), "k")
    assert "13912345678" not in repr(message) and "139****5678" in repr(message)
    assert [mask_phone(p) for p in ("13912345678", "+8613912345678", "1234")] == [
        "139****5678",
        "+86139****5678",
        "**34",
    ]


def test_read_secret_names_the_variables_never_the_value(tmp_path: Path) -> None:
    assert read_secret("x.key", "K", {"K": "v1"}).reveal() == "v1"
    (tmp_path / "k").write_text("from-file\n")
    assert read_secret("x.key", "K", {"K_FILE": str(tmp_path / "k")}).reveal() == "from-file"
    with pytest.raises(NotifierConfigError, match=r"x.key: cannot read the file named by \$K_FILE"):
        read_secret("x.key", "K", {"K_FILE": str(tmp_path / "missing")})
    with pytest.raises(NotifierConfigError, match="control character") as caught:
        read_secret("x.key", "K", {"K": "abc\ndef"})
    assert "abc" not in str(caught.value)


def test_template_rejects_bad_definitions_and_checks_each_send() -> None:
    with pytest.raises(NotifierConfigError, match="named twice"):
        SmsTemplate("p", ("a", "a"), 35)
    with pytest.raises(NotifierConfigError, match="'企业' is not a variable name"):
        SmsTemplate("p", ("企业",), 35)
    template = SmsTemplate("p", ("enterprise", "value"), 5)
    with pytest.raises(PermanentError, match="'value' has 6 characters, at most 5") as caught:
        template.values(Message("13912345678", (("enterprise", "化工"), ("value", "123456")), "k"))
    assert caught.value.code == "TEMPLATE_PARAM"
    with pytest.raises(PermanentError, match="'enterprise' holds a control character"):
        template.values(Message("13912345678", (("enterprise", "化\x1b工"), ("value", "1")), "k"))
    assert template.values(Message("1", (("value", "1"), ("enterprise", "化工")), "k")) == ["化工", "1"]
