"""Alarm rationalization (alarms/rationale.py): the reference defaults file and the plant's
per-alarm overrides, good and bad input side by side, every error at its file:line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from alarms.model import Catalog
from alarms.rationale import FILE_NAME, RationaleDefaults, defaults_for, load_defaults
from core.conditions import RuleKind
from core.config import load_plant
from core.errors import ConfigError
from core.plant import Detector
from rules.compile import compile_rules

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "config/reference" / FILE_NAME
TWO = ROOT / "tests/core/data/two_enterprises.yaml"


# --- the defaults file -------------------------------------------------------------------


def test_the_reference_file_has_a_default_for_every_kind() -> None:
    d = load_defaults(REFERENCE)
    assert set(d.kinds) == {k.name for k in RuleKind} | {"SIF_DISABLED"}
    for kind, r in d.kinds.items():
        assert r.cause and r.consequence and r.action, kind
        assert r.source == f"default for {kind}"
    assert load_defaults(REFERENCE) is d  # read once


def test_gas_defaults_by_detector_and_response_times_by_urgency() -> None:
    d = load_defaults(REFERENCE)
    toxic, combustible = d.of("GAS_L2", Detector.TOXIC), d.of("GAS_L2", Detector.COMBUSTIBLE)
    assert toxic.source == "default for GAS_L2/TOXIC" and "中毒" in toxic.consequence
    assert combustible.source == "default for GAS_L2/COMBUSTIBLE" and "爆炸" in combustible.consequence
    assert d.of("O2_LOW", Detector.OXYGEN).source == "default for O2_LOW"  # no oxygen section: kinds
    assert d.of("HH", None).source == "default for HH"
    urgent = [toxic, combustible, d.of("NO_ACTION"), d.of("TRIP_DEMAND"), d.of("SIF_DISABLED")]
    diagnostics = [d.of(k) for k in ("BAD_QUALITY", "STALE", "OUT_OF_RANGE", "FROZEN", "DEVIATION")]
    assert max(r.response_s or 0 for r in urgent) <= 60
    assert min(r.response_s or 0 for r in diagnostics) >= 1800
    toxic_l1, combustible_l1 = d.of("GAS_L1", Detector.TOXIC), d.of("GAS_L1", Detector.COMBUSTIBLE)
    assert (toxic_l1.response_s, combustible_l1.response_s) == (120, 180)


def _defaults_file(tmp_path: Path, old: str, new: str) -> Path:
    text = REFERENCE.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / FILE_NAME
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def _line_of(path: Path, text: str) -> int:
    """The last line holding ``text`` (after the file's comments, which may mention it)."""
    return max(i for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if text in line)


HH_RESPONSE = "    response_s: 300\n  GAS_L1:"


@pytest.mark.parametrize(
    ("old", "new", "at", "message"),
    [
        (
            HH_RESPONSE,
            "    response_s: .nan\n  GAS_L1:",
            "response_s: .nan",
            "kinds.HH.response_s: must be a finite number",
        ),
        (
            HH_RESPONSE,
            "    response_s: 0\n  GAS_L1:",
            "response_s: 0",
            "kinds.HH.response_s: must be above 0",
        ),
        (
            HH_RESPONSE,
            "    response_s: 300\n    owner: 张三\n  GAS_L1:",
            "owner:",
            "kinds.HH.owner: unknown key",
        ),
        ("  CLOCK_AHEAD:\n", "  CLOCK_AHEADX:\n", "CLOCK_AHEADX:", "kinds.CLOCK_AHEADX: unknown kind"),
        ("  CLOCK_AHEAD:\n", "  CLOCK_AHEADX:\n", "kinds:", "kinds: no default for CLOCK_AHEAD"),
        (
            "    GAS_L2:\n      cause: 有毒",
            "    O2_LOW:\n      cause: 有毒",
            "O2_LOW:\n",
            "gas.TOXIC.O2_LOW: a TOXIC detector's",
        ),
        ("  TOXIC:\n", "  POISON:\n", "POISON:", "gas.POISON: Input should be"),
        (
            "    cause: 联锁旁路超过批准时限\n",
            "    cause: ''\n",
            "cause: ''",
            "kinds.BYPASS_OVERDUE.cause: String should have at least 1",
        ),
        ("kinds:\n  LL:\n", "kinds:\n  LL: [\n", "LL: [", "LL: ["),  # YAML syntax
    ],
)
def test_a_malformed_defaults_file_is_a_config_error_at_its_line(
    tmp_path: Path, old: str, new: str, at: str, message: str
) -> None:
    path = _defaults_file(tmp_path, old, new)
    with pytest.raises(ConfigError) as e:
        load_defaults(path)
    line = _line_of(path, at.split("\n")[0])
    found = [str(i) for i in e.value.issues]
    if message == at:  # the YAML error's own text
        assert any(s.startswith(f"{path}:") for s in found), found
    else:
        assert any(s.startswith(f"{path}:{line} {message}") for s in found), found


# --- the plant's overrides ---------------------------------------------------------------


def _plant(tmp_path: Path, *edits: tuple[str, str]) -> Path:
    text = TWO.read_text(encoding="utf-8").replace(
        "reference: ../../../config/reference", f"reference: {ROOT / 'config/reference'}"
    )
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "plant.yaml"
    path.write_text(text, encoding="utf-8")
    return path


LT1 = "limits: {h: 8, hh: 9}}"  # AA.V1.LT1, a level with h and hh
AT1 = "gas: {gas: NH3, detector: TOXIC}}"  # AA.V1.AT1, a toxic gas detector


def _with(tag: str, rationalization: str) -> tuple[str, str]:
    return tag, f"{tag[:-1]}, rationalization: {rationalization}}}"


def test_an_override_replaces_the_keys_it_gives(tmp_path: Path) -> None:
    path = _plant(
        tmp_path,
        _with(
            LT1,
            "{hh: {action: 开启紧急排放, response_s: 120}, bad_quality: {cause: 雷达天线结露, "
            "consequence: 失去液位监测, action: 通知仪表, response_s: 600}}",
        ),
        _with(AT1, "{level2: {consequence: 氨中毒}}"),
    )
    plant = load_plant(path)
    catalog = Catalog(plant, compile_rules(plant), defaults_for(tmp_path, plant))
    hh = catalog.by_key("AA.V1.LT1:HH")
    assert hh is not None
    default = load_defaults(REFERENCE).of("HH")
    assert (hh.rationale.cause, hh.rationale.action, hh.rationale.response_s) == (
        default.cause,
        "开启紧急排放",
        120,
    )
    assert hh.rationale.source == "AA.V1.LT1 rationalization.hh (rest: default for HH)"
    bad = catalog.by_key("AA.V1.LT1:BAD_QUALITY")
    assert bad is not None and bad.rationale.source == "AA.V1.LT1 rationalization.bad_quality"
    gas = catalog.by_key("AA.V1.AT1:GAS_L2")
    assert gas is not None and gas.rationale.consequence == "氨中毒"
    assert gas.rationale.source == "AA.V1.AT1 rationalization.level2 (rest: default for GAS_L2/TOXIC)"
    h = catalog.by_key("AA.V1.LT1:H")
    assert h is not None and h.rationale.source == "default for H"


@pytest.mark.parametrize(
    ("edit", "path", "message"),
    [
        (
            _with(LT1, "{ll: {action: x}}"),
            "tags[0].rationalization.ll",
            "this tag has no ll alarm to rationalize (its alarms: h, hh, bad_quality",
        ),
        (
            _with(LT1, "{level1: {action: x}}"),
            "tags[0].rationalization.level1",
            "this tag has no level1 alarm",
        ),
        (
            _with(AT1, "{hh: {action: x}}"),
            "tags[2].rationalization.hh",
            "this tag has no hh alarm to rationalize (its alarms: level1, level2",
        ),
        (_with(LT1, "{rate: {action: x}}"), "tags[0].rationalization.rate", "this tag has no rate alarm"),
        (_with(LT1, "{hhh: {action: x}}"), "tags[0].rationalization.hhh", "unknown key"),
        (_with(LT1, "{hh: {action: x, owner: y}}"), "tags[0].rationalization.hh.owner", "unknown key"),
        (
            _with(LT1, "{hh: {response_s: .nan}}"),
            "tags[0].rationalization.hh.response_s",
            "must be a finite number above 0 and at most 86400 s, is nan",
        ),
        (
            _with(LT1, "{hh: {response_s: 0}}"),
            "tags[0].rationalization.hh.response_s",
            "must be above 0 and at most 86400 s, is 0 s",
        ),
        (
            _with(LT1, "{hh: {action: ''}}"),
            "tags[0].rationalization.hh.action",
            "String should have at least 1 character",
        ),
    ],
)
def test_a_bad_override_is_an_error_at_its_line(
    tmp_path: Path, edit: tuple[str, str], path: str, message: str
) -> None:
    plant_file = _plant(tmp_path, edit)
    with pytest.raises(ConfigError) as e:
        load_plant(plant_file)
    line = _line_of(plant_file, edit[1])
    expected = f"{plant_file}:{line} enterprises[0].hazard_sources[0].{path}: {message}"
    assert any(str(i).startswith(expected) for i in e.value.issues), [str(i) for i in e.value.issues]


def test_an_interlock_override_and_a_bad_interlock_key(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "config/demo", tmp_path / "demo")
    shutil.copytree(ROOT / "config/reference", tmp_path / "reference")
    lhjh = tmp_path / "demo/enterprises/lhjh.yaml"
    text = lhjh.read_text(encoding="utf-8")
    plant = load_plant(tmp_path / "demo", env={})
    catalog = Catalog(plant, compile_rules(plant), defaults_for(tmp_path / "demo", plant))
    no_action = catalog.by_key("LHJH-H01.IL-101:NO_ACTION")
    assert no_action is not None and no_action.rationale.response_s == 30
    assert (
        no_action.rationale.source
        == "LHJH-H01.IL-101 rationalization.no_action (rest: default for NO_ACTION)"
    )
    lhjh.write_text(text.replace("          no_action:\n", "          no_actoin:\n"), encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_plant(tmp_path / "demo", env={})
    line = _line_of(lhjh, "no_actoin:")
    assert [str(i) for i in e.value.issues] == [
        f"{lhjh}:{line} enterprises[0].hazard_sources[0].interlocks[0].rationalization.no_actoin: "
        "unknown key (check the spelling; see docs/configuration.md)"
    ]


def test_no_reference_folder_means_no_defaults(tmp_path: Path) -> None:
    plant = load_plant(TWO).model_copy(update={"reference": None})
    assert defaults_for(TWO, plant) == RationaleDefaults()
    empty = tmp_path / "empty"
    empty.mkdir()
    plant = plant.model_copy(update={"reference": str(empty)})
    assert defaults_for(TWO, plant) == RationaleDefaults()
    assert defaults_for(TWO, load_plant(TWO)) is load_defaults(REFERENCE)
