"""Bounded, crash-safe disk spool of reading batches kept while the database is unreachable.

Append-only segment files ``<seq>.seg`` (magic, then records); a record is
``u32 length | u32 crc32 | payload`` with the payload holding the four arrays raw
(little-endian, no pickle). Invariants: records are read back in append order; every
record is either written to the database (then acked), still spooled, or counted in
``dropped_*``; a process killed mid-write loses at most the record being written, and a
torn or corrupt record is logged and skipped, never fatal. A failed write (disk full,
I/O error) is cut back off the segment, so it cannot corrupt the records after it; that
batch is counted dropped and ``append`` never raises. Segments are fsynced when sealed, on
a background thread so the event loop does not wait for the disk: a power cut (not a
process kill) can lose the unsealed tail of the newest one and segments whose fsync is
still running. Batches the database refuses go to ``quarantine/`` (same segment format,
one file each, so ``Spool(directory / "quarantine", ...)`` reads them back), bounded by
``max_bytes`` too. Spooled batches carry database tag ids, so they stay valid across
registry changes.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from core.atomic import fsync_directory
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
    read: int = 0  # records handed out by take() (requeue moves it back)
    acked: set[int] = field(default_factory=set)  # records done with (written, quarantined
    # or unreadable); the file goes once all are
    sealed: bool = True

    @property
    def unread_batches(self) -> int:
        return len(self.offsets) - self.read - sum(1 for i in self.acked if i >= self.read)

    @property
    def unread_rows(self) -> int:
        return sum(n for i, n in enumerate(self.rows[self.read :], self.read) if i not in self.acked)

    @property
    def done(self) -> bool:
        return bool(self.offsets) and len(self.acked) >= len(self.offsets)


class Spool:
    """FIFO of batches on disk under ``directory``, at most ``max_bytes`` in total.

    When full, whole oldest segments are dropped (drop-oldest), their unread batches
    counted in ``dropped_batches``/``dropped_rows``; so are batches that could not be
    written (disk full or failing). Single-threaded: call from one thread (the writer's
    event loop); only the fsync of sealed segments runs on a helper thread.
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
        self.write_errors = 0  # failed appends (each also counted in dropped_*)
        self.quarantined_batches = 0
        self.quarantined_rows = 0
        self._segments: list[_Segment] = []
        self._active: _Segment | None = None
        self._fd: int | None = None
        self._next_seq = 1
        self._failing = False  # appends are failing (logged once per streak)
        self._streak_dropped = 0
        self._sealer: ThreadPoolExecutor | None = None
        self.quarantine_directory = self.directory / "quarantine"
        self._quarantine_bytes = sum(p.stat().st_size for p in self.quarantine_directory.glob("*.seg"))
        self._quarantine_seq = max((_seq_of(p) for p in self.quarantine_directory.glob("*.seg")), default=0)
        self._recover()

    # --- state -------------------------------------------------------------------

    @property
    def pending_batches(self) -> int:
        return sum(s.unread_batches for s in self._segments)

    @property
    def pending_rows(self) -> int:
        return sum(s.unread_rows for s in self._segments)

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def quarantine_bytes(self) -> int:
        return self._quarantine_bytes

    def __len__(self) -> int:
        return self.pending_batches

    # --- writing -----------------------------------------------------------------

    def append(self, batch: ReadingBatch) -> bool:
        """Spool ``batch``; False if it was dropped (and counted in ``dropped_*``) instead.

        Dropped: it alone exceeds the bound, or the disk refused it. Never raises OSError.
        """
        record = encode_record(batch)
        if len(record) + len(MAGIC) > self.max_bytes:
            log.warning(
                "spool: a %d-byte batch exceeds the %d-byte bound; dropped", len(record), self.max_bytes
            )
            self.dropped_batches += 1
            self.dropped_rows += len(batch)
            return False
        try:
            self._append(record, len(batch))
        except OSError as exc:
            self.write_errors += 1
            self.dropped_batches += 1
            self.dropped_rows += len(batch)
            self._streak_dropped += 1
            if not self._failing:
                log.error("spool: cannot write to %s (%s); dropping batches until it works again "
                          "(counted in dropped_batches)", self.directory, exc)  # fmt: skip
                self._failing = True
            return False
        if self._failing:
            log.warning("spool: writing again; %d batches were dropped meanwhile", self._streak_dropped)
            self._failing = False
            self._streak_dropped = 0
        self.spooled_batches += 1
        self.spooled_bytes += len(record)
        return True

    def _append(self, record: bytes, rows: int) -> None:
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
        try:
            _write_all(self._fd, record)
        except OSError:
            self._cut_back(seg)
            raise
        seg.offsets.append(seg.size)
        seg.lengths.append(len(record))
        seg.rows.append(rows)
        seg.size += len(record)

    def _cut_back(self, seg: _Segment) -> None:
        """After a failed write: remove its partial bytes, or failing that, seal the segment.

        Either way later records cannot land behind garbage (a reader of a sealed segment
        with a torn tail stops there, and our index never points past ``seg.size``).
        """
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, seg.size)
        except OSError as exc:
            log.warning("spool: cannot cut the failed write off %s (%s); sealing it", seg.path.name, exc)
            self._seal()

    def close(self) -> None:
        """Seal the active segment and wait for pending fsyncs."""
        self._seal()
        if self._sealer is not None:
            self._sealer.shutdown(wait=True)
            self._sealer = None

    # --- quarantine ----------------------------------------------------------------

    def quarantine(self, batch: ReadingBatch, reason: str) -> bool:
        """Set aside a batch the database refuses, in ``quarantine/``; False if dropped.

        Counted in ``quarantined_*`` (or, when the quarantine is full or the disk fails,
        in ``dropped_*``). Never raises OSError.
        """
        record = encode_record(batch)
        size = len(MAGIC) + len(record)
        if self._quarantine_bytes + size > self.max_bytes:
            log.error("spool: quarantine full (%d bytes); dropped a refused batch of %d rows (%s)",
                      self._quarantine_bytes, len(batch), reason)  # fmt: skip
            self.dropped_batches += 1
            self.dropped_rows += len(batch)
            return False
        self._quarantine_seq += 1
        path = self.quarantine_directory / f"{self._quarantine_seq:012d}.seg"
        try:
            self.quarantine_directory.mkdir(exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                _write_all(fd, MAGIC + record)
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_directory(self.quarantine_directory)
        except OSError as exc:
            path.unlink(missing_ok=True)
            log.error("spool: cannot quarantine a refused batch of %d rows (%s); dropped", len(batch), exc)
            self.dropped_batches += 1
            self.dropped_rows += len(batch)
            return False
        self._quarantine_bytes += size
        self.quarantined_batches += 1
        self.quarantined_rows += len(batch)
        log.error("spool: database refused a batch of %d rows (%s); quarantined as %s",
                  len(batch), reason, path)  # fmt: skip
        return True

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
                index = seg.read
                if index in seg.acked:  # done with already (a requeue moved read back)
                    seg.read += 1
                    continue
                if out and rows + seg.rows[index] > max_rows:
                    self._collect()
                    return out
                batch = self._read(seg, index)
                seg.read += 1
                if batch is not None:
                    out.append(SpoolRecord(seg.seq, index, batch))
                    rows += len(batch)
                else:
                    seg.acked.add(index)  # unreadable: nothing to write, nothing to wait for
        self._collect()  # a segment with only unreadable records left goes now
        return out

    def ack(self, records: list[SpoolRecord]) -> None:
        """Mark records written (or quarantined); delete segments whose every record is."""
        by_seq = {s.seq: s for s in self._segments}
        for r in records:
            if (seg := by_seq.get(r.segment)) is not None:
                seg.acked.add(r.index)
        self._collect()

    def _collect(self) -> None:
        for seg in [s for s in self._segments if s.done]:
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
                seg.acked.discard(r.index)
                seg.read = min(seg.read, r.index)
            else:
                self.dropped_batches += 1
                self.dropped_rows += len(r.batch)

    # --- internals ---------------------------------------------------------------

    def _read(self, seg: _Segment, index: int) -> ReadingBatch | None:
        try:
            with open(seg.path, "rb") as f:
                f.seek(seg.offsets[index])
                data = f.read(seg.lengths[index])
        except OSError as exc:  # removed or unreadable underneath us: skip, never fatal
            log.warning("spool: record %d of %s unreadable (%s); skipped", index, seg.path.name, exc)
            self.torn_records += 1
            return None
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
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o640)
        try:
            _write_all(fd, MAGIC)
            fsync_directory(self.directory)  # make the new file's directory entry durable
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._fd = fd
        seg = _Segment(seq, path, len(MAGIC), sealed=False)
        self._segments.append(seg)
        self._active = seg
        return seg

    def _seal(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            name = self._active.path.name if self._active is not None else "?"
            if self._sealer is None:
                self._sealer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-fsync")
            self._sealer.submit(_fsync_close, fd, name)
        if self._active is not None:
            self._active.sealed = True
            self._active = None

    def _drop_oldest(self) -> None:
        seg = self._segments[0]
        if seg is self._active:
            self._seal()
        lost_batches = seg.unread_batches
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


def _seq_of(path: Path) -> int:
    try:
        return int(path.stem)
    except ValueError:
        return 0


def _fsync_close(fd: int, name: str) -> None:
    """Runs on the sealer thread: make a sealed segment durable and close it."""
    try:
        os.fsync(fd)
    except OSError as exc:
        log.error("spool: fsync of sealed segment %s failed (%s); a power cut may lose it", name, exc)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
