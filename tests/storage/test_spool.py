"""Spool on its own: order, bound and drop counting, recovery from torn and corrupt records."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

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
