"""The alarm journal's unit of work (``Commit``) and its local durable log.

Every change the alarm manager makes (a batch of condition edges, an operator command, a
timer) becomes one ``Commit``: journal rows, the alarms' new state rows, outbox rows, command
outcomes, audit rows and the rule engine's state for the rules involved, numbered by ``seq``
(gap-free, increasing). A commit is appended to the ``LocalLog`` (fsynced) before anything
else sees it, then written to the database in one transaction (``alarms.store``); the log
forgets it once the database has it. So a process killed at any point, or a database that is
down for hours, loses nothing and reorders nothing: on start the log's commits the database
does not have yet are written first, in order, and writing one twice is a no-op (every row
carries its commit's seq).

Log format: segment files ``<first seq>.log`` in one directory, each a sequence of records
``u32 length | u32 crc32 | JSON payload`` (UTF-8). A record torn by a crash (short, or its
checksum wrong) ends its segment: it is cut off when the log opens, with a warning. Segments
roll over at ``segment_bytes`` and are deleted once every commit in them is stored.

Reading back costs what is read: each segment keeps an index (seq and byte offset of every
record, built when the log opens and extended by ``append``), so ``pending(after, limit)`` seeks
to the first commit after ``after`` and decodes at most ``limit`` records. The index is ints
only: 16 bytes a commit, 16 MB per million commits (decoded commits are never kept).
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import math
import operator
import os
import struct
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.atomic import fsync_directory
from core.errors import StorageError

__all__ = ["AlarmRow", "CommandOutcome", "Commit", "JournalRow", "LocalLog", "OutboxRow", "RuleRow"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")  # payload length, crc32(payload)
_SUFFIX = ".log"


@dataclass(frozen=True, slots=True)
class JournalRow:
    alarm_key: str
    action: str  # alarms.state.Action value
    old_status: str
    new_status: str
    at_us: int  # when it happened: the edge's source time, else the engine's clock
    value: float
    limit: float
    actor: str  # "engine" or the person who commanded
    command_id: str | None = None
    detail: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class AlarmRow:
    """One alarm's current state with its labels (a row of alarm_state)."""

    key: str
    enterprise: str
    county: str
    hazard_source: str
    unit: str | None
    subject: str
    kind: str
    priority: str
    status: str
    condition: bool
    acked: bool
    latching: bool
    since_us: int
    shelved_until_us: int | None
    by_whom: str | None
    reason: str | None
    value: float
    limit: float
    raised_at_us: int | None
    acked_at_us: int | None
    acked_by: str | None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    n: int  # the journal row (position in the commit) it announces
    alarm_key: str
    event: str  # raised | reraised | resolved
    priority: str
    labels: dict[str, str | None]
    message_zh: str
    message_en: str


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    id: str
    status: str  # applied | rejected
    result: str | None  # the alarm's status after it was applied
    reason: str | None  # why it was rejected


@dataclass(frozen=True, slots=True)
class RuleRow:
    """The rule engine's state of one rule that must agree with its alarm after a crash."""

    key: str
    active: bool
    since_us: int


@dataclass(frozen=True, slots=True)
class Commit:
    seq: int
    arrival_us: int  # the engine's clock when it made the commit
    journal: tuple[JournalRow, ...] = ()
    alarms: tuple[AlarmRow, ...] = ()
    outbox: tuple[OutboxRow, ...] = ()
    commands: tuple[CommandOutcome, ...] = ()
    rules: tuple[RuleRow, ...] = ()
    audit: tuple[tuple[str, str, str, dict[str, Any]], ...] = ()  # actor, action, target, detail

    def encode(self) -> bytes:
        body = {
            "seq": self.seq,
            "arrival": self.arrival_us,
            "journal": [_row(r) for r in self.journal],
            "alarms": [_row(r) for r in self.alarms],
            "outbox": [_row(r) for r in self.outbox],
            "commands": [_row(r) for r in self.commands],
            "rules": [_row(r) for r in self.rules],
            "audit": [list(a) for a in self.audit],
        }
        return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, payload: bytes) -> Commit:
        body = json.loads(payload)
        return cls(
            seq=body["seq"],
            arrival_us=body["arrival"],
            journal=tuple(_unrow(JournalRow, r) for r in body["journal"]),
            alarms=tuple(_unrow(AlarmRow, r) for r in body["alarms"]),
            outbox=tuple(_unrow(OutboxRow, r) for r in body["outbox"]),
            commands=tuple(_unrow(CommandOutcome, r) for r in body["commands"]),
            rules=tuple(_unrow(RuleRow, r) for r in body["rules"]),
            audit=tuple((a[0], a[1], a[2], a[3]) for a in body["audit"]),
        )


def _row(r: Any) -> list[Any]:
    # JSON has no NaN or infinity: NaN (no value, no limit) as null, ±inf (a BAD sample can
    # carry one) as "inf" / "-inf"; only the float fields are looked at (a flood commit holds
    # thousands of rows)
    values = list(_FIELDS[type(r)](r))
    for i in _FLOAT_AT.get(type(r), ()):
        v = values[i]
        if isinstance(v, float) and not math.isfinite(v):
            values[i] = _json_float(v)
    return values


def _json_float(v: float) -> float | str | None:
    if math.isfinite(v):
        return v
    return None if math.isnan(v) else repr(v)


_FLOATS = {"value", "limit"}
_ROWS = (JournalRow, AlarmRow, OutboxRow, CommandOutcome, RuleRow)
_FIELDS = {cls: operator.attrgetter(*cls.__slots__) for cls in _ROWS}
_FLOAT_AT = {cls: tuple(i for i, f in enumerate(cls.__slots__) if f in _FLOATS) for cls in _ROWS}


def _unrow(cls: Any, values: list[Any]) -> Any:
    return cls(
        *(
            (math.nan if v is None else float(v)) if f in _FLOATS else v
            for f, v in zip(cls.__slots__, values, strict=True)
        )
    )


@dataclass(slots=True)
class _Segment:
    first: int  # seq of its first commit
    path: Path
    size: int
    last: int = -1  # seq of its last commit
    # the index: seqs[i] is the seq of the record at byte offsets[i] (increasing; seqs may have
    # gaps where an append failed)
    seqs: array[int] = field(default_factory=lambda: array("q"))
    offsets: array[int] = field(default_factory=lambda: array("q"))


@dataclass
class LocalLog:
    """Commits not yet in the database, on local disk. ``append`` returns once the commit is
    on disk (fsync); ``pending()`` gives the commits after ``stored`` in order (``chunks()`` the
    same a bounded list at a time); ``forget(seq)`` drops what the database now has."""

    directory: Path
    segment_bytes: int = 16 << 20
    _segments: list[_Segment] = field(default_factory=list)
    _fd: int | None = None

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.directory.glob(f"*{_SUFFIX}"), key=_first_seq):
            seg = _Segment(_first_seq(path), path, 0)
            self._index(seg)
            if seg.last < 0:
                path.unlink()
                continue
            self._segments.append(seg)

    @property
    def last_seq(self) -> int:
        """The newest commit in the log (-1: empty)."""
        return self._segments[-1].last if self._segments else -1

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    def append(self, commit: Commit) -> None:
        """Raises StorageError when the commit could not be kept (the log stays readable)."""
        try:
            payload = commit.encode()
        except (TypeError, ValueError) as exc:
            raise StorageError(f"alarm commit {commit.seq} cannot be encoded: {exc}") from exc
        record = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        seg = self._segments[-1] if self._segments and self._fd is not None else None
        try:
            if seg is None or seg.size + len(record) > self.segment_bytes:
                seg = self._open(commit.seq)
            assert self._fd is not None
            written = 0
            while written < len(record):
                written += os.write(self._fd, record[written:])
            os.fsync(self._fd)
        except OSError as exc:
            where = seg.path if seg is not None else self.directory
            if seg is not None and self._fd is not None:
                with contextlib.suppress(OSError):  # a partial record would end the segment
                    os.ftruncate(self._fd, seg.size)
            self.close()  # the next append starts a fresh segment
            raise StorageError(f"alarm log {where}: {exc}") from exc
        seg.seqs.append(commit.seq)
        seg.offsets.append(seg.size)
        seg.size += len(record)
        seg.last = commit.seq

    def pending(self, after: int, limit: int | None = None) -> list[Commit]:
        """The commits in the log with seq > ``after``, in order (at most ``limit``). Raises
        StorageError when a segment cannot be read or holds a checksummed record that cannot be
        decoded; a record whose checksum no longer matches ends what is read of its segment."""
        out: list[Commit] = []
        for seg in self._segments:
            if limit is not None and len(out) >= limit:
                break
            if seg.last > after:
                start = bisect.bisect_right(seg.seqs, after)
                count = len(seg.seqs) - start
                if limit is not None:
                    count = min(count, limit - len(out))
                out += self._read(seg, start, count)
        return out

    def chunks(self, after: int, size: int) -> Iterator[list[Commit]]:
        """``pending(after)`` as lists of at most ``size`` commits, in order, read one at a time:
        a backlog of hours is never in memory at once."""
        if size < 1:
            raise ValueError(f"alarm log chunks: size {size} must be at least 1")
        while chunk := self.pending(after, size):
            yield chunk
            after = chunk[-1].seq

    def forget(self, stored: int) -> None:
        """Drop the segments whose every commit has seq <= ``stored`` (not the open one)."""
        while len(self._segments) > 1 and self._segments[0].last <= stored:
            self._segments.pop(0).path.unlink()
        if len(self._segments) == 1 and self._segments[0].last <= stored and self._fd is None:
            self._segments.pop(0).path.unlink()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self, seq: int) -> _Segment:
        self.close()
        path = self.directory / f"{seq:020d}{_SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        seg = _Segment(seq, path, 0)
        self._segments.append(seg)
        fsync_directory(self.directory)
        return seg

    def _index(self, seg: _Segment) -> None:
        """Index the segment's records, each decoded once to check it; a torn or corrupt
        record ends the segment: it is cut off there."""
        data = seg.path.read_bytes()
        at = 0
        while (payload := _payload(data, at)) is not None:
            seg.seqs.append(_decode(seg, at, payload).seq)
            seg.offsets.append(at)
            at += _HEADER.size + len(payload)
        if at < len(data):
            log.warning(
                "alarm log %s: a torn record at byte %d (a crash while writing) cut off", seg.path, at
            )
            with open(seg.path, "r+b") as f:
                f.truncate(at)
                os.fsync(f.fileno())
        seg.size = at
        seg.last = seg.seqs[-1] if seg.seqs else -1

    def _read(self, seg: _Segment, start: int, count: int) -> list[Commit]:
        """The segment's ``count`` indexed records from the ``start``-th, in one read; one whose
        checksum no longer matches (the disk changed under the log) ends the segment."""
        if count <= 0:
            return []
        first = seg.offsets[start]
        end = seg.offsets[start + count] if start + count < len(seg.offsets) else seg.size
        try:
            with open(seg.path, "rb") as f:
                f.seek(first)
                data = f.read(end - first)
        except OSError as exc:
            raise StorageError(f"alarm log {seg.path}: {exc}") from exc
        out = []
        for offset in seg.offsets[start : start + count]:
            payload = _payload(data, offset - first)
            if payload is None:
                break
            out.append(_decode(seg, offset, payload))
        return out


def _payload(data: bytes, at: int) -> bytes | None:
    """The payload of the record at byte ``at`` of ``data``; None: none there, or torn or corrupt."""
    if at + _HEADER.size > len(data):
        return None
    length, crc = _HEADER.unpack_from(data, at)
    payload = data[at + _HEADER.size : at + _HEADER.size + length]
    if len(payload) < length or zlib.crc32(payload) != crc:
        return None
    return payload


def _decode(seg: _Segment, at: int, payload: bytes) -> Commit:
    try:
        return Commit.decode(payload)
    except (ValueError, KeyError, TypeError) as exc:
        # whole and checksummed, yet unreadable (a newer format?): never cut, never skip
        raise StorageError(f"alarm log {seg.path}: record at byte {at} cannot be read: {exc}") from exc


def _first_seq(path: Path) -> int:
    try:
        return int(path.name.removesuffix(_SUFFIX))
    except ValueError:
        return -1
