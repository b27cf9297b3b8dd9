"""Spool on its own: order, bound and drop counting, recovery from torn and corrupt records."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

import storage.spool as spool_module
from core.batch import ReadingBatch
from storage.spool import Spool
from storage.spool_format import MAGIC, encode_record


def numbered(i: int, n: int = 10) -> ReadingBatch:
    return ReadingBatch.from_arrays(
        np.arange(n) + i, np.arange(n) + 1_000_000 * i, np.full(n, i + 0.5), np.full(n, 0xC0)
    )


def drain(spool: Spool, max_rows: int = 25) -> list[ReadingBatch]:
    out = []
    while records := spool.take(max_rows):
        spool.ack(records)
        out += [r.batch for r in records]
    return out


def test_round_trip_in_order_across_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=600)
    for i in range(10):
        spool.append(numbered(i))
    assert len(list(tmp_path.glob("*.seg"))) > 3
    assert (spool.pending_batches, spool.pending_rows) == (10, 100)
    assert drain(spool) == [numbered(i) for i in range(10)]
    assert spool.pending_batches == 0 and not list(tmp_path.glob("*.seg"))


def test_take_respects_max_rows_but_always_returns_one(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    spool.append(numbered(0, n=50))
    spool.append(numbered(1, n=5))
    spool.append(numbered(2, n=5))
    assert [len(r.batch) for r in spool.take(20)] == [50]
    assert [len(r.batch) for r in spool.take(20)] == [5, 5]


def test_requeued_records_come_back_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    for i in range(4):
        spool.append(numbered(i))
    first = spool.take(20)
    spool.requeue(first)
    assert drain(spool) == [numbered(i) for i in range(4)]


def test_bound_drops_oldest_segments_and_counts_them(tmp_path: Path) -> None:
    record = len(encode_record(numbered(0)))
    spool = Spool(tmp_path, max_bytes=4 * record + 2 * len(MAGIC), segment_bytes=2 * record + len(MAGIC))
    for i in range(9):
        spool.append(numbered(i))
    # Whole segments go: keeping the newest means holding 3 or 4 batches at a time.
    assert (spool.dropped_batches, spool.dropped_rows) == (6, 60)
    assert spool.size_bytes <= spool.max_bytes
    assert drain(spool) == [numbered(i) for i in range(6, 9)]


def test_in_flight_records_of_a_dropped_segment_count_as_dropped_only_if_requeued(tmp_path: Path) -> None:
    record = len(encode_record(numbered(0)))
    spool = Spool(tmp_path, max_bytes=2 * record + 2 * len(MAGIC), segment_bytes=record + len(MAGIC))
    spool.append(numbered(0))
    taken = spool.take(10)  # in flight to the database
    spool.append(numbered(1))
    spool.append(numbered(2))  # forces the in-flight record's segment out
    assert spool.dropped_batches == 0  # the in-flight batch may still be written
    spool.requeue(taken)  # ... but it was not
    assert (spool.dropped_batches, spool.dropped_rows) == (1, 10)


def test_oversized_batch_is_dropped_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=100, segment_bytes=100)
    assert not spool.append(numbered(0))
    assert (spool.dropped_batches, spool.dropped_rows, spool.pending_batches) == (1, 10, 0)


def test_torn_tail_is_skipped_with_a_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    for i in range(3):
        spool.append(numbered(i))
    spool.close()
    (seg,) = tmp_path.glob("*.seg")
    with open(seg, "r+b") as f:
        f.truncate(seg.stat().st_size - 7)  # the last record was being written
    with caplog.at_level(logging.WARNING, logger="storage.spool"):
        recovered = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    assert "torn record" in caplog.text
    assert recovered.torn_records == 1
    recovered.append(numbered(3))  # new data goes to a new segment, never after the tear
    assert drain(recovered) == [numbered(0), numbered(1), numbered(3)]


def test_corrupt_record_in_the_middle_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    for i in range(3):
        spool.append(numbered(i))
    spool.close()
    (seg,) = tmp_path.glob("*.seg")
    data = bytearray(seg.read_bytes())
    data[len(MAGIC) + len(encode_record(numbered(0))) + 40] ^= 0xFF  # inside record 1's payload
    seg.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="storage.spool"):
        recovered = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    assert "checksum mismatch" in caplog.text
    assert drain(recovered) == [numbered(0), numbered(2)]


_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from core.batch import ReadingBatch
    from storage.spool import Spool

    spool = Spool(sys.argv[1], max_bytes=1 << 30, segment_bytes=1 << 20)
    i = 0
    while True:
        n = 1000
        spool.append(ReadingBatch.from_arrays(np.arange(n), np.arange(n) + i, np.full(n, float(i)),
                                              np.full(n, 0xC0)))
        print(i, flush=True)
        i += 1
    """
)


def test_process_killed_mid_write_loses_at_most_the_batch_in_flight(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert child.stdout is not None
    confirmed = -1
    for line in child.stdout:  # let it write a few segments' worth, then kill -9
        confirmed = int(line)
        if confirmed >= 200:
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdout.close()
    recovered = drain(Spool(tmp_path, max_bytes=1 << 30, segment_bytes=1 << 20), max_rows=10**9)
    values = [int(b.value[0]) for b in recovered]
    assert values == list(range(len(values)))  # in order, no gaps, nothing corrupt
    assert len(values) >= confirmed + 1  # every confirmed append survived


def _corrupt(spool_dir: Path, index: int, record_bytes: int) -> None:
    """Flip a payload byte of record ``index`` of the (only) segment in place."""
    (seg,) = spool_dir.glob("*.seg")
    with open(seg, "r+b") as f:
        f.seek(len(MAGIC) + index * record_bytes + 40)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_unreadable_record_is_not_counted_twice_after_a_requeue(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    for i in range(4):
        spool.append(numbered(i))
    _corrupt(tmp_path, 1, len(encode_record(numbered(0))))
    first = spool.take(100)
    assert [r.batch for r in first] == [numbered(0), numbered(2), numbered(3)]
    spool.requeue(first)  # e.g. the database went down
    second = spool.take(100)
    assert [r.batch for r in second] == [numbered(0), numbered(2), numbered(3)]
    spool.ack(second[:2])
    spool.requeue(second[2:])
    assert drain(spool) == [numbered(3)]  # not deleted with its segment before it was written
    assert (spool.torn_records, spool.dropped_batches) == (1, 0)


def test_segment_with_only_unreadable_records_is_removed(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    for i in range(2):
        spool.append(numbered(i))
    for i in range(2):
        _corrupt(tmp_path, i, len(encode_record(numbered(0))))
    assert spool.take(100) == []
    assert spool.torn_records == 2
    assert (spool.pending_batches, spool.size_bytes) == (0, 0)
    assert not list(tmp_path.glob("*.seg"))


def _disk_full_after(monkeypatch: pytest.MonkeyPatch, prefix: int, failures: int) -> list[int]:
    """Make the next ``failures`` record writes write ``prefix`` bytes, then fail ENOSPC."""
    real = spool_module._write_all
    calls = [0]

    def flaky(fd: int, data: bytes) -> None:
        calls[0] += 1
        if calls[0] <= failures:
            os.write(fd, data[:prefix])
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(spool_module, "_write_all", flaky)
    return calls


def test_failed_write_is_cut_back_counted_and_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    spool.append(numbered(0))
    _disk_full_after(monkeypatch, prefix=30, failures=2)
    with caplog.at_level(logging.WARNING, logger="storage.spool"):
        assert not spool.append(numbered(1))  # does not raise
        assert not spool.append(numbered(2))
        for i in range(3, 6):
            assert spool.append(numbered(i))
    assert caplog.text.count("cannot write") == 1 and "2 batches were dropped" in caplog.text
    assert (spool.dropped_batches, spool.dropped_rows, spool.write_errors) == (2, 20, 2)
    records = spool.take(100)
    assert [r.batch for r in records] == [numbered(i) for i in (0, 3, 4, 5)]
    spool.requeue(records)
    spool.close()
    recovered = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    assert recovered.torn_records == 0  # the partial bytes were cut off the file
    assert drain(recovered) == [numbered(i) for i in (0, 3, 4, 5)]


def test_failed_write_that_cannot_be_cut_back_seals_the_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    spool.append(numbered(0))
    _disk_full_after(monkeypatch, prefix=30, failures=1)

    def no_truncate(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(spool_module.os, "ftruncate", no_truncate)
    assert not spool.append(numbered(1))
    monkeypatch.undo()
    assert spool.append(numbered(2))  # lands in a new segment, not behind the garbage
    assert len(list(tmp_path.glob("*.seg"))) == 2
    spool.close()
    recovered = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    assert recovered.torn_records == 1  # the partial record, skipped
    assert drain(recovered) == [numbered(0), numbered(2)]
    assert spool.dropped_batches == 1


def test_quarantine_keeps_refused_batches_readable_and_bounded(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=len(MAGIC) + len(encode_record(numbered(0))) + 10, segment_bytes=200)
    assert spool.quarantine(numbered(7), "CheckViolation: nope")
    assert not spool.quarantine(numbered(8), "CheckViolation: nope")  # over the bound: dropped
    assert (spool.quarantined_batches, spool.quarantined_rows) == (1, 10)
    assert (spool.dropped_batches, spool.dropped_rows, spool.pending_batches) == (1, 10, 0)
    spool.close()
    assert (
        Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16).quarantine_bytes == spool.quarantine_bytes
    )
    replay = Spool(tmp_path / "quarantine", max_bytes=1 << 20, segment_bytes=1 << 16)
    assert drain(replay) == [numbered(7)]


def test_sealed_segments_are_fsynced_off_the_calling_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.fsync
    threads: list[int] = []

    def recording_fsync(fd: int) -> None:
        if not os.path.isdir(f"/proc/self/fd/{fd}"):  # segment files, not the directory
            threads.append(threading.get_ident())
        real(fd)

    monkeypatch.setattr(spool_module.os, "fsync", recording_fsync)
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=600)
    for i in range(6):  # several segments sealed by append, the last by close
        spool.append(numbered(i))
    spool.close()  # waits for the pending fsyncs
    assert len(threads) == len(list(tmp_path.glob("*.seg"))) > 2
    assert threading.get_ident() not in threads  # the event loop never waits for the disk
