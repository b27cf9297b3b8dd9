"""The demo's console/file outbox: one valid JSON line per message, Chinese intact, appended across instances,
fsynced before the receipt; a disk error is retryable, a broken stdout is not an error."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from alarms.notify import AlarmEvent, Message, NotifierConfigError, RetryableError
from alarms.notify.console import ConsoleOutbox
from tests.support.fsyncs import record_fsyncs

EVENT = AlarmEvent(
    alarm_key="hs-1.TK-101.LT.HH",
    event="raised",
    priority="CRITICAL",
    labels=(("enterprise", "某某化工有限公司"), ("hazard_source", "一号罐区"), ("tag", "TK-101")),
    message_zh="一号罐区 TK-101 液位高高报警：92.5%，请立即处置并反馈",
    message_en="TK-101 level high-high: 92.5%",
    at_us=1_796_026_500_000_000,
)


def message(key: str, phone: str = "13912345678") -> Message:
    return Message(phone, (("level", "二级"),), key, EVENT)


async def test_lines_are_json_with_chinese_intact_and_appended_across_instances(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "outbox.jsonl"
    synced = record_fsyncs(monkeypatch)
    first = await ConsoleOutbox(path, echo=False).send(message("k1"))
    assert synced == ["file", "dir"]  # a new file: its directory entry too
    second = await ConsoleOutbox(path, echo=False).send(message("k2"))
    assert synced == ["file", "dir", "file"]
    raw = path.read_bytes()
    assert "某某化工有限公司".encode() in raw and b"\\u" not in raw
    lines = [json.loads(line) for line in raw.decode("utf-8").splitlines()]
    assert [line["idempotency_key"] for line in lines] == ["k1", "k2"]
    assert lines[0]["event"]["message_zh"] == EVENT.message_zh
    assert lines[0]["event"]["labels"]["hazard_source"] == "一号罐区"
    assert lines[0]["recipient"] == "139****5678" and b"13912345678" not in raw  # personal data masked
    assert (first.provider_message_id, second.provider_message_id) == (
        "outbox.jsonl@0",
        f"outbox.jsonl@{len(raw.splitlines(keepends=True)[0])}",
    )


async def test_echo_prints_one_summary_line() -> None:
    out = io.StringIO()
    receipt = await ConsoleOutbox(stream=out).send(message("k1"))
    assert out.getvalue() == (
        "[CRITICAL] raised 某某化工有限公司/一号罐区 一号罐区 TK-101 液位高高报警：92.5%，请立即处置并反馈"
        " → 139****5678 (k1)\n"
    )
    assert receipt.idempotency_key == "k1"
    await ConsoleOutbox(stream=out).send(Message("duty", (("count", "37"),), "flood-1"))
    assert out.getvalue().splitlines()[1] == "summary count=37 → **ty (flood-1)"


async def test_a_broken_stdout_does_not_fail_the_send(tmp_path: Path) -> None:
    closed = io.StringIO()
    closed.close()
    receipt = await ConsoleOutbox(tmp_path / "o.jsonl", stream=closed).send(message("k1"))
    assert receipt.provider_message_id == "o.jsonl@0"
    assert len((tmp_path / "o.jsonl").read_text(encoding="utf-8").splitlines()) == 1


async def test_a_disk_error_is_retryable(tmp_path: Path) -> None:
    outbox = ConsoleOutbox(tmp_path / "missing-dir" / "o.jsonl", echo=False)
    with pytest.raises(RetryableError, match=r"console: DISK: .*missing-dir/o.jsonl: cannot append"):
        await outbox.send(message("k1"))


def test_an_outbox_that_keeps_nothing_is_refused() -> None:
    with pytest.raises(NotifierConfigError, match="neither a path nor echo"):
        ConsoleOutbox(None, echo=False)
