"""Logging in, tokens, API keys, lockout, the login rate limit, and what /me tells the console
(Grafana's address), against real PostgreSQL."""

from __future__ import annotations

import asyncio

import httpx
import psycopg
import pytest
from pydantic import ValidationError

from api.app import ApiConfig, create_app
from api.users import create_key, revoke_key, set_disabled, set_password
from core.plant import Plant
from core.settings import ApiSettings, GrafanaSettings
from tests.api.conftest import PASSWORD, SECRET, login, make_client
from tests.support.databases import fetch_all


async def test_password_login_gives_tokens_that_identify_the_user(client: httpx.AsyncClient) -> None:
    headers = await login(client, "op_aa")
    me = (await client.get("/api/v1/auth/me", headers=headers)).json()
    assert me == {"username": "op_aa", "display_name": "张伟", "role": "enterprise_operator",
                  "enterprise": "AA", "county": None, "via": "token", "grafana_url": ""}  # fmt: skip


@pytest.mark.parametrize(
    ("configured", "told"),
    [
        ("http://grafana.example:3000", "http://grafana.example:3000"),
        ("https://ops.example/grafana/", "https://ops.example/grafana"),  # the console appends /d/...
        ("", ""),  # no Grafana: the console shows no links to it
    ],
    ids=["grafana", "trailing-slash", "none"],
)
async def test_me_tells_the_console_where_grafana_is_and_only_a_known_caller(
    seeded: str, plant: Plant, configured: str, told: str
) -> None:
    settings = GrafanaSettings(url=configured)  # as settings.grafana holds it (validated)
    app = create_app(ApiConfig(seeded, SECRET, ApiSettings(), plant, grafana_url=settings.url))
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c,
        app.router.lifespan_context(app),
    ):
        for username in ("op_aa", "bureau_city"):
            me = (await c.get("/api/v1/auth/me", headers=await login(c, username))).json()
            assert me["grafana_url"] == told
        async with await psycopg.AsyncConnection.connect(seeded, autocommit=True) as conn:
            issued = await create_key(conn, "bureau_city", "wall display")
        me = (await c.get("/api/v1/auth/me", headers={"X-API-Key": issued.key})).json()
        assert me["grafana_url"] == told
        anonymous = await c.get("/api/v1/auth/me")
        assert anonymous.status_code == 401
        assert "grafana" not in anonymous.text.lower()
        schema = (await c.get("/openapi.json")).json()["components"]["schemas"]["Me"]
        assert "grafana_url" in schema["required"]


@pytest.mark.parametrize("url", ["javascript:alert(1)", "grafana.example:3000", "ftp://grafana.example/"])
def test_a_grafana_url_the_console_could_not_link_to_is_refused(url: str) -> None:
    # it ends up in an href: only http(s) addresses get that far
    with pytest.raises(ValidationError, match="url"):
        GrafanaSettings(url=url)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nonsense"},
        {"Authorization": "Basic b3BfYWE6eA=="},
        {"X-API-Key": "hwk_x"},
    ],
    ids=["none", "garbage", "basic", "bad-key"],
)
async def test_requests_without_valid_credentials_are_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    r = await client.get("/api/v1/auth/me", headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"


async def test_a_refresh_token_is_not_an_access_token_and_refresh_works(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/auth/token", data={"username": "op_aa", "password": PASSWORD})
    tokens = r.json()
    assert (
        await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['refresh_token']}"})
    ).status_code == 401
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 200
    assert (
        await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"})
    ).status_code == 200
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["access_token"]})
    assert r.status_code == 401


async def test_a_password_change_or_disable_ends_existing_sessions(
    client: httpx.AsyncClient, seeded: str
) -> None:
    headers = await login(client, "op_aa")
    async with await psycopg.AsyncConnection.connect(seeded, autocommit=True) as conn:
        await set_password(conn, "op_aa", "another long password")
    assert (await client.get("/api/v1/auth/me", headers=headers)).status_code == 401
    headers = await login(client, "op_aa", "another long password")
    async with await psycopg.AsyncConnection.connect(seeded, autocommit=True) as conn:
        await set_disabled(conn, "op_aa", True)
    assert (await client.get("/api/v1/auth/me", headers=headers)).status_code == 401
    r = await client.post(
        "/api/v1/auth/token", data={"username": "op_aa", "password": "another long password"}
    )
    assert r.status_code == 401


async def test_api_keys_authenticate_until_revoked(client: httpx.AsyncClient, seeded: str) -> None:
    async with await psycopg.AsyncConnection.connect(seeded, autocommit=True) as conn:
        issued = await create_key(conn, "bureau_city", "SCADA bridge")
    for headers in ({"X-API-Key": issued.key}, {"Authorization": f"Bearer {issued.key}"}):
        me = (await client.get("/api/v1/auth/me", headers=headers)).json()
        assert (me["username"], me["via"]) == ("bureau_city", f"key:{issued.prefix}")
    wrong = issued.key[:-4] + ("AAAA" if not issued.key.endswith("AAAA") else "BBBB")
    assert (await client.get("/api/v1/auth/me", headers={"X-API-Key": wrong})).status_code == 401
    async with await psycopg.AsyncConnection.connect(seeded, autocommit=True) as conn:
        await revoke_key(conn, issued.prefix)
    assert (await client.get("/api/v1/auth/me", headers={"X-API-Key": issued.key})).status_code == 401


async def test_repeated_failures_lock_the_account_and_are_journaled(seeded: str, plant: Plant) -> None:
    settings = ApiSettings(login_max_failures=3, lockout_min=5)
    async with make_client(seeded, plant, settings) as c:
        app = c._transport.app  # type: ignore[attr-defined]
        async with app.router.lifespan_context(app):
            for _ in range(3):
                r = await c.post(
                    "/api/v1/auth/token", data={"username": "op_aa", "password": "wrong password"}
                )
                assert r.status_code == 401
            # locked: even the right password is refused, with the same answer
            r = await c.post("/api/v1/auth/token", data={"username": "op_aa", "password": PASSWORD})
            assert (r.status_code, r.json()) == (401, {"detail": "wrong username or password"})
            r = await c.post("/api/v1/auth/token", data={"username": "nobody", "password": PASSWORD})
            assert (r.status_code, r.json()) == (401, {"detail": "wrong username or password"})
    rows = await fetch_all(
        seeded, "SELECT action, actor, detail->>'reason', address FROM audit_log ORDER BY id"
    )
    assert rows == [
        ("login refused", "op_aa", "wrong password", "127.0.0.1"),
        ("login refused", "op_aa", "wrong password", "127.0.0.1"),
        ("login refused", "op_aa", "wrong password", "127.0.0.1"),
        ("account locked", "op_aa", None, "127.0.0.1"),
        ("login refused", "op_aa", "locked", "127.0.0.1"),
        ("login refused", "nobody", "unknown user", "127.0.0.1"),
    ]


async def test_concurrent_failures_are_each_counted_and_lock_once(seeded: str, plant: Plant) -> None:
    """Hashes are verified concurrently, off the event loop and without a row lock: the count
    must still see every failure (read-modify-write of the count would lose some)."""
    settings = ApiSettings(login_max_failures=4, lockout_min=5, login_per_min=100)
    async with make_client(seeded, plant, settings) as c:
        app = c._transport.app  # type: ignore[attr-defined]
        async with app.router.lifespan_context(app):
            wrong = {"username": "op_aa", "password": "wrong password"}
            answers = await asyncio.gather(*(c.post("/api/v1/auth/token", data=wrong) for _ in range(4)))
            assert [r.status_code for r in answers] == [401] * 4
            r = await c.post("/api/v1/auth/token", data={"username": "op_aa", "password": PASSWORD})
            assert r.status_code == 401
    rows = await fetch_all(seeded, "SELECT action, detail->>'reason' FROM audit_log ORDER BY id")
    assert sorted(rows, key=str) == sorted(
        [("login refused", "wrong password")] * 4 + [("account locked", None), ("login refused", "locked")],
        key=str,
    )


async def test_logins_from_one_address_are_rate_limited(seeded: str, plant: Plant) -> None:
    async with make_client(seeded, plant, ApiSettings(login_per_min=2)) as c:
        app = c._transport.app  # type: ignore[attr-defined]
        async with app.router.lifespan_context(app):
            for _ in range(2):
                assert (
                    await c.post("/api/v1/auth/token", data={"username": "op_aa", "password": PASSWORD})
                ).status_code == 200
            r = await c.post("/api/v1/auth/token", data={"username": "op_aa", "password": PASSWORD})
            assert r.status_code == 429
            assert int(r.headers["retry-after"]) >= 1


async def test_health_readiness_and_security_headers(client: httpx.AsyncClient, seeded: str) -> None:
    r = await client.get("/healthz")
    assert r.json() == {"status": "ok"}
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    r = await client.get("/readyz")
    assert (r.status_code, r.json()["engine"]) == (503, "none")
    async with await psycopg.AsyncConnection.connect(seeded, autocommit=True) as conn:
        await conn.execute("INSERT INTO engine_heartbeat VALUES ('site', now(), now(), 'h', 1)")
    r = await client.get("/readyz")
    assert (r.status_code, r.json()["status"]) == (200, "ready")
    assert "hazardwatch_api_requests" in (await client.get("/metrics/")).text


async def test_oversized_and_malformed_bodies_are_rejected_cleanly(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/auth/refresh", content=b"{" * 70_000, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    r = await client.post(
        "/api/v1/auth/refresh", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert "Traceback" not in r.text
    r = await client.post("/api/v1/auth/refresh", json={})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "refresh_token"]


async def test_a_pool_with_no_free_connection_answers_503_not_500(seeded: str, plant: Plant) -> None:
    async with make_client(seeded, plant, ApiSettings(pool_size=1)) as c:
        app = c._transport.app  # type: ignore[attr-defined]
        async with app.router.lifespan_context(app):
            pool = app.state.hw.pool
            pool.timeout = 0.2  # the wait for a free connection (10 s in production)
            async with pool.connection():  # the only one, held
                r = await c.get("/api/v1/auth/me", headers={"Authorization": "Bearer x"})
            assert (r.status_code, r.json(), r.headers["retry-after"]) == (
                503,
                {"detail": "database busy"},
                "2",
            )
