"""Fixtures of the hazardwatch (composition root) tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from storage.db import Backend
from tests.support.databases import create_scratch_db, drop_scratch_db


@pytest.fixture
def dsn() -> Iterator[str]:
    """A scratch PostgreSQL database, dropped after the test."""
    url = create_scratch_db(Backend.POSTGRES)
    yield url
    drop_scratch_db(Backend.POSTGRES, url)
