"""Local state of a run: the directory lock (one process per data directory or spool) and the heartbeat."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage.dirlock import LOCK_NAME, DirectoryInUse, DirectoryLock
from storage.heartbeat import Beat, Heartbeat
from tests.support.fsyncs import record_fsyncs

HOLD = """
import sys
from storage.dirlock import DirectoryLock
lock = DirectoryLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
sys.stdin.read()
"""


def test_a_second_process_is_refused_with_the_directory_and_the_holders_pid(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "data")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            with pytest.raises(DirectoryInUse) as refused:
                DirectoryLock(tmp_path / "data", "spool directory").acquire()
            message = str(refused.value)
            assert f"spool directory {(tmp_path / 'data').resolve()}" in message
            assert f"pid {holder.pid}" in message
        finally:
            holder.kill()  # like kill -9: the kernel drops the lock with the process
    with DirectoryLock(tmp_path / "data") as lock:  # a stale lock file never blocks a restart
        assert lock.held
        assert (tmp_path / "data" / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    assert not lock.held


def test_heartbeat_tells_a_crash_from_a_clean_stop(tmp_path: Path) -> None:
    hb = Heartbeat(tmp_path, interval_s=2.0)
    assert hb.previous() is None  # first start
    hb.beat(1_000_000)
    hb.beat(3_000_000)
    crashed = Heartbeat(tmp_path, interval_s=2.0).previous()
    assert crashed == Beat(os.getpid(), 1_000_000, 3_000_000, 2.0, clean=False)
    assert crashed.gap_start_us(10_000_000) == 5_000_000  # the next beat was due then
    assert crashed.gap_start_us(4_000_000) == 4_000_000  # never after the restart noticed it
    hb.beat(6_000_000, clean=True)
    stopped = Heartbeat(tmp_path).previous()
    assert stopped is not None and stopped.clean and stopped.alive_us == 6_000_000
    assert not list(tmp_path.glob("*.tmp"))


def test_only_the_clean_stops_beat_is_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced = record_fsyncs(monkeypatch)
    hb = Heartbeat(tmp_path, interval_s=1.0)
    hb.beat(1_000_000)
    hb.beat(2_000_000)
    assert synced == []  # every second: atomic, not durable
    hb.beat(3_000_000, clean=True)
    assert synced == ["file", "dir"]  # the beat and its rename survive a power cut after the stop
    assert [p.name for p in tmp_path.iterdir()] == ["heartbeat.json"]


def test_an_unreadable_heartbeat_counts_as_a_crash_at_its_modification_time(tmp_path: Path) -> None:
    (tmp_path / "heartbeat.json").write_text('{"pid": 1, "alive', encoding="utf-8")
    os.utime(tmp_path / "heartbeat.json", ns=(7_000_000_000, 7_000_000_000))
    beat = Heartbeat(tmp_path).previous()
    assert beat is not None and not beat.clean
    assert beat.gap_start_us(10**16) == 7_000_000
