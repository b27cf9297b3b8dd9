"""Invalid rule configuration gives clear errors naming file:line and the document path.

Each case edits the test plant (one text replacement) and lists the expected issues as
(text on the reported line, path, message).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import load_plant
from core.errors import ConfigError
from tests.rules.streams import DATA

TAGS = "enterprises[0].hazard_sources[0].tags"
IL = "enterprises[0].hazard_sources[0].interlocks"

CASES: dict[str, tuple[str, str, list[tuple[str, str, str]]]] = {
    "interlock input on an unknown tag": (
        '- {tag: V1.LT3, op: ">=", value: 90}',
        '- {tag: V1.LT9, op: ">=", value: 90}',
        [("V1.LT9", f"{IL}[0].inputs[2].tag", "unknown tag 'V1.LT9'")],
    ),
    "HH below H": (
        "limits: {h: 1.5, hh: 1.8}",
        "limits: {h: 1.5, hh: 1.4}",
        [("hh: 1.4", f"{TAGS}[3].limits.hh", "must be above h (1.5), is 1.4")],
    ),
    "voting 4oo3": (
        "voting: 2oo3",
        "voting: 4oo3",
        [("voting: 4oo3", f"{IL}[0].voting", "voting 4oo3: M must be between 1 and N")],
    ),
    "final element that is not a position feedback": (
        "final_element: {tag: V1.XV1, safe_value: 0}",
        "final_element: {tag: V1.PT1, safe_value: 0}",
        [
            (
                "final_element: {tag: V1.PT1",
                f"{IL}[0].final_element.tag",
                "final element 'V1.PT1' must be the DISCRETE position feedback of a valve or breaker "
                "(demand without action is judged on it), is PRESSURE",
            )
        ],
    ),
    "interlock without a final element": (
        "            final_element: {tag: V1.XV1, safe_value: 0}\n",
        "",
        [("- code: IL1", f"{IL}[0].final_element", "required key is missing")],
    ),
    "deviation partner unknown": (
        "deviation: {tag: V1.LT2, max: 5, on_delay_s: 2}",
        "deviation: {tag: V1.LT7, max: 5, on_delay_s: 2}",
        [("V1.LT7", f"{TAGS}[0].deviation.tag", "unknown tag 'V1.LT7'")],
    ),
    "deviation partner of another kind": (
        "deviation: {tag: V1.LT2, max: 5, on_delay_s: 2}",
        "deviation: {tag: V1.PT1, max: 5, on_delay_s: 2}",
        [
            (
                "deviation: {tag: V1.PT1",
                f"{TAGS}[0].deviation.tag",
                "redundant transmitter 'V1.PT1' is a PRESSURE tag, this one is LEVEL",
            )
        ],
    ),
    "command tag unknown": (
        "state: {command: P1.YC1, travel_s: 3}",
        "state: {command: P1.YC9, travel_s: 3}",
        [("P1.YC9", f"{TAGS}[11].state.command", "unknown tag 'P1.YC9'")],
    ),
    "state alarm on an analog tag": (
        "limits: {h: 1.5, hh: 1.8}",
        "limits: {h: 1.5, hh: 1.8}\n            state: {alarm_value: 2}",
        [
            (
                "state: {alarm_value: 2}",
                f"{TAGS}[3].state",
                "state: belongs to DISCRETE tags, this one is PRESSURE",
            )
        ],
    ),
    "state without what to alarm on": (
        "state: {alarm_value: 1}",
        "state: {on_delay_s: 5}",
        [("state: {on_delay_s: 5}", f"{TAGS}[9].state", "give alarm_value, command or both")],
    ),
    "rate of change on a discrete tag": (
        "state: {alarm_value: 1}",
        "state: {alarm_value: 1}\n            rate: {max_per_min: 1}",
        [
            (
                "rate: {max_per_min: 1}",
                f"{TAGS}[9].rate",
                "a rate-of-change alarm needs an analog tag, this one is DISCRETE",
            )
        ],
    ),
    "misspelt rule key": (
        "data_quality: {stale_s: 30}",
        "data_quality: {stale: 30}",
        [
            (
                "data_quality: {stale: 30}",
                f"{TAGS}[2].data_quality.stale",
                "unknown key (check the spelling; see docs/configuration.md)",
            )
        ],
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_invalid_rule_config(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new, expected = CASES[name]
    text = (DATA / "plant.yaml").read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{name}: {old!r} must occur exactly once"
    reference = (DATA / "../../../config/reference").resolve()
    edited = text.replace(old, new).replace("../../../config/reference", str(reference))
    (tmp_path / "plant.yaml").write_text(edited, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_plant("plant.yaml", env={})
    lines = edited.splitlines()
    want = []
    for marker, path, message in expected:
        (line,) = [i + 1 for i, s in enumerate(lines) if marker in s]
        want.append(f"plant.yaml:{line} {path}: {message}")
    assert [str(i) for i in info.value.issues] == want
