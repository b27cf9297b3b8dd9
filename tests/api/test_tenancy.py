"""Tenancy on every endpoint, enumerated from the OpenAPI document (issue 13 acceptance): a new
route fails here until it is classified.

Enterprise AA's operator (op_aa) and the 孝义市 county bureau user (bureau_xy, AA's county) try
enterprise BB's ids (文水县) on every route and every id-taking query parameter. What they get must
be exactly what a never-existing id gets (status and body, the id swapped): 404 for a path id, the
same answer for a filter. Lists, counts, CSV and KPIs they read without filters must not contain
anything of BB. Positive controls: the admin sees BB's rows on the same lists, so the absence is
not an accident of empty data.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest

from api.app import ApiConfig, create_app
from core.config import load_plant
from core.plant import Plant
from core.settings import ApiSettings
from storage.db import Backend
from storage.partitions import ensure_partitions
from storage.registry_sync import sync_registry
from tests.support.api_engine import running_engine
from tests.support.api_users import PASSWORD, add_users
from tests.support.databases import migrated_db

PLANT = Path(__file__).resolve().parent / "data" / "interlock_plant.yaml"
SECRET = b"tenancy-secret-tenancy-secret-tenancy-01"
NOW = datetime.now(UTC).replace(microsecond=0)

# What another enterprise's rows look like in any answer (codes, names, county, keys).
BB_MARKERS = ("BB-HS1", "BB.G1", "乙钢铁", "文水县", "高炉煤气柜", "IL-501")
AA_ALARMS = ("AA.V1.PT1A:BAD_QUALITY", "AA-HS1.IL-101:TRIP_DEMAND")
BB_ALARMS = ("BB.G1.PT1:BAD_QUALITY", "BB-HS1.IL-501:TRIP_DEMAND")

# Path and query parameters that name something of an enterprise: BB's value, and one that never
# existed. A route with a parameter missing here fails the test (classify it).
UNKNOWN = {
    "enterprise": "ZZ",
    "hazard_source": "ZZ-HS9",
    "tag": "ZZ.Q9.PT9",
    "tags": "ZZ.Q9.PT9",
    "alarm": "ZZ.Q9.PT9:BAD_QUALITY",
    "interlock": "ZZ-HS9.IL-999",
    "bypass_id": "00000000-0000-4000-8000-000000000000",
    "command_id": "00000000-0000-4000-8000-000000000001",
}
# Path parameters that are not ids (a fixed, valid value)
FIXED = {"action": "comment"}
# Query parameters some routes require that are not ids
REQUIRED = {
    "start": (NOW - timedelta(hours=2)).isoformat(),
    "end": (NOW + timedelta(minutes=1)).isoformat(),
}
# Bodies for the routes that take one (method, path template) -> body with "{interlock}" etc.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/v1/alarms/{alarm}/{action}"): {"text": "现场已确认"},
    ("POST", "/api/v1/bypasses"): {
        "interlock": "{interlock}", "reason": "变送器校验", "compensating_measures": "现场专人监护",
        "duration_min": 60,
    },
    ("POST", "/api/v1/bypasses/{bypass_id}/approve"): {"note": "同意"},
    ("POST", "/api/v1/bypasses/{bypass_id}/reject"): {"note": "不同意"},
    ("POST", "/api/v1/bypasses/{bypass_id}/restore"): {"note": "已恢复"},
}  # fmt: skip
# Not per enterprise: no tenancy to test (each says why)
PUBLIC = {
    ("GET", "/healthz"): "liveness, no data",
    ("GET", "/readyz"): "readiness, no data",
    ("POST", "/api/v1/auth/token"): "logging in",
    ("POST", "/api/v1/auth/refresh"): "a token's own user",
    ("GET", "/api/v1/auth/me"): "the caller only",
}
# Endless responses, tested for tenancy in their own module (the named test must exist)
STREAMS = {
    ("GET", "/api/v1/stream"): (
        "tests/api/test_stream.py",
        "test_alarm_events_reach_exactly_the_callers_scope",
    )
}
# Lists whose admin answer need not contain BB (why)
NO_BB_ROWS: dict[str, str] = {}
USERS = ("op_aa", "bureau_xy")


@pytest.fixture(scope="module")
def plant() -> Plant:
    return load_plant(PLANT)


@pytest.fixture(scope="module")
def dsn() -> AsyncIterator[str]:
    with migrated_db(Backend.POSTGRES) as url:
        yield url


async def _seed(dsn: str, plant: Plant, log_dir: Path) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await sync_registry(conn, plant, now_us=1_700_000_000_000_000)
        await add_users(conn)
        ids = dict(await (await conn.execute("SELECT key, id FROM tag")).fetchall())
        today = int(NOW.timestamp()) // 86_400
        await ensure_partitions(conn, [today - 1, today, today + 1])
        for key in ("AA.V1.PT1A", "BB.G1.PT1"):
            for minutes in range(60):
                bucket = NOW - timedelta(minutes=60 - minutes)
                await conn.execute(
                    """INSERT INTO reading_1m (tag_id, bucket, min, max, sum, count, bad_count, last_time,
                                              last_value, last_quality)
                       VALUES (%s, %s, 1, 2, 90, 60, 0, %s, 1.5, 192)""",
                    (ids[key], bucket, bucket + timedelta(seconds=59)),
                )
            await conn.execute("INSERT INTO tag_latest VALUES (%s, %s, 1.5, 192)", (ids[key], NOW))
    async with running_engine(plant, dsn, log_dir) as engine:
        await engine.raise_(*AA_ALARMS, *BB_ALARMS)


@pytest.fixture
async def client(dsn: str, plant: Plant, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    await _seed(dsn, plant, tmp_path)
    app = create_app(ApiConfig(dsn, SECRET, ApiSettings(command_wait_s=0), plant))
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c,
        app.router.lifespan_context(app),
    ):
        yield c


async def _headers(client: httpx.AsyncClient, user: str) -> dict[str, str]:
    r = await client.post("/api/v1/auth/token", data={"username": user, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def _foreign_ids(client: httpx.AsyncClient) -> dict[str, str]:
    """BB's ids, made through the API by BB's own people (a bypass permit, a command)."""
    admin = await _headers(client, "admin")
    r = await client.post(
        "/api/v1/bypasses",
        json={
            "interlock": "BB-HS1.IL-501",
            "reason": "变送器校验",
            "compensating_measures": "现场专人监护",
            "duration_min": 60,
        },
        headers=admin,
    )
    assert r.status_code in (200, 201), r.text
    bypass = r.json()["id"]
    r = await client.post(
        f"/api/v1/alarms/{BB_ALARMS[0]}/comment",
        json={"text": "乙钢铁值班"},
        headers=await _headers(client, "op_bb"),
    )
    assert r.status_code in (200, 202), r.text
    command = r.json()["command_id"]
    UUID(bypass), UUID(command)
    return {
        "enterprise": "BB",
        "hazard_source": "BB-HS1",
        "tag": "BB.G1.PT1",
        "tags": "BB.G1.PT1",
        "alarm": BB_ALARMS[0],
        "interlock": "BB-HS1.IL-501",
        "bypass_id": bypass,
        "command_id": command,
    }


def _fill(template: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)


def _body(key: tuple[str, str], values: dict[str, str]) -> dict[str, Any] | None:
    body = BODIES.get(key)
    if body is None:
        return None
    return {k: _fill(v, values) if isinstance(v, str) else v for k, v in body.items()}


async def _call(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    params: dict[str, str],
    body: Any,
    headers: dict[str, str],
) -> httpx.Response:
    return await client.request(method, url, params=params, json=body, headers=headers)


def _same(a: httpx.Response, b: httpx.Response, swap: tuple[str, str]) -> bool:
    return a.status_code == b.status_code and a.text.replace(swap[0], swap[1]) == b.text


async def test_no_route_tells_another_enterprise_exists(client: httpx.AsyncClient) -> None:
    foreign = await _foreign_ids(client)
    schema = (await client.get("/openapi.json")).json()
    admin = await _headers(client, "admin")
    users = {u: await _headers(client, u) for u in USERS}
    problems: list[str] = []
    for path, item in schema["paths"].items():
        for method, op in item.items():
            method = method.upper()
            key = (method, path)
            if key in PUBLIC:
                continue
            if key in STREAMS:
                module, name = STREAMS[key]
                source = (Path(__file__).resolve().parents[2] / module).read_text(encoding="utf-8")
                if f"def {name}(" not in source:
                    problems.append(f"{method} {path}: its tenancy test {module}::{name} is gone")
                continue
            params = op.get("parameters", [])
            path_ids = [p["name"] for p in params if p["in"] == "path" and p["name"] not in FIXED]
            query_ids = [p["name"] for p in params if p["in"] == "query" and p["name"] in UNKNOWN]
            required = {
                p["name"]: REQUIRED[p["name"]]
                for p in params
                if p["in"] == "query" and p.get("required") and p["name"] in REQUIRED
            }
            unknown_names = [n for n in path_ids if n not in UNKNOWN]
            if unknown_names:
                problems.append(
                    f"{method} {path}: no foreign value for {unknown_names} (classify it in this test)"
                )
                continue
            if "requestBody" in op and key not in BODIES:
                problems.append(f"{method} {path}: takes a body; add one to BODIES")
                continue
            body_ids = re.findall(r"\{(\w+)\}", str(BODIES.get(key, "")))
            for user, headers in users.items():
                base = {**FIXED}
                # each id-taking place in turn: BB's id against a never-existing one
                for name in {*path_ids, *query_ids, *body_ids}:
                    theirs = {**base, **{n: foreign[n] for n in UNKNOWN}, name: foreign[name]}
                    nobody = {**base, **{n: foreign[n] for n in UNKNOWN}, name: UNKNOWN[name]}
                    # other id places get values the caller may see: AA's
                    for n in (*path_ids, *query_ids, *body_ids):
                        if n != name:
                            theirs[n] = nobody[n] = UNKNOWN[n]
                    q_theirs = {**required, **{n: theirs[n] for n in query_ids if n == name}}
                    q_nobody = {**required, **{n: nobody[n] for n in query_ids if n == name}}
                    a = await _call(
                        client, method, _fill(path, theirs), q_theirs, _body(key, theirs), headers
                    )
                    b = await _call(
                        client, method, _fill(path, nobody), q_nobody, _body(key, nobody), headers
                    )
                    if not _same(a, b, (foreign[name], UNKNOWN[name])):
                        problems.append(
                            f"{method} {path} as {user}, BB's {name}: {a.status_code} {a.text[:200]!r} "
                            f"but a never-existing one: {b.status_code} {b.text[:200]!r}"
                        )
                    if path_ids and a.status_code != 404:
                        problems.append(f"{method} {path} as {user}, BB's {name}: {a.status_code}, not 404")
                if not path_ids and method == "GET":
                    r = await _call(client, method, path, required, None, headers)
                    seen = [m for m in BB_MARKERS if m in r.text]
                    if seen:
                        problems.append(f"{method} {path} as {user}: shows {seen}: {r.text[:300]!r}")
                    csv = await _call(client, method, path, {**required, "format": "csv"}, None, headers)
                    if csv.status_code == 200 and any(m in csv.text for m in BB_MARKERS):
                        problems.append(f"{method} {path}?format=csv as {user} shows BB")
            if not path_ids and method == "GET" and path not in NO_BB_ROWS:
                control = await _call(
                    client,
                    method,
                    path,
                    {**required, **({"tags": foreign["tags"]} if "tags" in query_ids else {})},
                    None,
                    admin,
                )
                if control.status_code == 200 and not any(m in control.text for m in BB_MARKERS):
                    problems.append(
                        f"{method} {path}: the admin sees nothing of BB either (no positive control; "
                        f"seed data or add to NO_BB_ROWS with the reason): {control.text[:200]!r}"
                    )
    assert not problems, "\n".join(problems)
