"""Simulator tests: the small test plant (the ``simulator`` fixture comes from tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import load_plant
from core.plant import Plant

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def plant() -> Plant:
    return load_plant(DATA / "plant.yaml")
