"""Duty rosters (alarms/roster.py, roster_load.py, roster_checks.py): who is on duty across
handovers, midnight, holidays, swaps and months of rotation, in Asia/Shanghai local time; the
包保 trio; phone numbers masked everywhere; every malformed rosters.yaml refused at its file:line."""

from __future__ import annotations

import logging
import re
from collections import Counter
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from alarms.roster import BaoBaoRole, DeskLevel, OnDuty, Rosters, mask_email, mask_phone
from alarms.roster_load import load_rosters
from alarms.roster_show import describe
from core.clock import from_datetime
from core.config import load_plant
from core.errors import ConfigError
from core.plant import Plant

ROOT = Path(__file__).resolve().parents[2]
CST = timezone(timedelta(hours=8))  # China Standard Time: what Asia/Shanghai must give

BASE = """\
desks:
  LHJH:
    name: 宏家焦化值班室
    enterprise: LHJH
    people:
      a: {name: 甲, phone: "13812341234", email: jia@example.com}
      b: {name: 乙, phone: "13900000002"}
      c: {name: 丙, phone: "13700000003"}
      boss: {name: 郭, phone: "13600000004"}
    teams:
      T: [boss, a]
    shifts:
      - {name: DAY, start: "08:00", end: "20:00"}
      - {name: NIGHT, start: "20:00", end: "08:00"}
    rotation:
      start: 2026-01-01
      cycle:
        - {DAY: a, NIGHT: b}
        - {DAY: c, NIGHT: a}
        - {DAY: b, NIGHT: c}
    overrides:
      - {date: 2027-02-05, until: 2027-02-07, reason: 春节, shifts: [{name: ALL_DAY, start: "08:00", end: "08:00"}], on_duty: {ALL_DAY: T}}
      - {date: 2026-10-01, reason: 国庆, on_duty: {DAY: [boss, c]}}
    swaps:
      - {date: 2026-01-04, shift: NIGHT, absent: b, cover: c}
      - {shift: ALL_DAY, date: 2027-02-06, absent: boss, cover: a}
  XIAOYI:
    county: 孝义市
    people:
      office: {name: 值班室, phone: "0358-7288110"}
    shifts:
      - {name: ALL_DAY, start: "09:00", end: "09:00"}
    rotation:
      start: 2026-01-01
      cycle:
        - {ALL_DAY: office}
  LVLIANG:
    city: 吕梁市
    people:
      d: {name: 丁, phone: "+8613500000005"}
    rotation:
      start: 2026-01-01
      cycle:
        - {DAY: d, NIGHT: d}
"""
PHONES = ["13812341234", "13900000002", "13700000003", "13600000004", "7288110", "13500000005"]


@pytest.fixture(scope="module")
def plant() -> Plant:
    return load_plant(ROOT / "config/demo")


def _load(tmp_path: Path, plant: Plant, text: str = BASE) -> Rosters:
    path = tmp_path / "rosters.yaml"
    path.write_text(text, encoding="utf-8")
    return load_rosters(path, plant)


@pytest.fixture
def rosters(tmp_path: Path, plant: Plant) -> Rosters:
    return _load(tmp_path, plant)


def _at(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    """UTC µs of a China Standard Time wall-clock moment."""
    return from_datetime(datetime(y, mo, d, h, mi, s, tzinfo=CST))


def _who(rosters: Rosters, desk: str, at_us: int) -> tuple[str, list[str]]:
    duty = rosters.on_duty(desk, at_us)
    assert len({(o.shift, o.start_us, o.end_us) for o in duty}) == 1, duty
    return duty[0].shift, [o.person.key for o in duty]


# --- who is on duty ------------------------------------------------------------------------


def test_handover_at_0800_local_moves_the_duty_to_the_day_shift(rosters: Rosters) -> None:
    night = rosters.on_duty("LHJH", _at(2026, 1, 2, 7, 59, 59))
    assert [(o.person.name, o.shift) for o in night] == [("乙", "NIGHT")]  # 1 Jan's night
    assert (night[0].start_us, night[0].end_us) == (_at(2026, 1, 1, 20), _at(2026, 1, 2, 8))
    day = rosters.on_duty("LHJH", _at(2026, 1, 2, 8))
    assert [(o.person.name, o.shift) for o in day] == [("丙", "DAY")]  # cycle day 1
    assert (day[0].start_us, day[0].end_us) == (_at(2026, 1, 2, 8), _at(2026, 1, 2, 20))
    assert _who(rosters, "LHJH", _at(2026, 1, 2, 20) - 1) == ("DAY", ["c"])
    assert _who(rosters, "LHJH", _at(2026, 1, 2, 20)) == ("NIGHT", ["a"])


def test_a_night_shift_runs_across_midnight_as_one_shift(rosters: Rosters) -> None:
    before, after = (
        rosters.on_duty("LHJH", _at(2026, 1, 1, 23, 59, 59)),
        rosters.on_duty("LHJH", _at(2026, 1, 2, 0, 0, 1)),
    )
    assert before == after
    assert [(o.person.key, o.shift, o.start_us, o.end_us) for o in after] == [
        ("b", "NIGHT", _at(2026, 1, 1, 20), _at(2026, 1, 2, 8))
    ]


def test_handovers_are_china_local_time_utc_plus_8(rosters: Rosters) -> None:
    def utc(y: int, mo: int, d: int, h: int, mi: int = 0, s: int = 0) -> int:
        return from_datetime(datetime(y, mo, d, h, mi, s, tzinfo=UTC))

    # 08:00 in Xiaoyi is 00:00 UTC: the UTC date has not changed, the duty has
    assert _who(rosters, "LHJH", utc(2026, 1, 1, 23, 59, 59)) == ("NIGHT", ["b"])
    assert _who(rosters, "LHJH", utc(2026, 1, 2, 0, 0, 0)) == ("DAY", ["c"])
    day = rosters.on_duty("LHJH", utc(2026, 1, 2, 3))
    assert (day[0].start_us, day[0].end_us) == (utc(2026, 1, 2, 0), utc(2026, 1, 2, 12))
    # 20:00 local is 12:00 UTC
    assert _who(rosters, "LHJH", utc(2026, 1, 2, 12)) == ("NIGHT", ["a"])


def test_a_24_hour_desk_hands_over_at_its_own_time(rosters: Rosters) -> None:
    assert rosters.on_duty("XIAOYI", _at(2026, 3, 3, 8, 59, 59))[0].start_us == _at(2026, 3, 2, 9)
    duty = rosters.on_duty("XIAOYI", _at(2026, 3, 3, 9))
    assert [(o.person.key, o.shift, o.start_us, o.end_us) for o in duty] == [
        ("office", "ALL_DAY", _at(2026, 3, 3, 9), _at(2026, 3, 4, 9))
    ]


def test_default_shifts_are_day_0800_and_night_2000(rosters: Rosters) -> None:
    assert [(s.name, s.start_min, s.end_min) for s in rosters.desk("LVLIANG").shifts] == [
        ("DAY", 8 * 60, 20 * 60),
        ("NIGHT", 20 * 60, 8 * 60),
    ]
    assert _who(rosters, "LVLIANG", _at(2026, 5, 5, 19, 59)) == ("DAY", ["d"])
    assert _who(rosters, "LVLIANG", _at(2026, 5, 5, 20)) == ("NIGHT", ["d"])


@pytest.mark.parametrize(
    ("day", "dayshift"),
    [
        (date(2026, 1, 1), "a"),
        (date(2026, 1, 3), "b"),
        (date(2026, 1, 4), "a"),  # the cycle starts again
        (date(2026, 3, 1), "b"),  # 59 days in, over February's 28: 59 % 3 == 2
        (date(2026, 6, 15), "a"),  # 165 % 3 == 0
        (date(2026, 12, 31), "c"),  # 364 % 3 == 1
        (date(2028, 3, 1), "c"),  # over 29 February 2028: 790 % 3 == 1
        (date(2025, 12, 31), "b"),  # before the start, the cycle runs backwards
    ],
)
def test_rotation_over_months(rosters: Rosters, day: date, dayshift: str) -> None:
    assert _who(rosters, "LHJH", _at(day.year, day.month, day.day, 12)) == ("DAY", [dayshift])


def test_rotation_shares_the_shifts_evenly_for_a_year(rosters: Rosters) -> None:
    days = [date(2026, 2, 1) + timedelta(days=i) for i in range(360)]  # after the January swap
    desk = rosters.desk("LHJH")
    assert Counter(desk.plan(d).on_duty["NIGHT"] for d in days) == {("b",): 120, ("a",): 120, ("c",): 120}
    # shifts follow each other without gap or overlap over the year
    t, end = _at(2026, 1, 1, 8), _at(2027, 1, 1, 8)
    while t < end:
        nxt = rosters.on_duty("LHJH", t)[0].end_us
        assert rosters.on_duty("LHJH", nxt - 1)[0].end_us == nxt and nxt > t
        t = nxt


def test_holiday_override_a_24_hour_shift_then_back_to_the_rotation(rosters: Rosters) -> None:
    assert _who(rosters, "LHJH", _at(2027, 2, 5, 7, 59)) != ("ALL_DAY", ["boss", "a"])
    for moment in (_at(2027, 2, 5, 8), _at(2027, 2, 6, 3), _at(2027, 2, 8, 7, 59, 59)):
        duty = rosters.on_duty("LHJH", moment)
        assert [(o.person.key, o.shift, o.note) for o in duty] == [
            ("boss", "ALL_DAY", "春节"),
            ("a", "ALL_DAY", "春节"),
        ]
    assert rosters.on_duty("LHJH", _at(2027, 2, 6, 3))[0].start_us == _at(2027, 2, 6, 8) - 86_400_000_000
    assert _who(rosters, "LHJH", _at(2027, 2, 8, 8))[0] == "DAY"


def test_an_override_of_one_shift_keeps_the_rotation_for_the_others(rosters: Rosters) -> None:
    assert _who(rosters, "LHJH", _at(2026, 10, 1, 12)) == ("DAY", ["boss", "c"])
    assert rosters.on_duty("LHJH", _at(2026, 10, 1, 12))[0].note == "国庆"
    assert _who(rosters, "LHJH", _at(2026, 10, 1, 22)) == ("NIGHT", ["b"])  # 273 % 3 == 0


def test_a_swap_puts_the_cover_on_that_shift_only(rosters: Rosters) -> None:
    night = rosters.on_duty("LHJH", _at(2026, 1, 5, 2))  # 4 Jan's night, after midnight
    assert [(o.person.key, o.note) for o in night] == [("c", "covers 乙 (swap)")]
    assert _who(rosters, "LHJH", _at(2026, 1, 4, 12)) == ("DAY", ["a"])  # the day shift is as rostered
    assert _who(rosters, "LHJH", _at(2026, 1, 7, 22)) == ("NIGHT", ["b"])  # next cycle: b again


def test_a_swap_onto_someone_already_on_duty_leaves_them_alone_on_it(rosters: Rosters) -> None:
    duty = rosters.on_duty("LHJH", _at(2027, 2, 6, 12))  # 春节: boss and a; boss swapped out for a
    assert [(o.person.key, o.shift, o.note) for o in duty] == [("a", "ALL_DAY", "春节; covers 郭 (swap)")]
    assert _who(rosters, "LHJH", _at(2027, 2, 7, 12)) == ("ALL_DAY", ["boss", "a"])


def test_desks_lookup_and_unknown_desk(rosters: Rosters) -> None:
    assert [(d.code, d.level, d.subject) for d in rosters.desks()] == [
        ("LHJH", DeskLevel.ENTERPRISE, "LHJH"),
        ("XIAOYI", DeskLevel.COUNTY, "孝义市"),
        ("LVLIANG", DeskLevel.CITY, "吕梁市"),
    ]
    assert rosters.desk_of(DeskLevel.COUNTY, "孝义市") is rosters.desk("XIAOYI")
    assert rosters.desk_of(DeskLevel.COUNTY, "文水县") is None
    assert rosters.desk("LHJH").name == "宏家焦化值班室" and rosters.desk("XIAOYI").name == "XIAOYI"
    with pytest.raises(KeyError, match=r"unknown desk 'NOPE' \(known: LHJH, XIAOYI, LVLIANG\)"):
        rosters.on_duty("NOPE", 0)


def test_baobao_trio_from_the_plant_with_roles(rosters: Rosters, plant: Plant) -> None:
    trio = rosters.baobao("LHJH.LHJH-H01")
    assert [(c.role, c.name, c.phone) for c in trio] == [
        (BaoBaoRole.PRINCIPAL, "郭永平", "13903580101"),
        (BaoBaoRole.TECHNICAL, "任晓东", "13903580102"),
        (BaoBaoRole.OPERATIONAL, "田志刚", "13903580103"),
    ]
    assert rosters.baobao(plant.enterprises[0].hazard_sources[0]) == trio
    assert trio[0].key == "LHJH.LHJH-H01.principal"
    assert rosters.baobao(plant.enterprises[0].hazard_sources[0].model_copy(update={"baobao": None})) == []
    with pytest.raises(KeyError, match="LHJH-H99"):
        rosters.baobao("LHJH.LHJH-H99")


def test_the_demo_rosters_load_against_the_demo_plant(plant: Plant) -> None:
    r = load_rosters(ROOT / "config/demo/rosters.yaml", plant)
    assert {(d.level, d.subject) for d in r.desks()} == {
        (DeskLevel.ENTERPRISE, "LHJH"),
        (DeskLevel.ENTERPRISE, "LGGT"),
        (DeskLevel.COUNTY, "孝义市"),
        (DeskLevel.COUNTY, "文水县"),
        (DeskLevel.CITY, "吕梁市"),
    }
    # LGGT: three 8-hour shifts by teams; 00:30 on 1 Jan 2026 is 31 Dec's NIGHT (team A)
    assert _who(r, "LGGT", _at(2026, 1, 1, 0, 30)) == ("NIGHT", ["he_lin", "duty_line"])


# --- personal data -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        ("13812341234", "138****1234"),
        ("+8613812341234", "+86138****1234"),
        ("138 1234 1234", "138****1234"),
        ("0358-7261100", "0358-*****00"),
        ("03587261100", "0358*****00"),
        ("010-12345678", "010-******78"),
        ("12345", "***45"),
        ("1", "**"),
    ],
)
def test_mask_phone(phone: str, masked: str) -> None:
    assert mask_phone(phone) == masked


def test_mask_email() -> None:
    assert mask_email("jia@example.com") == "j***@example.com"
    assert mask_email("nonsense") == "***"


def _leaks(text: str) -> list[str]:
    digits = re.sub(r"\D", "", text)
    return [p for p in PHONES if p in digits or p in text] + (["jia@"] if "jia@" in text else [])


def test_no_roster_object_shows_a_whole_phone_number(
    rosters: Rosters, caplog: pytest.LogCaptureFixture
) -> None:
    duty = [o for d in rosters.desks() for o in rosters.on_duty(d.code, _at(2026, 1, 1, 12))]
    duty += rosters.on_duty("LHJH", _at(2026, 1, 1, 21))
    assert {o.person.key for o in duty} == {"a", "b", "office", "d"}
    objects: list[object] = [rosters, *rosters.desks(), *duty, *(o.person for o in duty), duty]
    objects += [*rosters.desk("LHJH").people.values(), rosters.baobao("LHJH.LHJH-H01")]
    log = logging.getLogger("test_roster")
    with caplog.at_level(logging.INFO, logger="test_roster"):
        for obj in objects:
            assert _leaks(repr(obj)) == [] and _leaks(str(obj)) == [] and _leaks(f"{obj}") == [], repr(obj)
            log.info("on duty %s / %r", obj, obj)
    assert (
        "138****1234" in caplog.text and "0358-*****10" in caplog.text and "j***@example.com" in caplog.text
    )
    assert _leaks(caplog.text) == [] and "13903580101" not in caplog.text


def test_a_bad_phone_number_is_refused_without_echoing_it(tmp_path: Path, plant: Plant) -> None:
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, plant, BASE.replace('"13812341234"', '"1381234123"'))
    assert "1381234123" not in str(exc.value) and "********23 is not a mainland mobile" in str(exc.value)


# --- malformed rosters.yaml: every problem at its file:line --------------------------------

# (case, old text, new text, the line (a substring of it) the error is at, message fragment)
BAD = [
    ("top-level key", "desks:\n", "colour: red\ndesks:\n", "colour: red", "unknown key"),
    ("desk key", "    name: 宏家", "    colour: red\n    name: 宏家", "colour: red", "unknown key"),
    ("person key", '"13700000003"}', '"13700000003", mail: x}', "丙", "unknown key"),
    ("unknown enterprise", "enterprise: LHJH", "enterprise: NOPE", "enterprise: NOPE", "unknown enterprise 'NOPE'"),
    ("unknown county", "county: 孝义市", "county: 汾阳市", "county: 汾阳市", "unknown county '汾阳市'"),
    ("unknown city", "city: 吕梁市", "city: 太原市", "city: 太原市", "unknown city"),
    ("two subjects", "county: 孝义市", "county: 孝义市\n    city: 吕梁市", "  XIAOYI:", "exactly one of"),
    ("no subject", "    enterprise: LHJH\n", "", "  LHJH:", "exactly one of"),
    ("same subject twice", "county: 孝义市", "enterprise: LHJH", "  XIAOYI:", "LHJH already has desk LHJH"),
    ("bad desk code", "  XIAOYI:", "  XIAO.YI:", "XIAO.YI", "a desk code is"),
    ("unknown person in rotation", "{DAY: c, NIGHT: a}", "{DAY: c, NIGHT: zz}", "NIGHT: zz", "unknown person or team 'zz'"),
    ("unknown person in team", "T: [boss, a]", "T: [boss, zz]", "T: [boss, zz]", "unknown person 'zz'"),
    ("team and person", "T: [boss, a]", "a: [boss]", "a: [boss]", "both a team and a person"),
    ("time not HH:MM", 'start: "20:00", end: "08:00"}', 'start: "8pm", end: "08:00"}', "8pm", "'8pm' is not a time HH:MM"),
    ("hour 24", 'end: "20:00"}', 'end: "24:00"}', "24:00", "'24:00' is not a time HH:MM"),
    ("unquoted time", 'start: "20:00", end: "08:00"}', 'start: 20:00, end: "08:00"}', "start: 20:00", 'quote it ("20:00")'),
    ("overlap", 'start: "20:00", end: "08:00"}', 'start: "19:00", end: "08:00"}', "19:00", "overlaps the shift before it (19:00–20:00)"),
    ("overlap past the handover", 'start: "20:00", end: "08:00"}', 'start: "20:00", end: "09:00"}', 'start: "20:00", end: "09:00"', "overlaps DAY (08:00–09:00)"),
    ("gap", 'start: "20:00", end: "08:00"}', 'start: "21:00", end: "08:00"}', "21:00", "leaves 20:00–21:00 uncovered"),
    ("gap before the handover", 'start: "20:00", end: "08:00"}', 'start: "20:00", end: "07:00"}', "    shifts:\n      - {name: DAY", "leaves 07:00–08:00 uncovered"),
    ("duplicate shift", '{name: NIGHT, start: "20:00"', '{name: DAY, start: "20:00"', '{name: DAY, start: "20:00"', "defined twice"),
    ("no shifts", '    shifts:\n      - {name: ALL_DAY, start: "09:00", end: "09:00"}', "    shifts: []", "shifts: []", "at least 1"),
    ("empty rotation", "        - {ALL_DAY: office}", "        []", "      cycle:\n        []", "a rotation without people"),
    ("shift nobody works", "{DAY: b, NIGHT: c}", "{DAY: [], NIGHT: c}", "DAY: []", "no one on duty"),
    ("shift missing from a cycle day", "{DAY: b, NIGHT: c}", "{DAY: b}", "{DAY: b}", "no one on duty in NIGHT"),
    ("unknown shift in rotation", "{DAY: b, NIGHT: c}", "{DAY: b, NIGHT: c, EVE: a}", "EVE: a", "unknown shift 'EVE'"),
    ("swap of a shift that does not exist", "shift: NIGHT, absent: b", "shift: EVE, absent: b", "shift: EVE", "no shift 'EVE' on 2026-01-04"),
    ("swap of someone not on duty", "absent: b, cover: c", "absent: a, cover: c", "absent: a", "'a' is not on duty in NIGHT"),
    ("swap cover unknown", "absent: b, cover: c", "absent: b, cover: zz", "cover: zz", "unknown person 'zz'"),
    ("swap cover self", "absent: b, cover: c", "absent: b, cover: b", "cover: b", "cannot cover their own"),
    ("override unknown person", "on_duty: {DAY: [boss, c]}", "on_duty: {DAY: [boss, zz]}", "zz", "unknown person or team 'zz'"),
    ("override unknown shift", "on_duty: {DAY: [boss, c]}", "on_duty: {EVE: [boss, c]}", "EVE", "unknown shift 'EVE'"),
    ("override shifts unstaffed", "on_duty: {ALL_DAY: T}", "on_duty: {}", "on_duty: {}", "no one on duty in ALL_DAY"),
    ("override handover moved", '{name: ALL_DAY, start: "08:00", end: "08:00"}', '{name: ALL_DAY, start: "00:00", end: "00:00"}', 'start: "00:00", end: "00:00"', "must start at the desk's handover 08:00"),
    ("override twice", "{date: 2026-10-01,", "{date: 2027-02-06,", "{date: 2027-02-06,", "2027-02-06 already has an override"),
    ("until before date", "until: 2027-02-07", "until: 2027-02-01", "until: 2027-02-01", "is before date"),
    ("bad phone", '"13900000002"', '"23900000002"', "23900000002", "*********02 is not a mainland mobile"),
    ("bad email", "jia@example.com", "jia-at-example", "jia-at-example", "not an e-mail address"),
    ("date not a date", "date: 2026-01-04", "date: tomorrow", "date: tomorrow", "'tomorrow' is not a date"),
    ("date as a number", "date: 2026-01-04", "date: 20260104", "date: 20260104", "20260104 is not a date"),
    ("impossible date", "start: 2026-01-01\n      cycle:\n        - {DAY: a", "start: 2026-02-30\n      cycle:\n        - {DAY: a", "2026-02-30", "day is out of range"),
    ("unknown time zone", "    county: 孝义市", "    county: 孝义市\n    timezone: Mars/Olympus", "Mars/Olympus", "unknown time zone"),
    ("no people", '      d: {name: 丁, phone: "+8613500000005"}', "      {}", "    people:\n      {}", "at least 1"),
    ("missing rotation", "    rotation:\n      start: 2026-01-01\n      cycle:\n        - {DAY: d, NIGHT: d}\n", "", "  LVLIANG:", "required key is missing"),
]  # fmt: skip


def _line(text: str, at: str) -> int:
    assert text.count(at) == 1, f"{at!r} must be in the mutated file once"
    return text[: text.index(at)].count("\n") + 1


@pytest.mark.parametrize(("old", "new", "at", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_malformed_rosters_are_refused_at_their_line(
    tmp_path: Path, plant: Plant, old: str, new: str, at: str, message: str
) -> None:
    assert BASE.count(old) == 1, old
    text = BASE.replace(old, new)
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, plant, text)
    where = f"{tmp_path / 'rosters.yaml'}:{_line(text, at)}"
    found = [str(i) for i in exc.value.issues]
    assert any(s.startswith(where + " ") and message in s for s in found), (where, message, found)


def test_every_problem_is_reported_at_once(tmp_path: Path, plant: Plant) -> None:
    text = BASE
    cases = {b[0]: b[1:] for b in BAD}
    names = [
        "unknown enterprise",
        "unknown person in team",
        "swap of a shift that does not exist",
        "bad phone",
    ]
    names += ["override twice", "unknown time zone", "unknown city", "bad email"]
    for name in names:
        old, new, _, _ = cases[name]
        text = text.replace(old, new)
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, plant, text)
    found = [str(i) for i in exc.value.issues]
    for name in names:
        _, _, at, message = cases[name]
        where = f"{tmp_path / 'rosters.yaml'}:{_line(text, at)} "
        assert any(s.startswith(where) and message in s for s in found), (name, found)


def test_the_base_config_is_valid(tmp_path: Path, plant: Plant) -> None:
    assert len(_load(tmp_path, plant).desks()) == 3  # the malformed cases differ from it by one edit


def test_on_duty_gives_on_duty_records(rosters: Rosters) -> None:
    assert all(isinstance(o, OnDuty) and o.desk == "LHJH" for o in rosters.on_duty("LHJH", _at(2026, 1, 1)))


def test_describe_lists_each_desk_in_local_time_with_masked_phones(rosters: Rosters) -> None:
    lines = describe(rosters, _at(2026, 1, 5, 2))
    assert (
        lines[0]
        == "LHJH\t宏家焦化值班室\tENTERPRISE LHJH\tNIGHT 2026-01-04 20:00–2026-01-05 08:00 CST\t丙 137****0003 (covers 乙 (swap))"
    )
    assert lines[1].startswith(
        "XIAOYI\tXIAOYI\tCOUNTY 孝义市\tALL_DAY 2026-01-04 09:00–2026-01-05 09:00 CST\t值班室 0358-*****10"
    )
    assert len(lines) == 3 and _leaks("\n".join(lines)) == []
    assert describe(rosters, _at(2026, 1, 5, 2), "XIAOYI") == [lines[1]]
    with pytest.raises(KeyError, match="unknown desk"):
        describe(rosters, 0, "NOPE")
