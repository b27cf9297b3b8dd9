"""Logging: one line per record off a terminal, JSON lines on request, a queue that never blocks
the caller, and `hazardwatch run` stopping cleanly on SIGTERM and on SIGINT as a background job."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hazardwatch import logs

ROOT = Path(__file__).resolve().parents[2]
PLANT = ROOT / "tests/core/data/two_enterprises.yaml"
PLAIN_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: \S"
)
LONG = "registry: " + "; ".join(f"table{i}: +{i} ~0 -0 revived 0" for i in range(12))  # well past 80 columns

log = logging.getLogger("tests.logs")


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()  # not a terminal, like a file, a pipe or journald
    yield stream
    logs.shutdown()


def test_off_a_terminal_each_record_is_one_plain_line(captured: io.StringIO) -> None:
    logs.setup("INFO", "auto", stream=captured)
    log.warning(LONG)
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        log.exception("read failed\non two lines")
    logs.shutdown()
    lines = captured.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert all(PLAIN_LINE.match(line) for line in lines), lines
    assert lines[0].endswith(f"WARNING tests.logs: {LONG}")
    assert "read failed\\non two lines | Traceback (most recent call last):\\n" in lines[1]
    assert lines[1].endswith("ValueError: bad\\nvalue")


def test_json_lines_carry_ts_level_logger_message_and_exception(captured: io.StringIO) -> None:
    logs.setup("DEBUG", "json", stream=captured)
    log.debug("value %s of %d", "x", 3)
    try:
        raise KeyError("tag")
    except KeyError:
        log.error("failed", exc_info=True)
    logs.shutdown()
    first, second = (json.loads(line) for line in captured.getvalue().splitlines())
    assert first.keys() == {"ts", "level", "logger", "message"}
    assert (first["level"], first["logger"], first["message"]) == ("DEBUG", "tests.logs", "value x of 3")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert second["message"] == "failed"
    assert second["exception"].startswith("Traceback") and second["exception"].endswith("KeyError: 'tag'")


def test_auto_is_rich_on_a_terminal_only() -> None:
    leader, follower = os.openpty()
    try:
        with os.fdopen(follower, "w") as tty:
            assert logs.resolve(logs.LogFormat.AUTO, tty) is logs.LogFormat.RICH
            assert logs.resolve(logs.LogFormat.PLAIN, tty) is logs.LogFormat.PLAIN
    finally:
        os.close(leader)
    assert logs.resolve(logs.LogFormat.AUTO, io.StringIO()) is logs.LogFormat.PLAIN
    assert logs.resolve(logs.LogFormat.RICH, io.StringIO()) is logs.LogFormat.RICH


class _Stuck(io.StringIO):
    """A stream that blocks writers until released: a full pipe, a stalled journald."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, s: str) -> int:
        self.release.wait(30)
        return super().write(s)


def test_a_blocked_output_never_blocks_the_caller_and_drops_are_counted() -> None:
    stream = _Stuck()
    logs.setup("INFO", "plain", stream=stream)
    try:
        n = logs.QUEUE_RECORDS + 5_000
        started = time.perf_counter()
        for i in range(n):
            log.warning("record %d", i)
        elapsed = time.perf_counter() - started
        dropped = logs.dropped_records()
    finally:
        stream.release.set()
        logs.shutdown()
    assert elapsed < 5.0  # ~µs per record; a blocking handler would wait 30 s on the first one
    # The listener holds one record (stuck in write), the queue QUEUE_RECORDS; the rest are dropped.
    assert n - logs.QUEUE_RECORDS - 1 <= dropped <= n - logs.QUEUE_RECORDS
    lines = stream.getvalue().splitlines()
    notes = [line for line in lines if "log queue full" in line]
    assert notes and all(" WARNING hazardwatch.logs: " in note for note in notes)
    assert sum(int(re.search(r"(\d+) record\(s\) dropped", note)[1]) for note in notes) == dropped  # type: ignore[index]
    kept = [int(line.rsplit(" ", 1)[1]) for line in lines if "tests.logs: record" in line]
    assert kept == sorted(kept) and len(kept) == n - dropped  # order kept, nothing else lost


def test_a_stuck_output_does_not_hang_the_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "STOP_WAIT_S", 0.2)
    stream = _Stuck()
    logs.setup("INFO", "plain", stream=stream)
    try:
        for i in range(logs.QUEUE_RECORDS + 10):  # the queue is full, its reader stuck in write
            log.warning("record %d", i)
        started = time.perf_counter()
        logs.shutdown()
        took = time.perf_counter() - started
    finally:
        stream.release.set()
    assert took < 5.0  # a blocking sentinel put or join would wait until the output frees (30 s)


def test_asyncua_info_is_kept_for_debug(captured: io.StringIO) -> None:
    ua = logging.getLogger("asyncua.common.subscription")
    logs.setup("INFO", "plain", stream=captured)
    ua.info("PublishResult(... every notification of thousands of items ...)")
    ua.warning("publish failed")
    logs.shutdown()
    text = captured.getvalue()
    assert "PublishResult" not in text and "publish failed" in text
    logs.setup("DEBUG", "plain", stream=captured)
    ua.info("PublishResult at debug")
    logs.shutdown()
    assert "PublishResult at debug" in captured.getvalue()


# --- `hazardwatch run` as a service and as a background job ---------------------------------


def _run_until_signal(
    dsn: str, cwd: Path, sig: signal.Signals, *extra: str, background: bool = False
) -> tuple[int, str, str]:
    """Start `hazardwatch run`, wait until it collects, send ``sig``; (exit code, stdout, stderr)."""
    with subprocess.Popen(
        [str(Path(sys.executable).parent / "hazardwatch"), "run", str(PLANT), "--metrics-port", "0", *extra],
        cwd=cwd,
        env={**os.environ, "DATABASE_URL": dsn, "COLUMNS": "80"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell starts a background job (cmd &) with SIGINT ignored.
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if background else None,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        out = []
        for line in proc.stdout:  # "running (Ctrl-C to stop)" once every collector is started
            out.append(line)
            if line.startswith("running"):
                break
        proc.send_signal(sig)
        rest, err = proc.communicate(timeout=30)
        return proc.returncode, "".join(out) + rest, err


def test_run_off_a_terminal_writes_one_plain_line_per_record_and_stops_on_sigterm(
    dsn: str, tmp_path: Path
) -> None:
    code, out, err = _run_until_signal(dsn, tmp_path, signal.SIGTERM)
    assert code == 0, err
    assert "stopped:" in out
    lines = err.splitlines()
    assert any("INFO hazardwatch.runtime: registry: enterprise: +2" in line for line in lines), err
    assert all(PLAIN_LINE.match(line) for line in lines), err  # no wrapped continuation lines


def test_run_json_lines_and_sigint_as_a_background_job(dsn: str, tmp_path: Path) -> None:
    code, out, err = _run_until_signal(dsn, tmp_path, signal.SIGINT, "--log-format", "json", background=True)
    assert code == 0, err
    assert "stopped:" in out
    records = [json.loads(line) for line in err.splitlines()]
    assert records and all({"ts", "level", "logger", "message"} <= r.keys() for r in records)
    assert any(r["logger"] == "hazardwatch.runtime" and r["message"].startswith("registry:") for r in records)
