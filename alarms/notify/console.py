"""The demo's outbox: each message appended as one JSON line to a file (fsynced before the receipt) and/or a
one-line summary printed. The line is what the webhook would POST (``webhook.payload``) plus the recipient,
masked: the file is read by people and kept, and a phone number is personal data (issue 12 item 2).

Never fails but on the file: an OSError writing it is a RetryableError; printing is best effort.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import TextIO

from alarms.notify import Message, NotifierConfigError, Receipt, RetryableError, mask_phone
from alarms.notify.webhook import payload

__all__ = ["ConsoleOutbox"]

log = logging.getLogger(__name__)

PROVIDER = "console"


class ConsoleOutbox:
    """``Notifier``: ``path`` is appended to (created if missing; several instances may share it),
    ``echo`` prints a summary line to ``stream``. Receipts' message ids are ``<file name>@<byte offset>``."""

    def __init__(self, path: Path | None = None, *, echo: bool = True, stream: TextIO | None = None) -> None:
        if path is None and not echo:
            raise NotifierConfigError(f"{PROVIDER}: neither a path nor echo: every message would be lost")
        self.path = path
        self.echo = echo
        self._stream = stream

    def __repr__(self) -> str:
        return f"ConsoleOutbox(path={str(self.path) if self.path else None!r}, echo={self.echo})"

    async def send(self, message: Message) -> Receipt:
        line = json.dumps(
            {"recipient": mask_phone(message.recipient), **payload(message)},
            ensure_ascii=False,
            separators=(",", ":"),
        )
        message_id = message.idempotency_key
        if self.path is not None:
            try:
                offset = await asyncio.to_thread(self._append, self.path, line)
            except OSError as exc:
                raise RetryableError(
                    PROVIDER, "DISK", f"{self.path}: cannot append: {exc.strerror or type(exc).__name__}"
                ) from None
            message_id = f"{self.path.name}@{offset}"
        if self.echo:
            self._print(message)
        return Receipt(PROVIDER, message_id, message.idempotency_key)

    async def lookup(self, message: Message, sent_at_us: int) -> Receipt | None:
        """Whether the file holds the message (its idempotency key), for a send a crash interrupted;
        None without a file (an echo cannot be taken back: it is printed again)."""
        if self.path is None:
            return None
        try:
            offset = await asyncio.to_thread(self._find, self.path, message.idempotency_key)
        except OSError as exc:
            raise RetryableError(PROVIDER, "DISK", f"{self.path}: cannot read: {exc.strerror}") from None
        return (
            None
            if offset is None
            else Receipt(PROVIDER, f"{self.path.name}@{offset}", message.idempotency_key)
        )

    async def report(self, receipt: Receipt, message: Message, sent_at_us: int) -> None:
        return None  # a file has no delivery receipts

    @staticmethod
    def _find(path: Path, key: str) -> int | None:
        if not path.exists():
            return None
        needle = json.dumps(key).encode()
        offset = 0
        with path.open("rb") as f:
            for line in f:
                if needle in line and json.loads(line).get("idempotency_key") == key:
                    return offset
                offset += len(line)
        return None

    @staticmethod
    def _append(path: Path, line: str) -> int:
        # O_APPEND: each write lands at the end even with several writers; one write() per line keeps lines whole.
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            offset = os.lseek(fd, 0, os.SEEK_END)
            data = (line + "\n").encode("utf-8")
            if os.write(fd, data) != len(data):
                raise OSError(0, "short write")
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:  # the new file's directory entry must be durable too, or the whole file may vanish
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return offset

    def _print(self, message: Message) -> None:
        ev = message.event
        if ev is None:
            text = "summary " + " ".join(f"{k}={v}" for k, v in message.params)
        else:
            labels = dict(ev.labels)
            where = "/".join(labels.get(k) or "-" for k in ("enterprise", "hazard_source"))
            text = f"[{ev.priority}] {ev.event} {where} {ev.message_zh}"
        stream = self._stream or sys.stdout
        try:
            print(
                f"{text} → {mask_phone(message.recipient)} ({message.idempotency_key})",
                file=stream,
                flush=True,
            )
        except (OSError, ValueError) as exc:  # a closed or broken stdout must not keep an alarm from the file
            log.debug("console outbox: cannot print: %s", exc)
