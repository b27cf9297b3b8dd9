"""alarms.journal: commits round-trip through the local log in order; a torn record is cut off,
what the database has is forgotten, and nothing else is lost."""

from __future__ import annotations

import math
from pathlib import Path

from alarms.journal import AlarmRow, CommandOutcome, Commit, JournalRow, LocalLog, OutboxRow, RuleRow


def commit(seq: int) -> Commit:
    return Commit(
        seq,
        1_700_000_000_000_000 + seq,
        journal=(
            JournalRow(
                "AA.V1.AT1:GAS_L2", "RAISED", "normal", "unacknowledged", 5, 180.5, math.nan, "engine"
            ),
        ),
        alarms=(
            AlarmRow(
                "AA.V1.AT1:GAS_L2",
                "AA",
                "离石区",
                "AA-H1",
                None,
                "AA.V1.AT1",
                "GAS_L2",
                "critical",
                "unacknowledged",
                True,
                False,
                True,
                5,
                None,
                None,
                None,
                180.5,
                34.9,
                5,
                None,
                None,
            ),
        ),
        outbox=(
            OutboxRow(
                0,
                "AA.V1.AT1:GAS_L2",
                "raised",
                "critical",
                {"enterprise": "AA", "unit": None},
                "【报警】氨",
                "[raised]",
            ),
        ),
        commands=(CommandOutcome("c1", "rejected", None, "role x may not ack alarms"),),
        rules=(RuleRow("AA.V1.AT1:GAS_L2", True, 5),),
        audit=(("张三", "ack rejected", "AA.V1.AT1:GAS_L2", {"reason": "no"}),),
    )


def same(a: Commit, b: Commit) -> bool:
    return a.encode() == b.encode()  # NaN != NaN: compare the stored form


def test_commits_come_back_in_order_with_every_field(tmp_path: Path) -> None:
    log = LocalLog(tmp_path)
    for seq in range(5):
        log.append(commit(seq))
    log.close()
    again = LocalLog(tmp_path)
    got = again.pending(-1)
    assert [c.seq for c in got] == [0, 1, 2, 3, 4] and again.last_seq == 4
    assert all(same(a, commit(a.seq)) for a in got)
    assert math.isnan(got[0].journal[0].limit) and got[0].alarms[0].county == "离石区"
    assert [c.seq for c in again.pending(2)] == [3, 4] and [c.seq for c in again.pending(0, limit=2)] == [
        1,
        2,
    ]


def test_a_torn_last_record_is_cut_off_and_the_log_goes_on_after_it(tmp_path: Path) -> None:
    log = LocalLog(tmp_path)
    for seq in range(3):
        log.append(commit(seq))
    log.close()
    (seg,) = tmp_path.glob("*.log")
    whole = seg.stat().st_size
    with seg.open("ab") as f:
        f.write(commit(3).encode()[:-7])  # a crash in the middle of the next record
    again = LocalLog(tmp_path)
    assert [c.seq for c in again.pending(-1)] == [0, 1, 2] and seg.stat().st_size == whole
    again.append(commit(3))
    assert [c.seq for c in LocalLog(tmp_path).pending(-1)] == [0, 1, 2, 3]


def test_a_corrupt_record_ends_its_segment(tmp_path: Path) -> None:
    log = LocalLog(tmp_path)
    for seq in range(3):
        log.append(commit(seq))
    log.close()
    (seg,) = tmp_path.glob("*.log")
    data = bytearray(seg.read_bytes())
    data[-3] ^= 0xFF  # the last record's payload, under its checksum
    seg.write_bytes(bytes(data))
    assert [c.seq for c in LocalLog(tmp_path).pending(-1)] == [0, 1]


def test_what_the_database_has_is_forgotten_segment_by_segment(tmp_path: Path) -> None:
    log = LocalLog(tmp_path, segment_bytes=2000)  # a few commits per segment
    for seq in range(12):
        log.append(commit(seq))
    segments = len(list(tmp_path.glob("*.log")))
    assert segments >= 3
    log.forget(5)
    assert [c.seq for c in log.pending(5)] == list(range(6, 12))
    assert len(list(tmp_path.glob("*.log"))) < segments
    assert min(c.seq for c in LocalLog(tmp_path).pending(-1)) <= 6  # nothing after 5 is gone
    log.forget(11)
    log.close()
    log.forget(11)
    assert list(tmp_path.glob("*.log")) == [] and LocalLog(tmp_path).last_seq == -1


def test_infinite_values_round_trip_and_nothing_else_stops_a_commit(tmp_path: Path) -> None:
    """A BAD sample can carry ±inf (a float32 register): JSON has no infinity, the log keeps it."""
    c = commit(0)
    row = c.journal[0]
    inf = Commit(
        0,
        1,
        journal=(
            JournalRow(row.alarm_key, "RAISED", "normal", "unacknowledged", 5, math.inf, -math.inf, "engine"),
        ),
    )
    log = LocalLog(tmp_path)
    log.append(inf)
    (got,) = LocalLog(tmp_path).pending(-1)
    assert (got.journal[0].value, got.journal[0].limit) == (math.inf, -math.inf)
