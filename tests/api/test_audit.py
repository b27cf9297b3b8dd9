"""GET /api/v1/audit: admins read who did what from where; nobody else can."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import login


async def test_admin_reads_the_audit_log_newest_first_with_filters(client: httpx.AsyncClient) -> None:
    await client.post("/api/v1/auth/token", data={"username": "op_aa", "password": "wrong password"})
    headers = await login(client, "admin")
    rows = (await client.get("/api/v1/audit", headers=headers)).json()
    assert [(r["action"], r["actor"], r["role"], r["address"]) for r in rows] == [
        ("login", "系统管理员 (admin)", "admin", "127.0.0.1"),
        ("login refused", "op_aa", None, "127.0.0.1"),
    ]
    refused = (await client.get("/api/v1/audit", params={"action": "login refused"}, headers=headers)).json()
    assert [r["target"] for r in refused] == ["user:op_aa"]
    page = (await client.get("/api/v1/audit", params={"before_id": rows[0]["id"]}, headers=headers)).json()
    assert [r["id"] for r in page] == [rows[1]["id"]]


@pytest.mark.parametrize("user", ["op_aa", "admin_aa", "bureau_city", "eng_aa", "approver_aa"])
async def test_only_admins_read_the_audit_log(client: httpx.AsyncClient, user: str) -> None:
    r = await client.get("/api/v1/audit", headers=await login(client, user))
    assert r.status_code == 403


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"start": "2026-11-30T10:00:00"}, "start"),  # no offset: ambiguous
        ({"start": "2026-11-30T10:00:00Z", "end": "2026-11-30T09:00:00Z"}, "end"),
        ({"limit": "0"}, "limit"),
        ({"limit": "abc"}, "limit"),
    ],
)
async def test_bad_filters_are_422_naming_the_field(
    client: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    r = await client.get("/api/v1/audit", params=params, headers=await login(client, "admin"))
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", field]
