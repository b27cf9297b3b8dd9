"""SMS-SUBMIT PDUs (3GPP TS 23.040 §9.2.2.2) for a GSM modem in PDU mode (AT+CMGF=0): UCS-2 text (DCS 0x08)
to an international number (TON/NPI 0x91), split into concatenated parts (UDH IEI 0x00, 8-bit reference)
past one part's 70 characters. Pure functions; a surrogate pair is never split across two parts.

Everything is sent as UCS-2, ASCII too: alarm texts are Chinese, and one coding keeps the limits simple
(70 UTF-16 units in a single SMS, 67 per part of a concatenated one).
"""

from __future__ import annotations

__all__ = [
    "MAX_PARTS",
    "PART_UNITS",
    "SINGLE_UNITS",
    "VALIDITY_24H",
    "address",
    "encode_submit",
    "split_units",
]

SINGLE_UNITS = 70  # 140 octets of user data / 2 octets per UTF-16 unit
PART_UNITS = 67  # (140 - 6 octets of concatenation header) / 2
MAX_PARTS = 255  # the header's part count is one octet
# TP-VP relative, TS 23.040 §9.2.3.12.1: 144..167 mean 12 h + (VP - 143) * 30 min; 167 = 24 hours.
# An alarm no one has read after a day is stale: the SMSC should drop it rather than deliver it late.
VALIDITY_24H = 167

_DCS_UCS2 = 0x08
_TON_NPI_INTERNATIONAL = 0x91
_FIRST_OCTET = 0x11  # TP-MTI 01 (SMS-SUBMIT), TP-VPF 10 (relative validity period)
_UDHI = 0x40  # TP-User-Data-Header-Indicator


def address(digits: str) -> bytes:
    """An international number as TS 23.040 §9.1.2.5 semi-octets, without the length octet: TON/NPI 0x91,
    then the digits two per octet, low nibble first, an odd count padded with 0xF."""
    if not digits.isascii() or not digits.isdigit() or not 1 <= len(digits) <= 20:
        raise ValueError("an address is 1 to 20 digits, without '+'")
    padded = digits + "F" * (len(digits) % 2)
    return bytes([_TON_NPI_INTERNATIONAL]) + bytes.fromhex(
        "".join(padded[i + 1] + padded[i] for i in range(0, len(padded), 2))
    )


def split_units(text: str) -> list[bytes]:
    """``text`` as UCS-2 (UTF-16BE) user data: one chunk of up to 70 units, or parts of up to 67 units,
    each ending on a whole character (a high surrogate is carried over into the next part)."""
    data = text.encode("utf-16-be")
    if len(data) <= 2 * SINGLE_UNITS:
        return [data]
    parts: list[bytes] = []
    while data:
        cut = min(len(data), 2 * PART_UNITS)
        if cut < len(data) and 0xD8 <= data[cut - 2] <= 0xDB:  # the part would end on a high surrogate
            cut -= 2
        parts.append(data[:cut])
        data = data[cut:]
    return parts


def encode_submit(
    number: str, text: str, reference: int, smsc: str | None = None, validity: int = VALIDITY_24H
) -> list[tuple[str, int]]:
    """The PDUs that send ``text`` to ``number`` (international digits, e.g. ``8613800138000``), as
    (upper-case hex of SMSC field + TPDU, TPDU length in octets for ``AT+CMGS=<length>``).

    ``reference`` (0..255) ties the parts of one concatenated message together; the recipient's phone
    reassembles parts with the same sender and reference, so consecutive messages should use different
    ones. ``smsc`` None: the SIM's service centre (an SMSC field of length 0). ValueError for an empty
    text, a bad number or reference, or a text of more than 255 parts."""
    if not text:
        raise ValueError("an SMS needs text")
    if not 0 <= reference <= 255:
        raise ValueError("the concatenation reference is one octet, 0..255")
    chunks = split_units(text)
    if len(chunks) > MAX_PARTS:
        raise ValueError(f"the text needs {len(chunks)} parts, at most {MAX_PARTS}")
    smsc_field = b"\x00" if smsc is None else _with_length_octets(address(smsc))
    destination = address(number)
    out = []
    for seq, chunk in enumerate(chunks, start=1):
        header = b"" if len(chunks) == 1 else bytes([5, 0x00, 3, reference, len(chunks), seq])
        user_data = header + chunk
        tpdu = (
            bytes([_FIRST_OCTET | (_UDHI if header else 0), 0x00])  # TP-MR 0: the modem assigns it
            + bytes([len(number)])
            + destination
            + bytes([0x00, _DCS_UCS2, validity, len(user_data)])  # TP-PID, TP-DCS, TP-VP, TP-UDL
            + user_data
        )
        out.append(((smsc_field + tpdu).hex().upper(), len(tpdu)))
    return out


def _with_length_octets(addr: bytes) -> bytes:
    # The SMSC address (TS 24.011 RP-address) counts octets including TON/NPI, where TP-DA counts digits.
    return bytes([len(addr)]) + addr
