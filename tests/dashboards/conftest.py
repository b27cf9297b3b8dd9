"""The filled historians the board-query tests run against (tests/support/grafana_plant.py)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future

import pytest

from storage.db import Backend
from tests.support.databases import drop_scratch_db
from tests.support.grafana_plant import Filled, start_filling


@pytest.fixture(scope="session")
def _filling(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[Backend, Future[Filled]]]:
    futures = start_filling(tmp_path_factory.mktemp("grafana"))
    try:
        yield futures
    finally:
        for backend, f in futures.items():
            if f.exception(timeout=600) is None:
                drop_scratch_db(backend, f.result().dsn)


@pytest.fixture(
    scope="session", params=[Backend.POSTGRES, Backend.TIMESCALEDB], ids=["postgres", "timescaledb"]
)
def filled(request: pytest.FixtureRequest, _filling: dict[Backend, Future[Filled]]) -> Filled:
    return _filling[request.param].result(timeout=600)
