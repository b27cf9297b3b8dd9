"""Golden configuration errors: each ``testcases/<name>/`` folder holds a ``plant.yaml`` (and
any file it includes) and ``expected.txt``, the exact lines ``ConfigError`` must list, one
``str(issue)`` per line, in the order ``ConfigError.issues`` sorts them.

A new case is a new folder, no code. Each case loads with the case folder as working
directory, so files show as ``plant.yaml:LINE``, and with an empty environment, so
``${NAME}`` without a default is always unset.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.config import load_plant
from core.errors import ConfigError

CASES = Path(__file__).parent / "testcases"
CASE_NAMES = sorted(p.name for p in CASES.iterdir() if p.is_dir())
# file:line, then " path: message", or ": message" for a problem with no document path
ISSUE_LINE = re.compile(r"^[^\s:]+\.yaml:[1-9]\d*(?: \S+)?: \S")


def _expected(name: str) -> list[str]:
    return (CASES / name / "expected.txt").read_text(encoding="utf-8").splitlines()


def test_case_folders_are_complete() -> None:
    assert len(CASE_NAMES) >= 30
    for name in CASE_NAMES:
        assert (CASES / name / "plant.yaml").is_file(), name
        assert _expected(name), f"{name}: expected.txt is missing or empty"


@pytest.mark.parametrize("name", CASE_NAMES)
def test_expected_lines_name_file_line_and_path(name: str) -> None:
    for line in _expected(name):
        assert ISSUE_LINE.match(line), f"{name}: {line!r} does not start with file:line path"


def test_multiple_errors_are_reported_together() -> None:
    messages = {line.split(": ", 1)[1] for line in _expected("multiple_errors")}
    assert len(messages) >= 5


@pytest.mark.parametrize("name", CASE_NAMES)
def test_config_error_case(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CASES / name)
    with pytest.raises(ConfigError) as info:
        load_plant(".", env={})
    assert [str(issue) for issue in info.value.issues] == _expected(name)
