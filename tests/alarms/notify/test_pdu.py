"""SMS-SUBMIT PDUs from alarms.notify.pdu, read back with the emulator's own TS 23.040 decoder
(tests/support/gsm_modem_emulator.py): addresses, UCS-2 part sizes, the concatenation header, surrogates."""

from __future__ import annotations

import pytest

from alarms.notify.pdu import address, encode_submit, split_units
from tests.support.gsm_modem_emulator import decode_submit

SHORT_TEXT = "【报警】某某化工 一号罐区：TK-101 液位高高 92.5%"


def test_addresses_are_swapped_semi_octets_padded_with_f() -> None:
    # The worked example of the classic PDU tutorial (TP-DA 0B916407281553F8) and China Mobile's
    # Beijing SMSC as it appears in every AT+CSCA? answer (0891683108100005F0).
    assert address("46708251358").hex().upper() == "916407281553F8"
    assert encode_submit("8613912345678", "好", 0, smsc="8613800100500")[0][0].startswith(
        "0891683108100005F0"
    )


def test_single_part_pdu_decodes_to_what_was_encoded() -> None:
    [(pdu, length)] = encode_submit("8613912345678", SHORT_TEXT, 7)
    s = decode_submit(pdu)
    assert (s.number, s.toa, s.dcs, s.validity, s.smsc) == ("8613912345678", 0x91, 0x08, 167, None)
    assert (s.text, s.reference, s.tpdu_length) == (SHORT_TEXT, None, length)
    assert pdu.startswith("00")  # an empty SMSC field: the SIM's own centre; not counted in the length
    assert length == len(pdu) // 2 - 1


@pytest.mark.parametrize(("units", "parts"), [(70, [70]), (71, [67, 4]), (134, [67, 67]), (135, [67, 67, 1])])
def test_seventy_units_fit_one_sms_and_parts_hold_sixty_seven(units: int, parts: list[int]) -> None:
    assert [len(c) // 2 for c in split_units("罐" * units)] == parts
    pdus = encode_submit("8613912345678", "罐" * units, 200)
    assert [decode_submit(p).tpdu_length for p, _ in pdus] == [n for _, n in pdus]


def test_a_surrogate_pair_is_never_split_across_parts() -> None:
    text = "罐" * 66 + "🔥" + "罐" * 10  # the emoji would straddle units 67 and 68
    pdus = encode_submit("8613912345678", text, 9)
    decoded = [decode_submit(p) for p, _ in pdus]  # the decoder is strict UTF-16: a lone surrogate fails
    assert [len(d.text.encode("utf-16-be")) // 2 for d in decoded] == [66, 12]
    assert "".join(d.text for d in decoded) == text


def test_parts_carry_the_concatenation_header() -> None:
    pdus = encode_submit("8613912345678", "罐" * 150, 0xC8)
    # SMSC length, then 15 octets: first octet, MR, DA length, TON/NPI, 7 of digits, PID, DCS, VP, UDL
    headers = [bytes.fromhex(p)[16:22].hex() for p, _ in pdus]
    assert headers == ["050003c80301", "050003c80302", "050003c80303"]
    assert all(p.startswith("0051") for p, _ in pdus)  # no SMSC, TP-UDHI set
    decoded = [decode_submit(p) for p, _ in pdus]
    assert [(d.reference, d.total, d.seq) for d in decoded] == [(0xC8, 3, 1), (0xC8, 3, 2), (0xC8, 3, 3)]


@pytest.mark.parametrize(
    ("number", "text", "reference"),
    [("+8613912345678", "好", 0), ("8613912345678", "", 0), ("86139", "好", 256)],
)
def test_bad_input_is_refused(number: str, text: str, reference: int) -> None:
    with pytest.raises(ValueError):
        encode_submit(number, text, reference)
    with pytest.raises(ValueError, match="at most 255"):
        encode_submit("86139", "罐" * 67 * 256, 0)
