"""Suite-wide rules and fixtures: under CI=true a skipped test fails the run; the simulator fixture."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator

import pytest

from tests.support.simulator_fixture import simulator  # noqa: F401 — the simulated plant, for every test package

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI", "").lower() == "true" and _skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if os.environ.get("CI", "").lower() == "true" and _skipped:
        terminalreporter.section("skipped tests fail under CI=true", red=True)
        for nodeid in _skipped:
            terminalreporter.line(f"SKIPPED (counts as failure): {nodeid}")


@pytest.fixture(autouse=True)
def _collector_unfrozen() -> Iterator[None]:
    """Commands run in-process (check, run, demo) freeze what they load out of the cycle
    collector and tune its thresholds, as they should in their own process; here the next
    test gets it back as it was."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
