"""Bounded, crash-safe disk spool of reading batches kept while the database is unreachable.

Append-only segment files ``<seq>.seg`` (magic, then records); a record is
``u32 length | u32 crc32 | payload`` with the payload holding the four arrays raw
(little-endian, no pickle). Invariants: records are read back in append order; every
record is either written to the database (then acked), still spooled, or counted in
``dropped_*``; a process killed mid-write loses at most the record being written, and a
torn or corrupt record is logged and skipped, never fatal. Segments are fsynced when
sealed: a power cut (not a process kill) can lose the unsealed tail of the newest one.
Spooled batches carry database tag ids, so they stay valid across registry changes.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from core.batch import ReadingBatch
from core.errors import StorageError
from storage.spool_format import MAGIC, decode_payload, encode_record, payload_rows

__all__ = ["Spool", "SpoolRecord"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")  # payload length, crc32(payload)


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    segment: int
    index: int  # position within the segment
    batch: ReadingBatch


@dataclass(slots=True)
class _Segment:
    seq: int
    path: Path
    size: int
    offsets: list[int] = field(default_factory=list)  # record start offsets
    lengths: list[int] = field(default_factory=list)  # record sizes, header included
    rows: list[int] = field(default_factory=list)  # rows per record
    read: int = 0  # records handed out by take()
    acked: int = 0  # records confirmed written; the file goes once all are
    sealed: bool = True

    @property
    def unread_rows(self) -> int:
        return sum(self.rows[self.read :])


class Spool:
    """FIFO of batches on disk under ``directory``, at most ``max_bytes`` in total.

    When full, whole oldest segments are dropped (drop-oldest), their unread batches
    counted in ``dropped_batches``/``dropped_rows``. Single-threaded: call from one thread
    (the writer's event loop).
    """

    def __init__(self, directory: str | Path, *, max_bytes: int, segment_bytes: int) -> None:
        if segment_bytes > max_bytes:
            raise ValueError("segment_bytes must not exceed max_bytes")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.spooled_batches = 0
        self.spooled_bytes = 0
        self.dropped_batches = 0
        self.dropped_rows = 0
        self.torn_records = 0
        self._segments: list[_Segment] = []
        self._active: _Segment | None = None
        self._fd: int | None = None
        self._next_seq = 1
        self._recover()

    # --- state -------------------------------------------------------------------

    @property
    def pending_batches(self) -> int:
        return sum(len(s.offsets) - s.read for s in self._segments)

    @property
    def pending_rows(self) -> int:
        return sum(s.unread_rows for s in self._segments)

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    def __len__(self) -> int:
        return self.pending_batches

    # --- writing -----------------------------------------------------------------

    def append(self, batch: ReadingBatch) -> bool:
        """Spool ``batch``; False if it alone exceeds the bound (it is then counted dropped)."""
        record = encode_record(batch)
        if len(record) + len(MAGIC) > self.max_bytes:
            log.warning(
                "spool: a %d-byte batch exceeds the %d-byte bound; dropped", len(record), self.max_bytes
            )
            self.dropped_batches += 1
            self.dropped_rows += len(batch)
            return False
        while True:
            seg = self._active
            new_segment = seg is None or bool(seg.offsets and seg.size + len(record) > self.segment_bytes)
            if self.size_bytes + len(record) + (len(MAGIC) if new_segment else 0) <= self.max_bytes:
                break
            self._drop_oldest()
        if new_segment:
            seg = self._open_segment()
        assert seg is not None
        assert self._fd is not None
        _write_all(self._fd, record)
        seg.offsets.append(seg.size)
        seg.lengths.append(len(record))
        seg.rows.append(len(batch))
        seg.size += len(record)
        self.spooled_batches += 1
        self.spooled_bytes += len(record)
        return True

    def close(self) -> None:
        self._seal()

    # --- reading -----------------------------------------------------------------

    def take(self, max_rows: int) -> list[SpoolRecord]:
        """The oldest unread records, at least one and up to ``max_rows`` rows in total.

        Taken records stay on disk until :meth:`ack`; if the process dies first they are
        read again on restart (writes are idempotent, so a replay is harmless).
        """
        out: list[SpoolRecord] = []
        rows = 0
        for seg in self._segments:
            while seg.read < len(seg.offsets):
                if out and rows + seg.rows[seg.read] > max_rows:
                    return out
                batch = self._read(seg, seg.read)
                seg.read += 1
                if batch is not None:
                    out.append(SpoolRecord(seg.seq, seg.read - 1, batch))
                    rows += len(batch)
                else:
                    seg.acked += 1  # unreadable: nothing to write, nothing to wait for
        return out

    def ack(self, records: list[SpoolRecord]) -> None:
        """Mark records written; delete segments whose every record is written."""
        by_seq = {s.seq: s for s in self._segments}
        for r in records:
            if (seg := by_seq.get(r.segment)) is not None:
                seg.acked += 1
        for seg in list(self._segments):
            if seg.acked >= len(seg.offsets) and seg.offsets:
                if seg is self._active:
                    self._seal()
                self._remove(seg)

    def requeue(self, records: list[SpoolRecord]) -> None:
        """Return taken but unwritten records so that the next take() yields them again.

        A record whose segment was dropped meanwhile (spool full) is counted as dropped.
        """
        by_seq = {s.seq: s for s in self._segments}
        for r in records:
            if (seg := by_seq.get(r.segment)) is not None:
                seg.read = min(seg.read, r.index)
            else:
                self.dropped_batches += 1
                self.dropped_rows += len(r.batch)

    # --- internals ---------------------------------------------------------------

    def _read(self, seg: _Segment, index: int) -> ReadingBatch | None:
        with open(seg.path, "rb") as f:
            f.seek(seg.offsets[index])
            data = f.read(seg.lengths[index])
        length, crc = _HEADER.unpack_from(data) if len(data) >= _HEADER.size else (-1, 0)
        payload = data[_HEADER.size :]
        try:
            if len(payload) != length or zlib.crc32(payload) != crc:
                raise StorageError("length or checksum mismatch")
            return decode_payload(payload)
        except StorageError as exc:
            log.warning("spool: record %d of %s unreadable (%s); skipped", index, seg.path.name, exc)
            self.torn_records += 1
            return None

    def _open_segment(self) -> _Segment:
        self._seal()
        seq = self._next_seq
        self._next_seq += 1
        path = self.directory / f"{seq:012d}.seg"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o640)
        _write_all(self._fd, MAGIC)
        _fsync_dir(self.directory)  # make the new file's directory entry durable
        seg = _Segment(seq, path, len(MAGIC), sealed=False)
        self._segments.append(seg)
        self._active = seg
        return seg

    def _seal(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        if self._active is not None:
            self._active.sealed = True
            self._active = None

    def _drop_oldest(self) -> None:
        seg = self._segments[0]
        if seg is self._active:
            self._seal()
        lost_batches = len(seg.offsets) - seg.read
        lost_rows = seg.unread_rows
        self.dropped_batches += lost_batches
        self.dropped_rows += lost_rows
        log.warning(
            "spool: full (%d bytes); dropped oldest segment %s with %d batches, %d rows",
            self.max_bytes, seg.path.name, lost_batches, lost_rows,
        )  # fmt: skip
        self._remove(seg)

    def _remove(self, seg: _Segment) -> None:
        self._segments.remove(seg)
        seg.path.unlink(missing_ok=True)

    def _recover(self) -> None:
        """Index the segments a previous process left; new records go to a new segment."""
        for path in sorted(self.directory.glob("*.seg")):
            seg, skipped = _scan(path)
            self.torn_records += skipped
            if seg is None or not seg.offsets:
                path.unlink(missing_ok=True)
                continue
            self._segments.append(seg)
        self._next_seq = max((s.seq for s in self._segments), default=0) + 1
        if self._segments:
            log.info(
                "spool: found %d batches (%d rows) from a previous run",
                self.pending_batches,
                self.pending_rows,
            )


def _scan(path: Path) -> tuple[_Segment | None, int]:
    """Index the valid records of one segment file; also return how many were skipped."""
    try:
        seq = int(path.stem)
    except ValueError:
        log.warning("spool: ignoring unexpected file %s", path.name)
        return None, 0
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        # A crash between creating the file and writing its magic leaves it empty.
        if data:
            log.warning("spool: %s is not a spool segment (bad magic); removed", path.name)
        return None, 0
    seg = _Segment(seq, path, len(data))
    pos = len(MAGIC)
    skipped = 0
    while pos < len(data):
        if pos + _HEADER.size > len(data):
            log.warning("spool: torn record header at %s:%d; skipped", path.name, pos)
            skipped += 1
            break
        length, crc = _HEADER.unpack_from(data, pos)
        end = pos + _HEADER.size + length
        if end > len(data):
            log.warning("spool: torn record at %s:%d (%d of %d bytes); skipped", path.name, pos, len(data) - pos,
                        _HEADER.size + length)  # fmt: skip
            skipped += 1
            break
        payload = memoryview(data)[pos + _HEADER.size : end]
        if zlib.crc32(payload) != crc:
            log.warning("spool: checksum mismatch at %s:%d; record skipped", path.name, pos)
            skipped += 1
        else:
            seg.offsets.append(pos)
            seg.lengths.append(end - pos)
            seg.rows.append(payload_rows(payload))
        pos = end
    return seg, skipped


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
