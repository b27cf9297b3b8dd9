"""Simulator tests: the ``simulator`` factory fixture and the small test plant."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import load_plant
from core.plant import Plant
from simulators.fixtures import simulator  # noqa: F401  (the fixture, re-exported)

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def plant() -> Plant:
    return load_plant(DATA / "plant.yaml")
