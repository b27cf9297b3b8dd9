"""The filled historians the board-query tests run against (tests/support/grafana_plant.py).

Filling takes about a minute, mostly waiting for `hazardwatch demo` processes, so it starts as
soon as collection has finished (when those tests are selected) and runs beside the rest of the
suite; the tests wait for it only if they get there first.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from storage.db import Backend
from tests.support.databases import drop_scratch_db
from tests.support.grafana_plant import Filled, start_filling

_started: dict[Backend, Future[Filled]] = {}
_workdir: list[Path] = []


def _start() -> None:
    _workdir.append(Path(tempfile.mkdtemp(prefix="hw-grafana-fill-")))
    _started.update(start_filling(_workdir[0]))


def pytest_collection_finish(session: pytest.Session) -> None:
    if any("tests/dashboards/test_board_queries.py" in item.nodeid for item in session.items):
        _start()


@pytest.fixture(scope="session")
def _filling() -> Iterator[dict[Backend, Future[Filled]]]:
    if not _started:  # collected some other way
        _start()
    try:
        yield _started
    finally:
        for backend, f in _started.items():
            if f.exception(timeout=600) is None:
                drop_scratch_db(backend, f.result().dsn)
        shutil.rmtree(_workdir[0], ignore_errors=True)


@pytest.fixture(
    scope="session", params=[Backend.POSTGRES, Backend.TIMESCALEDB], ids=["postgres", "timescaledb"]
)
def filled(request: pytest.FixtureRequest, _filling: dict[Backend, Future[Filled]]) -> Filled:
    return _filling[request.param].result(timeout=600)
