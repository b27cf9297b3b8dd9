"""A GSM modem on the far end of a SerialPair: the AT dialogue of 3GPP TS 27.005/27.007 as a thread, with
an SMS-SUBMIT decoder written from TS 23.040 (independently of alarms.notify.pdu).

Every PDU is decoded and checked (length against AT+CMGS, UDH, UCS-2 that decodes strictly, so a split
surrogate pair is caught); a violation is recorded in ``errors`` and answered +CMS ERROR 304. ``fail``
scripts the answers to PDUs by order: None accepts, an int answers +CMS ERROR <int>, ``SILENT`` nothing,
``LATE`` accepts but answers only when the next bytes arrive (after the sender gave up), ``STALE`` sends a
stray OK before the prompt and before the answer, ``TORN`` an answer cut off mid-line (+CMS ERROR: 3[8])
and then nothing. ``refuse`` answers a command line with +CMS ERROR <int>
while it holds it; ``mute`` makes the modem silent; ``sim`` is what AT+CPIN? answers.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import threading
from dataclasses import dataclass, field
from types import TracebackType

__all__ = ["GsmModemEmulator", "Sms", "Submit", "decode_submit"]

SILENT, LATE, STALE, TORN = "SILENT", "LATE", "STALE", "TORN"


@dataclass(frozen=True)
class Submit:
    smsc: str | None  # None: the SMSC field was empty (the SIM's own)
    number: str
    toa: int
    dcs: int
    validity: int | None  # relative TP-VP
    reference: int | None  # concatenation: 8-bit reference, part count, sequence number
    total: int
    seq: int
    text: str
    tpdu_length: int


@dataclass(frozen=True)
class Sms:
    number: str
    text: str
    reference: int | None
    parts: int


def _semi_octets(data: bytes, digits: int) -> str:
    out = "".join(f"{b & 0x0F:X}{b >> 4:X}" for b in data)
    assert out[digits:] in ("", "F"), f"address padding {out[digits:]!r}"
    assert out[:digits].isdigit(), f"address digits {out!r}"
    return out[:digits]


def decode_submit(pdu_hex: str) -> Submit:
    """Decode one SMS-SUBMIT (SMSC field + TPDU) with UCS-2 user data; AssertionError names what is wrong."""
    data = bytes.fromhex(pdu_hex)
    smsc_len, smsc = data[0], None
    if smsc_len:
        assert data[1] == 0x91, f"SMSC type of address {data[1]:#x}"
        smsc = _semi_octets(data[2 : 1 + smsc_len], 2 * (smsc_len - 1)).removesuffix("F")
    tpdu = data[1 + smsc_len :]
    first = tpdu[0]
    assert first & 0x03 == 0x01, f"TP-MTI of {first:#x} is not SMS-SUBMIT"
    vpf, udhi = (first >> 3) & 0x03, bool(first & 0x40)
    digits, toa = tpdu[2], tpdu[3]
    end = 4 + (digits + 1) // 2
    number = _semi_octets(tpdu[4:end], digits)
    pid, dcs = tpdu[end], tpdu[end + 1]
    assert pid == 0, f"TP-PID {pid:#x}"
    vp_len = {0: 0, 2: 1}.get(vpf, 7)
    validity = tpdu[end + 2] if vpf == 2 else None
    udl_at = end + 2 + vp_len
    udl, ud = tpdu[udl_at], tpdu[udl_at + 1 :]
    assert dcs == 0x08, f"TP-DCS {dcs:#x} is not UCS-2"
    assert udl == len(ud), f"TP-UDL {udl} but {len(ud)} octets of user data"
    assert udl <= 140, f"TP-UDL {udl} over 140"
    reference, total, seq, body = None, 1, 1, ud
    if udhi:
        header_len = ud[0]
        header, body = ud[1 : 1 + header_len], ud[1 + header_len :]
        assert len(header) == header_len, "user data header runs past the user data"
        while header:
            iei, length = header[0], header[1]
            value, header = header[2 : 2 + length], header[2 + length :]
            if iei == 0x00:
                assert length == 3 and len(value) == 3, f"concatenation element of length {length}"
                reference, total, seq = value
        assert reference is not None, "TP-UDHI set without a concatenation element"
        assert total >= 2 and 1 <= seq <= total, f"part {seq} of {total}"
    assert len(body) % 2 == 0, "odd number of UCS-2 octets"
    text = body.decode("utf-16-be")  # strict: a lone surrogate (a pair split across parts) fails
    return Submit(smsc, number, toa, dcs, validity, reference, total, seq, text, len(tpdu))


@dataclass
class GsmModemEmulator:
    """The modem at ``device`` (a SerialPair end). Use as a context manager."""

    device: str
    pin: str | None = None  # the SIM asks for this PIN; None: no PIN
    sim: str = ""  # READY, SIM PIN (when pin is set), SIM PUK ...
    fail: list[int | str | None] = field(default_factory=list)
    mute: bool = False
    refuse: dict[str, int] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)  # every command line received
    submits: list[Submit] = field(default_factory=list)  # accepted PDUs, decoded
    errors: list[str] = field(default_factory=list)  # protocol violations
    echo: bool = True
    pdu_mode: bool = False
    pin_attempts: int = 0

    def __post_init__(self) -> None:
        self.sim = self.sim or ("SIM PIN" if self.pin else "READY")
        self._late, self._mr, self._cmee = "", 0, False
        self._pending: int | None = None  # the length AT+CMGS announced, while the "> " prompt is open
        self._buf = bytearray()
        self._stop = threading.Event()
        self._fd = os.open(self.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._run, name="gsm-modem", daemon=True)

    def __enter__(self) -> GsmModemEmulator:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        os.close(self._fd)

    def messages(self) -> list[Sms]:
        """The accepted submits reassembled as a phone would (a part sent twice counts once); asserts that
        every concatenated message is complete and consistent."""
        out: list[Sms] = []
        groups: dict[tuple[str, int], dict[int, Submit]] = {}
        for s in self.submits:
            if s.reference is None:
                out.append(Sms(s.number, s.text, None, 1))
                continue
            parts = groups.setdefault((s.number, s.reference), {})
            assert all(p.total == s.total for p in parts.values()), "parts disagree on the count"
            assert parts.get(s.seq, s).text == s.text, f"part {s.seq} sent twice with different text"
            parts[s.seq] = s
            if len(parts) == s.total:
                text = "".join(parts[i].text for i in range(1, s.total + 1))
                out.append(Sms(s.number, text, s.reference, s.total))
                del groups[(s.number, s.reference)]
        assert not groups, f"incomplete concatenated messages: {sorted(groups)}"
        return out

    def _write(self, text: str) -> None:
        with contextlib.suppress(OSError):  # the far end's user may have closed it
            os.write(self._fd, text.encode("ascii"))

    def _result(self, error: int | None = None, *, cme: bool = False) -> None:
        kind = "CME" if cme else "CMS"
        line = "OK" if error is None else f"+{kind} ERROR: {error}" if self._cmee else "ERROR"
        self._write(f"\r\n{line}\r\n")

    def _run(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._fd, selectors.EVENT_READ)
            while not self._stop.is_set():
                if not sel.select(timeout=0.02):
                    continue
                try:
                    chunk = os.read(self._fd, 4096)
                except (BlockingIOError, OSError):
                    continue
                if self._late:  # LATE: the answer the sender stopped waiting for comes now
                    self._write(self._late)
                    self._late = ""
                for byte in chunk:
                    self._byte(byte)

    def _byte(self, byte: int) -> None:
        if self.mute:
            return
        if self._pending is not None:
            if byte == 0x1B:  # ESC cancels the prompt
                self._pending, self._buf = None, bytearray()
            elif byte == 0x1A:
                pdu, self._buf = self._buf.decode("ascii", "replace").strip(), bytearray()
                self._pdu(pdu, self._pending)
                self._pending = None
            else:
                self._buf.append(byte)
        elif byte == 0x0D:
            line, self._buf = self._buf.decode("ascii", "replace").strip(), bytearray()
            if self.echo:
                self._write(line + "\r")
            if line:
                self.commands.append(line)
                self._command(line)
        elif byte not in (0x1B, 0x0A):  # ESC outside a prompt and LF are ignored
            self._buf.append(byte)

    def _command(self, line: str) -> None:
        upper = line.upper()
        if upper in self.refuse:
            self._result(self.refuse[upper])
        elif upper in ("AT", "ATE0", "ATE1", "AT+CMEE=1", "AT+CMEE=0", "AT+CMGF=0", "AT+CMGF=1"):
            self.echo = upper != "ATE0" if upper.startswith("ATE") else self.echo
            self._cmee = upper == "AT+CMEE=1" if upper.startswith("AT+CMEE") else self._cmee
            self.pdu_mode = upper == "AT+CMGF=0" if upper.startswith("AT+CMGF") else self.pdu_mode
            self._result()
        elif upper == "AT+CPIN?":
            self._write(f"\r\n+CPIN: {self.sim}\r\n")
            self._result()
        elif upper.startswith("AT+CPIN=") and self.sim != "SIM PIN":
            self._result(3, cme=True)
        elif upper.startswith("AT+CPIN="):
            self.pin_attempts += 1
            self.sim = "READY" if line[len("AT+CPIN=") :].strip('"') == self.pin else "SIM PIN"
            self._result(None if self.sim == "READY" else 16, cme=True)
        elif upper.startswith("AT+CMGS=") and (self.sim != "READY" or not self.pdu_mode):
            self._result(311 if self.sim != "READY" else 302)
        elif upper.startswith("AT+CMGS="):
            self._pending = int(upper[len("AT+CMGS=") :])
            self._write(("\r\nOK\r\n" if self.fail[:1] == [STALE] else "") + "\r\n> ")
        else:
            self.errors.append(f"unexpected command {line!r}")
            self._result(303)

    def _pdu(self, pdu: str, length: int) -> None:
        try:
            submit = decode_submit(pdu)
            assert submit.tpdu_length == length, f"AT+CMGS={length}, a TPDU of {submit.tpdu_length} octets"
        except (AssertionError, ValueError, IndexError) as exc:
            self.errors.append(f"bad PDU {pdu}: {exc}")
            self._result(304)
            return
        outcome = self.fail.pop(0) if self.fail else None
        if isinstance(outcome, int):
            self._result(outcome)
        elif outcome in (SILENT, TORN):
            self._write("\r\n+CMS ERROR: 3" if outcome == TORN else "")
        else:
            self.submits.append(submit)
            self._mr = (self._mr + 1) % 256
            answer = ("\r\nOK\r\n" if outcome == STALE else "") + f"\r\n+CMGS: {self._mr}\r\n\r\nOK\r\n"
            if outcome == LATE:
                self._late = answer
            else:
                self._write(answer)
