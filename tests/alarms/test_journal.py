"""alarms.journal: commits round-trip through the local log in order; a torn record is cut off,
what the database has is forgotten, and nothing else is lost."""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import pytest

from alarms.journal import AlarmRow, CommandOutcome, Commit, JournalRow, LocalLog, OutboxRow, RuleRow
from core.errors import StorageError


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


# --- reading back costs what is read (the seq -> offset index) ---------------------------------

HEADER = struct.Struct("<II")


def records(path: Path) -> list[tuple[int, Commit]]:
    """Every whole, checksummed record of a segment file with its byte offset: the brute force."""
    data, at, out = path.read_bytes(), 0, []
    while at + HEADER.size <= len(data):
        length, crc = HEADER.unpack_from(data, at)
        payload = data[at + HEADER.size : at + HEADER.size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        out.append((at, Commit.decode(payload)))
        at += HEADER.size + length
    return out


def everything(directory: Path) -> list[Commit]:
    return [c for p in sorted(directory.glob("*.log")) for _, c in records(p)]


def write_segment(directory: Path, commits: list[Commit]) -> Path:
    """A segment written from the documented format alone (as an older version left it)."""
    path = directory / f"{commits[0].seq:020d}.log"
    with path.open("wb") as f:
        for c in commits:
            payload = c.encode()
            f.write(HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
    return path


def assert_reads_like_a_full_decode(log: LocalLog, directory: Path, afters: range) -> None:
    whole = everything(directory)
    for after in afters:
        newer = [c for c in whole if c.seq > after]
        for limit in (None, 0, 1, 2, 3, 5, 11, 1000):
            got = log.pending(after, limit)
            want = newer if limit is None else newer[:limit]
            assert [c.seq for c in got] == [c.seq for c in want], (after, limit)
            assert all(same(a, b) for a, b in zip(got, want, strict=True)), (after, limit)
        for size in (1, 4, 50):
            chunks = list(log.chunks(after, size))
            assert all(0 < len(c) <= size for c in chunks) and all(len(c) == size for c in chunks[:-1])
            assert [c.seq for chunk in chunks for c in chunk] == [c.seq for c in newer], (after, size)


SEQS = [s for s in range(0, 150) if s % 7 != 3]  # gaps: where an append failed


def test_pending_gives_what_a_full_decode_gives_for_any_after_and_limit(tmp_path: Path) -> None:
    log = LocalLog(tmp_path, segment_bytes=2500)  # ~3 commits per segment
    for seq in SEQS[:100]:
        log.append(commit(seq))
    assert len(list(tmp_path.glob("*.log"))) >= 20
    assert_reads_like_a_full_decode(log, tmp_path, range(-2, 152, 3))
    log.close()
    again = LocalLog(tmp_path, segment_bytes=2500)
    assert_reads_like_a_full_decode(again, tmp_path, range(-2, 152, 3))
    for seq in SEQS[100:]:  # the index grows with what is appended after opening
        again.append(commit(seq))
    assert_reads_like_a_full_decode(again, tmp_path, range(-2, 152, 3))
    again.forget(60)
    assert_reads_like_a_full_decode(again, tmp_path, range(55, 152))
    assert [c.seq for c in LocalLog(tmp_path).pending(-1)] == [c.seq for c in everything(tmp_path)]


def test_a_torn_tail_is_cut_and_what_is_read_after_it_is_exact(tmp_path: Path) -> None:
    log = LocalLog(tmp_path, segment_bytes=2500)
    for seq in range(30):
        log.append(commit(seq))
    log.close()
    last = max(tmp_path.glob("*.log"))
    whole = last.stat().st_size
    with last.open("ab") as f:
        f.write(HEADER.pack(900, 0) + commit(30).encode()[:100])  # a crash while writing 30
    again = LocalLog(tmp_path, segment_bytes=2500)
    assert last.stat().st_size == whole and again.last_seq == 29
    again.append(commit(30))
    again.append(commit(31))
    assert [c.seq for c in everything(tmp_path)] == list(range(32))
    assert_reads_like_a_full_decode(again, tmp_path, range(-1, 33, 3))


def test_a_record_corrupted_after_opening_ends_its_segment_when_read(tmp_path: Path) -> None:
    log = LocalLog(tmp_path, segment_bytes=2500)
    for seq in range(30):
        log.append(commit(seq))
    segment = sorted(tmp_path.glob("*.log"))[2]
    (_, first), (at, hit), *rest = records(segment)
    assert rest  # the corrupt record is not the segment's last
    data = bytearray(segment.read_bytes())
    digit = data.index(b'"arrival":', at) + len('"arrival":') + 3
    data[digit] = ord("9") if data[digit] != ord("9") else ord("8")  # still JSON, checksum wrong
    segment.write_bytes(bytes(data))
    after_segment = rest[-1][1].seq
    want = [s for s in range(30) if s <= first.seq or s > after_segment]
    assert [c.seq for c in log.pending(-1)] == want
    assert [c.seq for c in log.pending(first.seq, 2)] == [after_segment + 1, after_segment + 2]
    assert [c.seq for c in log.pending(hit.seq - 1, 1)] == [after_segment + 1]
    # a read that starts past the corrupt record gets the whole, checksummed records after it
    assert [c.seq for c in log.pending(hit.seq, 1)] == [rest[0][1].seq]


def test_a_checksummed_record_that_cannot_be_decoded_stops_reading(tmp_path: Path) -> None:
    log = LocalLog(tmp_path, segment_bytes=2500)
    for seq in range(12):
        log.append(commit(seq))
    segment = sorted(tmp_path.glob("*.log"))[1]
    at, bad = records(segment)[1]
    data = bytearray(segment.read_bytes())
    length, _ = HEADER.unpack_from(data, at)
    payload = bytes(data[at + HEADER.size : at + HEADER.size + length]).replace(b'"seq"', b'"sex"')
    data[at : at + HEADER.size + length] = HEADER.pack(length, zlib.crc32(payload)) + payload
    segment.write_bytes(bytes(data))
    assert [c.seq for c in log.pending(bad.seq)] == list(range(bad.seq + 1, 12))
    with pytest.raises(StorageError, match=f"{segment.name}: record at byte {at} cannot be read"):
        log.pending(bad.seq - 1)
    with pytest.raises(StorageError, match=f"{segment.name}: record at byte {at}"):
        LocalLog(tmp_path)


def test_reading_decodes_only_the_commits_it_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_segment(tmp_path, [commit(seq) for seq in range(5000)])
    log = LocalLog(tmp_path)
    decoded: list[int] = []
    decode = Commit.decode

    def counted(payload: bytes) -> Commit:
        decoded.append(1)
        return decode(payload)

    monkeypatch.setattr(Commit, "decode", staticmethod(counted))
    assert [c.seq for c in log.pending(4989, 10)] == list(range(4990, 5000)) and len(decoded) == 10
    decoded.clear()
    assert [c.seq for c in log.pending(4989)] == list(range(4990, 5000)) and len(decoded) == 10
    decoded.clear()
    assert sum(len(c) for c in log.chunks(1999, 500)) == 3000 and len(decoded) == 3000
