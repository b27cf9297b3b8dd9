"""A null-modem cable in pure Python: two raw pseudo-terminals bridged by a thread.

Like ``socat pty,raw pty,raw``: whatever is written to ``a`` comes out of ``b`` and back.
The bridge records every chunk it carries with its monotonic time and direction, so tests
can decode the RTU frames on the wire and measure the gaps between them. A pty does not
emulate the baud rate: bytes arrive as fast as the bridge moves them.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import termios
import threading
import time
import tty
from dataclasses import dataclass
from types import TracebackType

__all__ = ["Chunk", "RtuRequest", "SerialPair", "crc16", "rtu_requests"]


@dataclass(frozen=True)
class Chunk:
    t: float  # time.monotonic() when the bridge read it
    to_b: bool  # True: written at a (the collector's end), delivered to b
    data: bytes


def _raw_pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(slave, termios.TCSANOW)
    tty.setraw(master, termios.TCSANOW)
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


class SerialPair:
    """Two device paths, ``a`` and ``b``, joined back to back. Use as a context manager."""

    def __init__(self) -> None:
        self._ma, self._sa, self.a = _raw_pty()
        self._mb, self._sb, self.b = _raw_pty()
        self.chunks: list[Chunk] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._unplug = threading.Event()
        self._closed: set[int] = set()
        self._thread = threading.Thread(target=self._shuttle, name="serial-pair", daemon=True)

    def __enter__(self) -> SerialPair:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        for fd in {self._ma, self._sa, self._mb, self._sb} - self._closed:
            with contextlib.suppress(OSError):
                os.close(fd)

    def unplug_a(self) -> None:
        """Hang up a's line, as when a USB adapter is pulled: its user's next read fails."""
        self._unplug.set()
        while self._ma not in self._closed and self._thread.is_alive():
            time.sleep(0.005)

    def seen(self) -> list[Chunk]:
        with self._lock:
            return list(self.chunks)

    def _shuttle(self) -> None:
        # Our own slave fds stay open, so a master never reads EIO (hang-up) while the
        # collector or server closes and reopens its end; nothing ever reads from them.
        peer = {self._ma: self._mb, self._mb: self._ma}
        with selectors.DefaultSelector() as sel:
            for fd in peer:
                sel.register(fd, selectors.EVENT_READ)
            while not self._stop.is_set():
                if self._unplug.is_set() and self._ma not in self._closed:
                    sel.unregister(self._ma)
                    for fd in (self._ma, self._sa):  # the last handles on a's pty besides its user's
                        os.close(fd)
                        self._closed.add(fd)
                for key, _ in sel.select(timeout=0.02):
                    src = int(key.fd)
                    try:
                        data = os.read(src, 4096)
                    except (BlockingIOError, OSError):
                        continue
                    now = time.monotonic()
                    with self._lock:
                        self.chunks.append(Chunk(now, src == self._ma, data))
                    view = memoryview(data)
                    while view and not self._stop.is_set() and peer[src] not in self._closed:
                        try:
                            view = view[os.write(peer[src], view) :]
                        except BlockingIOError:
                            time.sleep(0.001)


def crc16(frame: bytes) -> int:
    """Modbus RTU CRC-16 (poly 0xA001, init 0xFFFF), as sent: low byte first."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


@dataclass(frozen=True)
class RtuRequest:
    t: float  # when its first byte crossed the bridge
    unit: int
    function: int
    start: int
    count: int


def rtu_requests(chunks: list[Chunk]) -> list[RtuRequest]:
    """Decode the a→b byte stream as RTU read requests (unit, fc, address, count, CRC).

    Read requests (function codes 1-4) are 8 bytes. Anything else on the wire, or a bad
    CRC, raises AssertionError naming the bytes: a collector must never send it.
    """
    out: list[RtuRequest] = []
    buf = bytearray()
    starts: list[float] = []  # arrival time of each byte still in buf
    for c in chunks:
        if not c.to_b:
            continue
        buf += c.data
        starts += [c.t] * len(c.data)
        while len(buf) >= 2:
            unit, fc = buf[0], buf[1]
            assert fc in (1, 2, 3, 4), f"non-read function code {fc} on the wire: {bytes(buf).hex(' ')}"
            if len(buf) < 8:
                break
            frame = bytes(buf[:8])
            got = int.from_bytes(frame[6:8], "little")
            assert got == crc16(frame[:6]), f"bad CRC in {frame.hex(' ')}"
            out.append(
                RtuRequest(
                    starts[0], unit, fc, int.from_bytes(frame[2:4], "big"), int.from_bytes(frame[4:6], "big")
                )
            )
            del buf[:8]
            del starts[:8]
    assert not buf, f"a truncated request on the wire: {bytes(buf).hex(' ')}"
    return out
