"""SMS through a GSM modem on a serial port (AT commands, 3GPP TS 27.005 PDU mode), for plants without
internet access: the text is ``text_template`` filled from the message's parameters, sent as UCS-2.

One modem sends one message at a time (a lock); a lost port or an unanswered command closes the port and
the next send reopens it and runs the set-up dialogue again. Phone numbers appear masked in every error
and log line, the SIM PIN in none. A refused PIN is not sent again until restarted: a SIM locks after three.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass

import serial_asyncio_fast

from alarms.notify import (
    Message,
    NotifierConfigError,
    NotifyError,
    PermanentError,
    Receipt,
    RetryableError,
    Secret,
    mask_phone,
    read_secret,
)
from alarms.notify.gsm_text import TextTemplate
from alarms.notify.pdu import encode_submit
from alarms.notify.sms import national_number

__all__ = ["PERMANENT_CME", "PERMANENT_CMS", "GsmModem", "GsmModemConfig", "classify"]

log = logging.getLogger(__name__)

PROVIDER = "gsm"
# +CMS ERROR codes no resend can fix (TS 24.011 Annex E-2 causes, TS 23.040 §9.2.3.22 TP-FCS, TS 27.005
# §3.2.5): number unassigned/barred/unknown, transfer rejected, a PDU the network or the modem refuses,
# SIM missing/locked/failed, SMSC unknown. Anything else (network out of order, congestion, no service,
# SC busy, SIM busy, unknown and vendor codes) is the radio's passing state: retryable.
PERMANENT_CMS = frozenset(
    {1, 8, 10, 21, 28, 29, 30, 50, 69, 96, 97, *range(128, 192), 193, 195, 196, 197, 198, 199}
    | {301, 302, 303, 304, 305, 310, 311, 312, 313, 315, 316, 317, 318, 330}
)
# +CME ERROR (TS 27.007 §9.2): operation not allowed/supported, SIM not inserted, PIN/PUK required,
# SIM failure, SIM wrong, incorrect password. SIM busy (14), no network (30), timeouts are retryable.
PERMANENT_CME = frozenset({3, 4, 10, 11, 12, 13, 15, 16, 17, 18})
_CTRL_Z, _ESC = b"\x1a", b"\x1b"


@dataclass(frozen=True)
class GsmModemConfig:
    port: str  # e.g. /dev/serial/by-id/usb-Quectel_EC20-if02-port0 (stable across re-plugging)
    text_template: str  # e.g. "【{event}】{enterprise} {hazard_source}：{text}"; "{{" for a literal brace
    template_params: tuple[str, ...]  # the message's parameters; each placeholder must be one of them
    baudrate: int = 115200
    pin_env: str | None = None  # e.g. HAZARDWATCH_SIM_PIN (or its _FILE); None: the SIM has no PIN
    smsc: str | None = None  # service centre, international digits (8613800100500); None: the SIM's
    timeout_s: float = 30.0  # longest wait for the modem's answer to one command
    max_param_chars: int = 40
    max_parts: int = 4  # the filled template's worst case must fit (67 characters a part, 70 alone)


def classify(line: str) -> NotifyError:
    """The failure a modem's final result line (``+CMS ERROR: 38``, ``+CME ERROR: 16``, ``ERROR``) means."""
    kind, _, value = line.partition(":")
    value = value.strip()
    if kind in ("+CMS ERROR", "+CME ERROR") and value.isdigit():
        family = kind[1:4]
        permanent = int(value) in (PERMANENT_CMS if family == "CMS" else PERMANENT_CME)
        error = PermanentError if permanent else RetryableError
        return error(PROVIDER, f"{family}_{int(value)}", f"the modem answered {kind} {int(value)}")
    return RetryableError(PROVIDER, "ERROR", f"the modem answered {line[:40]!r}")


class GsmModem:
    """The notifier. ``aclose()`` closes the port; it is opened again by the next ``send``."""

    provider = PROVIDER

    def __init__(self, config: GsmModemConfig, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.template = TextTemplate(
            PROVIDER,
            config.text_template,
            tuple(config.template_params),
            config.max_param_chars,
            config.max_parts,
        )
        if config.smsc is not None and not (config.smsc.isascii() and config.smsc.isdigit()):
            raise NotifierConfigError(
                f"{PROVIDER}: smsc is international digits without '+', e.g. 8613800100500"
            )
        if config.timeout_s <= 0 or config.baudrate <= 0:
            raise NotifierConfigError(f"{PROVIDER}: timeout_s and baudrate must be positive")
        self._pin: Secret | None = None
        if config.pin_env is not None:
            self._pin = read_secret(f"{PROVIDER}: pin_env", config.pin_env, env)
            if not re.fullmatch(r"[0-9]{4,8}", self._pin.reveal()):  # TS 22.030: 4 to 8 digits
                raise NotifierConfigError(f"{PROVIDER}: pin_env: a SIM PIN is 4 to 8 digits")
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._buffer = bytearray()
        self._ready = self._lost = self._pin_refused = False
        self._reference = random.randrange(256)
        self._partial: tuple[str, int] | None = None  # (key, reference) of a multipart send that failed

    async def send(self, message: Message) -> Receipt:
        number = "86" + national_number(PROVIDER, message.recipient)
        text = self.template.render(message)
        async with self._lock:
            if self._partial is not None and self._partial[0] == message.idempotency_key:
                reference = self._partial[1]  # the same reference: the phone completes the first try's parts
            else:
                reference = self._reference = (self._reference + 1) % 256
            pdus = encode_submit(number, text, reference, self.config.smsc)
            if len(pdus) > self.config.max_parts:
                raise PermanentError(
                    PROVIDER, "TEXT_TOO_LONG", f"{len(pdus)} parts, max_parts {self.config.max_parts}"
                )
            try:
                if not self._ready:
                    await self._open()
                ids = [await self._submit(pdu, length) for pdu, length in pdus]
            except NotifyError as exc:
                self._partial = (message.idempotency_key, reference) if len(pdus) > 1 else None
                log.debug("%s: sending to %s failed: %s", PROVIDER, mask_phone(message.recipient), exc)
                raise
            self._partial = None
            return Receipt(PROVIDER, ",".join(ids), message.idempotency_key)

    async def aclose(self) -> None:
        async with self._lock:
            await self._close()

    async def _open(self) -> None:
        port = self.config.port
        try:
            self._reader, self._writer = await serial_asyncio_fast.open_serial_connection(
                url=port, baudrate=self.config.baudrate, exclusive=True
            )
        except (OSError, ValueError) as exc:
            raise await self._down("PORT_UNAVAILABLE", f"cannot open {port}: {type(exc).__name__}") from None
        try:
            await self._set_up()
        except NotifyError:
            await self._close()  # a half-set-up modem: the next send starts again from AT
            raise
        self._ready = True
        if self._lost:
            log.info("%s: the modem on %s answers again", PROVIDER, port)
            self._lost = False

    async def _set_up(self) -> None:
        assert self._writer is not None
        self._writer.write(_ESC)  # cancels a "> " prompt a killed process may have left open
        for command in ("AT", "ATE0", "AT+CMEE=1"):
            await self._command(command)
        lines = await self._command("AT+CPIN?", expect="+CPIN:")
        state = next(x for x in lines if x.startswith("+CPIN:")).partition(":")[2].strip()
        if state == "SIM PIN":
            if self._pin is None or self._pin_refused:
                detail = "refused the PIN before" if self._pin_refused else "asks for a PIN: set pin_env"
                raise PermanentError(PROVIDER, "SIM_PIN", f"the SIM {detail}")
            try:
                await self._command(f'AT+CPIN="{self._pin.reveal()}"')
            except PermanentError as exc:
                self._pin_refused = exc.code == "CME_16"
                raise PermanentError(PROVIDER, exc.code, "the SIM refused the PIN; not sent again") from None
        elif state != "READY":
            raise PermanentError(PROVIDER, "SIM_STATE", f"the SIM is not ready: {state[:40]!r}")
        await self._command("AT+CMGF=0")

    async def _submit(self, pdu: str, length: int) -> str:
        await self._command(f"AT+CMGS={length}", prompt=True)
        lines = await self._command(pdu, terminator=_CTRL_Z, expect="+CMGS:")
        for line in lines:
            if line.startswith("+CMGS:"):
                return line.partition(":")[2].strip()
        raise RetryableError(PROVIDER, "NO_REFERENCE", "the modem said OK without +CMGS")

    async def _command(
        self, command: str, *, prompt: bool = False, terminator: bytes = b"\r", expect: str = ""
    ) -> list[str]:
        """Send ``command``; the lines before its final OK (or the "> " prompt). A timeout or an I/O error
        closes the port; an error result does not (the dialogue is still in step). An OK before the prompt
        or the ``expect`` line is stale (an answer that came after its timeout) and skipped: that re-syncs."""
        assert self._writer is not None
        lines: list[str] = []
        try:
            async with asyncio.timeout(self.config.timeout_s):
                self._writer.write(command.encode("ascii") + terminator)
                while True:
                    line = await self._line(prompt)
                    synced = not expect or any(x.startswith(expect) for x in lines)
                    if (line == ">") if prompt else (line == "OK" and synced):
                        return lines
                    if line == "ERROR" or line.startswith(("+CMS ERROR:", "+CME ERROR:")):
                        raise classify(line)
                    lines.append(line)  # the echo too, until ATE0: only AT+CPIN?'s lines are read, after it
        except TimeoutError:
            raise await self._down(
                "TIMEOUT", f"no answer from the modem within {self.config.timeout_s:g} s"
            ) from None
        except OSError as exc:
            raise await self._down(
                "PORT", f"the port {self.config.port} failed: {type(exc).__name__}"
            ) from None

    async def _line(self, prompt: bool) -> str:
        assert self._reader is not None
        while True:
            del self._buffer[: len(self._buffer) - len(self._buffer.lstrip(b"\r\n "))]
            if prompt and self._buffer.startswith(b">"):  # "> ", not followed by a line end
                del self._buffer[:1]
                return ">"
            ends = [i for i in (self._buffer.find(b"\r"), self._buffer.find(b"\n")) if i >= 0]
            if ends:
                line = bytes(self._buffer[: min(ends)])
                del self._buffer[: min(ends) + 1]
                return line.decode("ascii", "replace").strip()
            chunk = await self._reader.read(256)
            if not chunk:
                raise ConnectionError("the port closed")
            self._buffer += chunk

    async def _down(self, code: str, detail: str) -> RetryableError:
        await self._close()  # the dialogue is out of step or the port gone: the next send reopens it
        if not self._lost:
            log.warning("%s: the modem on %s is unavailable: %s", PROVIDER, self.config.port, detail)
            self._lost = True
        return RetryableError(PROVIDER, code, detail)

    async def _close(self) -> None:
        writer, self._reader, self._writer, self._ready = self._writer, None, None, False
        self._buffer.clear()
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
