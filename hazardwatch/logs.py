"""Logging for every command: a bounded queue between the code that logs and the output.

Invariant: logging never blocks or formats for output on the caller's thread (the event loop).
A QueueHandler merges the message with its arguments, redacts credentials (core.redact) and
puts the record on a bounded queue; a listener thread formats and writes it. Drop policy: when
``QUEUE_RECORDS`` records are waiting, a new record is dropped (never an older one, so order is
kept) and counted (``dropped_records()``, metric ``hazardwatch_log_records_dropped_total``);
the listener writes one WARNING with the count when it next writes.

Formats: ``rich`` (colours, wrapped to the terminal), ``plain`` (one line per record: UTC time,
level, logger, message; line breaks inside a message or traceback written as ``\\n``),
``json`` (one object per line: ts, level, logger, message, exception when there is one).
``auto`` is rich on a terminal and plain otherwise (files, pipes, journald).
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import json
import logging
import queue
import sys
import traceback
from datetime import UTC, datetime
from enum import StrEnum
from logging.handlers import QueueHandler, QueueListener
from types import TracebackType
from typing import TextIO

from core.redact import redact

__all__ = ["QUEUE_RECORDS", "LogFormat", "dropped_records", "parse_level", "resolve", "setup", "shutdown"]

QUEUE_RECORDS = 10_000
STOP_WAIT_S = 5.0  # longest wait for the output at stop before giving up the rest
_FORMATTER = logging.Formatter()


class LogFormat(StrEnum):
    AUTO = "auto"
    RICH = "rich"
    PLAIN = "plain"
    JSON = "json"


def _utc(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _one_line(text: str) -> str:
    return text.rstrip("\r\n").replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")


class PlainFormatter(logging.Formatter):
    """``2024-05-01T08:00:00.123Z WARNING collector.base: message | traceback``, one line."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        for extra in (record.exc_text, record.stack_info):
            if extra:
                text = f"{text} | {extra}"
        return f"{_utc(record.created)} {record.levelname} {record.name}: {_one_line(text)}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message and, when there is one, exception."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exception"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        return json.dumps(doc, ensure_ascii=False)


class _StreamHandler(logging.StreamHandler[TextIO]):
    """Writes to the given stream, or to ``sys.stderr`` as it is at each record (tests and
    supervisors swap it)."""

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream or sys.stderr)
        self._follow_stderr = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self._follow_stderr:
            self.stream = sys.stderr
        super().emit(record)

    def flush(self) -> None:
        if self._follow_stderr:
            self.stream = sys.stderr
        super().flush()


class _BoundedQueueHandler(QueueHandler):
    def __init__(self, q: queue.Queue[logging.LogRecord | None]) -> None:
        super().__init__(q)
        self.bounded = q
        self.dropped = 0  # only changed under the handler's lock (Handler.handle holds it)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # Only what must be done now (the arguments may change after the call returns);
        # formatting for output is the listener's job.
        message = redact(record.getMessage())
        exc_text = record.exc_text
        if record.exc_info:
            exc_text = _FORMATTER.formatException(record.exc_info)
        record = copy.copy(record)
        record.msg = record.message = message
        record.args = None
        record.exc_info = None
        record.exc_text = redact(exc_text) if exc_text else None
        record.stack_info = redact(record.stack_info) if record.stack_info else None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


class _Listener(QueueListener):
    def __init__(self, source: _BoundedQueueHandler, output: logging.Handler) -> None:
        super().__init__(source.bounded, output)
        self.source = source
        self.reported = 0
        self.stuck = False  # the output did not finish within STOP_WAIT_S at stop

    def handle(self, record: logging.LogRecord) -> None:
        self._report_drops()
        super().handle(record)

    def _report_drops(self) -> None:
        dropped = self.source.dropped
        if dropped == self.reported:
            return
        n, self.reported = dropped - self.reported, dropped
        note = logging.makeLogRecord(
            {
                "name": __name__,
                "levelno": logging.WARNING,
                "levelname": "WARNING",
                "msg": f"log queue full: {n} record(s) dropped ({dropped} since start)",
            }
        )
        super().handle(note)

    def enqueue_sentinel(self) -> None:
        # The thread drains a full queue, unless its output is stuck (a stalled journald):
        # then exit goes on without the rest rather than hang a SIGTERM for ever.
        with contextlib.suppress(queue.Full):
            self.source.bounded.put(None, timeout=STOP_WAIT_S)

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self.enqueue_sentinel()
            thread.join(STOP_WAIT_S)
            self.stuck = thread.is_alive()
        if not self.stuck:
            self._report_drops()


_active: _Listener | None = None
_root_level = logging.WARNING  # the root logger's level before setup, restored by shutdown


def resolve(fmt: LogFormat, stream: TextIO) -> LogFormat:
    """The format ``fmt`` means on ``stream``: ``auto`` is rich on a terminal, plain elsewhere."""
    if fmt is LogFormat.AUTO:
        return LogFormat.RICH if stream.isatty() else LogFormat.PLAIN
    return fmt


def _output(fmt: LogFormat, stream: TextIO | None) -> logging.Handler:
    fmt = resolve(fmt, stream or sys.stderr)
    if fmt is LogFormat.RICH:
        from rich.console import Console
        from rich.logging import RichHandler

        console = Console(file=stream) if stream is not None else Console(stderr=True)
        handler: logging.Handler = RichHandler(console=console, show_path=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        return handler
    handler = _StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt is LogFormat.JSON else PlainFormatter())
    return handler


def parse_level(level: str) -> int:
    """A level name (any case) as its number; ValueError naming the choices."""
    levels = logging.getLevelNamesMapping()
    if level.upper() not in levels or level.upper() == "NOTSET":
        raise ValueError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return levels[level.upper()]


def setup(level: str, fmt: LogFormat | str = LogFormat.AUTO, stream: TextIO | None = None) -> None:
    """Route every record of ``level`` and above through the queue to ``stream`` (default:
    stderr) in ``fmt``; replaces an earlier setup, keeps handlers installed by others."""
    number = parse_level(level)
    shutdown()
    q: queue.Queue[logging.LogRecord | None] = queue.Queue(QUEUE_RECORDS)
    handler = _BoundedQueueHandler(q)
    global _active, _root_level
    _active = _Listener(handler, _output(LogFormat(fmt), stream))
    root = logging.getLogger()
    _root_level = root.level
    root.addHandler(handler)
    root.setLevel(number)
    # asyncua logs every publish response (a whole PublishResult, megabytes for thousands of
    # items) at INFO, on the event loop: its INFO is kept for --log-level DEBUG.
    logging.getLogger("asyncua").setLevel(number if number <= logging.DEBUG else max(number, logging.WARNING))
    _active.start()
    sys.excepthook = _log_uncaught


def shutdown() -> None:
    """Write what is queued and detach; safe to call twice (also runs at exit)."""
    global _active
    listener, _active = _active, None
    if listener is None:
        return
    root = logging.getLogger()
    root.removeHandler(listener.source)
    root.setLevel(_root_level)
    logging.getLogger("asyncua").setLevel(logging.NOTSET)
    # sys.excepthook stays _log_uncaught: with logging stopped it still writes redacted text.
    listener.stop()
    if listener.stuck:
        return  # its thread holds the output's lock: a flush would wait for it too
    for handler in listener.handlers:
        handler.flush()


def dropped_records() -> int:
    """Records dropped because the queue was full, since the current setup."""
    return _active.source.dropped if _active is not None else 0


def _log_uncaught(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """An exception that ends the process goes out like any record: formatted, redacted."""
    if _active is None:
        sys.stderr.write(redact("".join(traceback.format_exception(exc_type, exc, tb))))
        return
    logging.getLogger("hazardwatch").critical("unhandled exception", exc_info=(exc_type, exc, tb))
    shutdown()


atexit.register(shutdown)
