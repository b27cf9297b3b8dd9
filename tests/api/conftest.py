"""API tests: a migrated scratch database holding the two-enterprise test plant, one user per
role (and one per enterprise for tenancy), and an httpx client on the app (lifespan run)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from api.app import ApiConfig, create_app
from core.config import load_plant
from core.plant import Plant
from core.settings import ApiSettings
from storage.db import Backend
from storage.registry_sync import sync_registry
from tests.support.api_users import PASSWORD, USERS, add_users
from tests.support.databases import migrated_db

PLANT = Path(__file__).resolve().parents[1] / "core" / "data" / "two_enterprises.yaml"
SECRET = b"test-secret-test-secret-test-secret-0123"


@pytest.fixture(scope="session")
def plant() -> Plant:
    return load_plant(PLANT)


@pytest.fixture(params=[Backend.POSTGRES], ids=str)
def backend(request: pytest.FixtureRequest) -> Backend:
    return Backend(request.param)


@pytest.fixture
def dsn(backend: Backend) -> Iterator[str]:
    with migrated_db(backend) as url:
        yield url


@pytest.fixture
async def seeded(dsn: str, plant: Plant) -> str:
    """``dsn`` with the plant's registry and the users of tests.support.api_users."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await sync_registry(conn, plant, now_us=1_700_000_000_000_000)
        await add_users(conn)
    return dsn


def make_client(dsn: str, plant: Plant | None, settings: ApiSettings | None = None) -> httpx.AsyncClient:
    app = create_app(ApiConfig(dsn, SECRET, settings or ApiSettings(), plant))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def client(seeded: str, plant: Plant) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(seeded, plant) as c:
        app = c._transport.app  # type: ignore[attr-defined]
        async with app.router.lifespan_context(app):
            yield c


async def login(client: httpx.AsyncClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    """Authorization headers for ``username`` (asserting the login worked)."""
    r = await client.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


__all__ = ["PASSWORD", "USERS", "login", "make_client"]
