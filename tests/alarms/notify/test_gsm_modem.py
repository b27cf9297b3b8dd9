"""GsmModem against an emulated modem on a pty null-modem (tests/support/gsm_modem_emulator.py): the AT
dialogue, every PDU decoded by the emulator's own TS 23.040 decoder, scripted +CMS errors, silence, a wrong
SIM PIN, and the modem unplugged and plugged back (its udev-style symlink pointing to a new pty)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from alarms.notify import Message, PermanentError, RetryableError
from alarms.notify.gsm_modem import GsmModem, GsmModemConfig
from tests.support.gsm_modem_emulator import LATE, SILENT, STALE, TORN, GsmModemEmulator
from tests.support.serial_pair import SerialPair
from tests.support.waiting import eventually

PHONE = "13912345678"
NAMES = ("event", "enterprise", "hazard_source", "alarm")
TEMPLATE = "【{event}】{enterprise} {hazard_source}：{alarm}"
PARAMS = {
    "event": "报警",
    "enterprise": "某某化工",
    "hazard_source": "一号罐区",
    "alarm": "TK-101 液位高高 92.5%",
}
SHORT_TEXT = "【报警】某某化工 一号罐区：TK-101 液位高高 92.5%"
# 152 characters; with the template's 14 more, three parts of 67, 67 and 32 UTF-16 units.
LONG_ALARM = "甲烷浓度超过二级报警限值，请立即组织人员撤离并检查可燃气体探测器与通风设施。" * 4


def message(key: str = "k1", **params: str) -> Message:
    return Message(PHONE, tuple({**PARAMS, **params}.items()), key)


def config(port: str, **kw: object) -> GsmModemConfig:
    settings: dict[str, object] = {"text_template": TEMPLATE, "template_params": NAMES, "timeout_s": 2.0}
    return GsmModemConfig(port, **{**settings, **kw})  # type: ignore[arg-type]


@pytest.fixture
def pair() -> Iterator[SerialPair]:
    with SerialPair() as p:
        yield p


@pytest.fixture
def modem(pair: SerialPair) -> Iterator[GsmModemEmulator]:
    with GsmModemEmulator(pair.b) as m:
        yield m


@pytest.fixture
async def gsm(pair: SerialPair, modem: GsmModemEmulator) -> AsyncIterator[GsmModem]:
    notifier = GsmModem(config(pair.a, max_param_chars=160, max_parts=10))
    yield notifier
    await notifier.aclose()
    assert modem.errors == []


async def test_single_part_chinese_message(gsm: GsmModem, modem: GsmModemEmulator) -> None:
    receipt = await gsm.send(message())
    assert (receipt.provider, receipt.provider_message_id, receipt.idempotency_key) == ("gsm", "1", "k1")
    [sms] = modem.messages()
    assert (sms.number, sms.text, sms.parts) == ("86" + PHONE, SHORT_TEXT, 1)
    assert modem.commands[:5] == ["AT", "ATE0", "AT+CMEE=1", "AT+CPIN?", "AT+CMGF=0"]
    assert modem.commands[5] == f"AT+CMGS={modem.submits[0].tpdu_length}"


async def test_three_part_chinese_message_is_reassembled(gsm: GsmModem, modem: GsmModemEmulator) -> None:
    receipt = await gsm.send(message(alarm=LONG_ALARM))
    assert receipt.provider_message_id == "1,2,3"
    [sms] = modem.messages()
    assert sms.text == TEMPLATE.format_map({**PARAMS, "alarm": LONG_ALARM}) and sms.parts == 3
    assert [len(s.text) for s in modem.submits] == [67, 67, 32]
    assert [(s.seq, s.total, s.reference) for s in modem.submits] == [
        (i, 3, sms.reference) for i in (1, 2, 3)
    ]
    await gsm.send(message("k2", alarm=LONG_ALARM))  # the next message takes another reference
    assert modem.submits[3].reference != modem.submits[0].reference
    assert len(modem.messages()) == 2


@pytest.mark.parametrize(
    ("cms", "error"), [(38, RetryableError), (42, RetryableError), (21, PermanentError), (1, PermanentError)]
)
async def test_cms_errors_are_classified(
    gsm: GsmModem, modem: GsmModemEmulator, cms: int, error: type[Exception]
) -> None:
    modem.fail = [cms]
    with pytest.raises(error) as exc_info:
        await gsm.send(message())
    assert exc_info.value.code == f"CMS_{cms}"  # type: ignore[attr-defined]
    assert PHONE not in str(exc_info.value)
    await gsm.send(message("k2"))  # the dialogue stays in step: the same port, no new set-up
    assert modem.commands.count("AT") == 1 and len(modem.messages()) == 1


async def test_a_failed_part_is_resent_under_the_same_reference(
    gsm: GsmModem, modem: GsmModemEmulator
) -> None:
    modem.fail = [None, 38]
    with pytest.raises(RetryableError):
        await gsm.send(message(alarm=LONG_ALARM))
    await gsm.send(message(alarm=LONG_ALARM))  # the dispatcher's retry: same idempotency key
    assert [s.seq for s in modem.submits] == [1, 1, 2, 3]
    assert len({s.reference for s in modem.submits}) == 1
    [sms] = modem.messages()  # the phone drops the duplicate part 1 and completes the message
    assert sms.text.endswith(LONG_ALARM)


async def test_silence_is_a_timeout_and_the_port_is_reopened(
    pair: SerialPair, modem: GsmModemEmulator
) -> None:
    gsm = GsmModem(config(pair.a, timeout_s=0.3))
    modem.fail = [SILENT, TORN]
    for key in ("k0", "k1"):  # TORN: the half line read must not open the next session's dialogue
        with pytest.raises(RetryableError, match="gsm: TIMEOUT:"):
            await gsm.send(message(key))
    modem.mute = True
    with pytest.raises(RetryableError, match="gsm: TIMEOUT:"):
        await gsm.send(message("k2"))
    modem.mute = False
    await gsm.send(message("k3"))
    assert modem.commands.count("AT") == 3 and len(modem.messages()) == 1  # set up again (muted AT unseen)
    await gsm.aclose()


async def test_unplugged_modem_is_retryable_and_used_again_when_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = tmp_path / "usb-modem"  # as /dev/serial/by-id/...: udev points it at the new tty when re-plugged
    with SerialPair() as first, GsmModemEmulator(first.b) as modem:
        port.symlink_to(first.a)
        gsm = GsmModem(config(str(port)))
        await gsm.send(message())
        first.unplug_a()
        caplog.set_level(logging.DEBUG, logger="alarms.notify.gsm_modem")
        with pytest.raises(RetryableError, match="gsm: PORT:"):
            await gsm.send(message("k2"))
        port.unlink()
        with pytest.raises(RetryableError, match="gsm: PORT_UNAVAILABLE:"):
            await gsm.send(message("k2"))
    with SerialPair() as second, GsmModemEmulator(second.b) as modem:
        port.symlink_to(second.a)
        receipt = await gsm.send(message("k2"))
        assert receipt.idempotency_key == "k2" and [m.text for m in modem.messages()] == [SHORT_TEXT]
        assert modem.commands[0] == "AT"
        await gsm.aclose()
    # the outage is logged when it began, not on every failed send
    assert sum("is unavailable" in r.getMessage() for r in caplog.records) == 1
    assert any("answers again" in r.getMessage() for r in caplog.records)
    assert PHONE not in caplog.text and "139****5678" in caplog.text


async def test_sim_pin_is_sent_and_a_wrong_one_never_twice(pair: SerialPair) -> None:
    with GsmModemEmulator(pair.b, pin="2468") as modem:
        gsm = GsmModem(config(pair.a, pin_env="SIM_PIN"), env={"SIM_PIN": "2468"})
        await gsm.send(message())
        await gsm.aclose()
        assert modem.pin_attempts == 1 and len(modem.messages()) == 1
    with GsmModemEmulator(pair.b, pin="2468") as modem:
        gsm = GsmModem(config(pair.a, pin_env="SIM_PIN"), env={"SIM_PIN": "1357"})
        for code in ("CME_16", "SIM_PIN"):
            with pytest.raises(PermanentError) as exc_info:
                await gsm.send(message())
            assert exc_info.value.code == code and "1357" not in str(exc_info.value)
        assert modem.pin_attempts == 1 and modem.submits == []
        await gsm.aclose()


async def test_an_invalid_number_is_refused_before_the_modem(gsm: GsmModem, modem: GsmModemEmulator) -> None:
    with pytest.raises(PermanentError) as exc_info:
        await gsm.send(Message("12345", tuple(PARAMS.items()), "k"))
    assert exc_info.value.code == "INVALID_NUMBER" and modem.commands == []


async def test_concurrent_sends_take_turns_on_the_modem(gsm: GsmModem, modem: GsmModemEmulator) -> None:
    keys = [f"k{i}" for i in range(3)]
    receipts = await asyncio.gather(*(gsm.send(message(k, alarm=LONG_ALARM)) for k in keys))
    assert [r.provider_message_id for r in receipts] == ["1,2,3", "4,5,6", "7,8,9"]
    assert len(modem.messages()) == 3 and modem.commands.count("AT") == 1


async def test_a_prompt_left_open_by_a_killed_process_is_cancelled(
    gsm: GsmModem, pair: SerialPair, modem: GsmModemEmulator
) -> None:
    fd = os.open(pair.a, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(fd, b"ATE0\rAT+CMEE=1\rAT+CMGF=0\rAT+CMGS=40\r")  # then killed before the PDU
        await eventually(lambda: modem.commands[-1:] == ["AT+CMGS=40"], timeout=5)
    finally:
        os.close(fd)
    await gsm.send(message())
    assert [m.text for m in modem.messages()] == [SHORT_TEXT]


async def test_a_set_up_refusal_closes_the_port_for_a_fresh_start(
    gsm: GsmModem, modem: GsmModemEmulator
) -> None:
    modem.refuse = {"AT+CMGF=0": 314}  # SIM busy, as just after power-up
    with pytest.raises(RetryableError, match="gsm: CMS_314:"):
        await gsm.send(message())
    modem.refuse = {}
    await gsm.send(message())  # reopened (the port is opened exclusively: a leaked handle would block it)
    assert modem.commands.count("AT") == 2 and len(modem.messages()) == 1


async def test_astral_characters_count_two_and_can_exceed_max_parts(pair: SerialPair) -> None:
    single = {"text_template": "{alarm}", "template_params": ("alarm",), "max_parts": 1}
    with GsmModemEmulator(pair.b) as modem:
        gsm = GsmModem(config(pair.a, **single, max_param_chars=70))
        await gsm.send(Message(PHONE, (("alarm", "罐" * 70),), "k1"))
        with pytest.raises(PermanentError) as exc_info:  # 40 characters, 80 UTF-16 units: two parts
            await gsm.send(Message(PHONE, (("alarm", "🔥" * 40),), "k2"))
        assert exc_info.value.code == "TEXT_TOO_LONG" and len(modem.submits) == 1
        await gsm.aclose()


async def test_an_answer_after_the_timeout_does_not_put_the_dialogue_out_of_step(
    pair: SerialPair, modem: GsmModemEmulator
) -> None:
    gsm = GsmModem(config(pair.a, timeout_s=0.3))
    modem.fail = [LATE]  # sent, but +CMGS/OK come only when the next session starts
    with pytest.raises(RetryableError, match="TIMEOUT"):
        await gsm.send(message())
    receipt = await gsm.send(message("k2"))  # the stale OK answers AT; +CPIN? brings it back in step
    assert receipt.provider_message_id == "2" and len(modem.messages()) == 2  # the timed-out one went too
    modem.fail = [STALE]  # a stray OK before the prompt and before +CMGS: neither ends the exchange
    assert (await gsm.send(message("k3"))).provider_message_id == "3"
    modem.sim = "SIM PUK"
    await gsm.aclose()
    with pytest.raises(PermanentError, match="gsm: SIM_STATE:"):
        await gsm.send(message("k3"))
