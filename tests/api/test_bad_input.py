"""Hostile input answered 4xx, never 500 (review F1, F7-F9): lone UTF-16 surrogates in JSON,
NUL in a login name or an audit filter, numbers and times out of any range, a non-numeric
Content-Length, blank enterprise/county bindings; and the docs pages' own CSP."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from alarms.kpi import alarm_kpis
from api.users import UserError, add_user
from core.errors import StorageError
from core.plant import Plant
from storage.db import Backend
from storage.migrate import upgrade
from tests.api.conftest import login
from tests.support.api_engine import AA_GAS, AA_HH, BB_GAS, running_engine
from tests.support.databases import create_scratch_db, drop_scratch_db, fetch_all

NOT_UNICODE = {
    "detail": [
        {"loc": ["body"], "msg": "text must be valid Unicode (no lone surrogates)", "type": "value_error"}
    ]
}
JSON = {"content-type": "application/json"}
BYPASS = (
    '{"interlock": "AA-HS1.IL-101", "input_tag": "AA.V1.PT1A", "reason": %s,'
    ' "compensating_measures": "现场专人监护", "duration_min": 60}'
)


# --- lone surrogates (F7) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (rb'{"refresh_token": "\ud800"}', JSON),
        (rb'{"refresh_token": "ok\udfffok"}', JSON),
        (rb'{"\ud800": 1}', JSON),  # a key: it crashed rendering the 422 itself
        (rb'{"refresh_token": "x", "a": [{"b": ["\uDC00"]}]}', JSON),  # nested, upper-case hex
        (rb'{"refresh_token": "\ude00\ud83d"}', JSON),  # a pair in the wrong order
        (rb'{"refresh_token": "\ud800"}', {}),  # no content type: FastAPI reads JSON anyway
        (rb'{"refresh_token": "\ud800"}', {"content-type": "application/json; charset=utf-8"}),
    ],
    ids=["value", "inside", "key", "nested", "reversed", "no-type", "charset"],
)
async def test_a_lone_surrogate_anywhere_in_json_is_422_unauthenticated(
    client: httpx.AsyncClient, body: bytes, headers: dict[str, str]
) -> None:
    r = await client.post("/api/v1/auth/refresh", content=body, headers=headers)
    assert (r.status_code, r.json()) == (422, NOT_UNICODE)
    assert r.headers["x-content-type-options"] == "nosniff"  # still answered by the hardening


@pytest.mark.parametrize(
    "token",
    [rb"\ud83d\ude00", rb"\\ud800", "长".encode()],
    ids=["pair", "escaped-backslash", "chinese"],
)
async def test_valid_unicode_and_look_alikes_reach_the_app(client: httpx.AsyncClient, token: bytes) -> None:
    r = await client.post("/api/v1/auth/refresh", content=b'{"refresh_token": "%s"}' % token, headers=JSON)
    assert (r.status_code, r.json()) == (401, {"detail": "invalid or expired refresh token"})


NOT_FINITE = {
    "detail": [
        {"loc": ["body"], "msg": "numbers must be finite (no NaN, Infinity or 1e400)", "type": "value_error"}
    ]
}


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"[1, -1e999]"])
async def test_non_finite_numbers_are_422_not_an_unrenderable_answer(
    client: httpx.AsyncClient, number: bytes
) -> None:
    """Python's json accepts them; echoing one back in FastAPI's 422 crashed the answer."""
    r = await client.post("/api/v1/auth/refresh", content=b'{"refresh_token": %s}' % number, headers=JSON)
    assert (r.status_code, r.json()) == (422, NOT_FINITE)


async def test_surrogates_in_comments_and_bypasses_are_422_and_nothing_is_written(
    client: httpx.AsyncClient, seeded: str
) -> None:
    op = await login(client, "op_aa")
    r = await client.post(
        f"/api/v1/alarms/{AA_HH}/comment", content=rb'{"text": "\ud800"}', headers={**op, **JSON}
    )
    assert (r.status_code, r.json()) == (422, NOT_UNICODE)
    eng = await login(client, "eng_aa")
    for body in (BYPASS % r'"\udbff"', BYPASS.replace("AA-HS1.IL-101", r"AA-HS1.IL-101\ud800") % '"x"'):
        r = await client.post("/api/v1/bypasses", content=body.encode(), headers={**eng, **JSON})
        assert (r.status_code, r.json()) == (422, NOT_UNICODE), body
    assert await fetch_all(seeded, "SELECT count(*) FROM alarm_command") == [(0,)]
    assert await fetch_all(seeded, "SELECT count(*) FROM interlock_bypass") == [(0,)]


async def test_a_json_body_is_replayed_to_the_app_intact(client: httpx.AsyncClient) -> None:
    """The middleware buffers JSON bodies: what it read must reach the app byte for byte."""
    r = await client.post(
        "/api/v1/auth/token", data={"username": "op_aa", "password": "correct horse battery"}
    )
    refresh = r.json()["refresh_token"]
    body = b'{"refresh_token": "%s", "note": "\\u957f \\ud83d\\ude00"}' % refresh.encode()
    r = await client.post("/api/v1/auth/refresh", content=body, headers=JSON)
    assert r.status_code == 200, r.text


# --- Content-Length ---------------------------------------------------------------------------


async def raw(
    client: httpx.AsyncClient, headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[int, bytes]:
    """POST /api/v1/auth/refresh straight through ASGI, headers as given (httpx would fix them)."""
    app = client._transport.app  # type: ignore[attr-defined]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/api/v1/auth/refresh", "raw_path": b"/api/v1/auth/refresh",
        "query_string": b"", "root_path": "", "headers": headers, "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }  # fmt: skip
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def test_a_non_numeric_content_length_is_400_not_413(client: httpx.AsyncClient) -> None:
    for length in (b"abc", b"-1", b"1e3", b""):
        status, body = await raw(
            client, [(b"content-type", b"application/json"), (b"content-length", length)], b"{}"
        )
        assert (status, body) == (400, b'{"detail":"Content-Length must be a number of bytes"}'), length
    status, _ = await raw(client, [(b"content-length", b"99999999")], b"{}")
    assert status == 413
    status, _ = await raw(client, [(b"content-type", b"application/json"), (b"content-length", b"2")], b"{}")
    assert status == 422  # counted, parsed, and the app's own validation answered


# --- NUL (F8) ---------------------------------------------------------------------------------


async def test_nul_in_a_login_name_is_an_unknown_user_audited_without_it(
    client: httpx.AsyncClient, seeded: str
) -> None:
    r = await client.post("/api/v1/auth/token", data={"username": "op\x00_aa", "password": "whatever it is"})
    assert (r.status_code, r.json()) == (401, {"detail": "wrong username or password"})
    rows = await fetch_all(seeded, "SELECT action, actor, target, detail->>'reason' FROM audit_log")
    assert rows == [("login refused", "op_aa", "user:op_aa", "unknown user")]
    # and it did not count against op_aa
    assert await fetch_all(seeded, "SELECT failed_logins FROM app_user WHERE username = 'op_aa'") == [(0,)]


@pytest.mark.parametrize("field", ["actor", "action"])
async def test_nul_in_an_audit_filter_is_422_naming_it(client: httpx.AsyncClient, field: str) -> None:
    r = await client.get("/api/v1/audit", params={field: "a\x00b"}, headers=await login(client, "admin"))
    assert r.status_code == 422, r.text
    assert [e["loc"] for e in r.json()["detail"]] == [["query", field]]


# --- numbers and times out of range (F9) ------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "action", "body", "field"),
    [
        ("op_aa", "shelve", b'{"minutes": 1%s, "reason": "x"}' % (b"0" * 400), "minutes"),
        ("op_aa", "shelve", b'{"minutes": -1%s, "reason": "x"}' % (b"0" * 400), "minutes"),
        (
            "op_aa",
            "feedback",
            b'{"cause_category": "leak", "action": "x", "handler": "y", "handled_at": "0001-01-01T00:00:00+05:00"}',
            "handled_at",
        ),
        ("bureau_xy", "supervise", b'{"text": "x", "due_at": "9999-12-31T23:00:00-05:00"}', "due_at"),
    ],
    ids=["huge-minutes", "huge-negative", "handled_at-year-0", "due_at-year-10000"],
)
async def test_out_of_range_command_arguments_are_422_naming_the_field(
    client: httpx.AsyncClient, seeded: str, user: str, action: str, body: bytes, field: str
) -> None:
    r = await client.post(
        f"/api/v1/alarms/{AA_HH}/{action}", content=body, headers={**await login(client, user), **JSON}
    )
    assert r.status_code == 422, r.text
    assert [e["loc"] for e in r.json()["detail"]] == [["body", field]]
    assert await fetch_all(seeded, "SELECT count(*) FROM alarm_command") == [(0,)]


# --- blank bindings (F1) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "binding", "field"),
    [
        ("engineer", {"enterprise": ""}, "enterprise"),
        ("approver", {"enterprise": "  "}, "enterprise"),
        ("enterprise_operator", {"enterprise": ""}, "enterprise"),
        ("bureau_duty", {"county": ""}, "county"),
        ("bureau_duty", {"county": " "}, "county"),
    ],
)
async def test_a_blank_enterprise_or_county_is_refused(
    seeded: str, role: str, binding: dict[str, str], field: str
) -> None:
    async with await psycopg.AsyncConnection.connect(seeded, autocommit=True) as conn:
        with pytest.raises(UserError, match=f"^{field}: "):
            await add_user(conn, "blank", "空白", role, None, **binding)


@pytest.mark.parametrize(
    ("role", "enterprise", "county"),
    [("engineer", "", None), ("approver", "", None), ("bureau_duty", None, "")],
)
async def test_the_table_refuses_blank_bindings_whatever_writes(
    seeded: str, role: str, enterprise: str | None, county: str | None
) -> None:
    async with await psycopg.AsyncConnection.connect(seeded, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.CheckViolation, match="not_blank"):
            await conn.execute(
                "INSERT INTO app_user (username, display_name, role, enterprise, county) VALUES ('b', 'b', %s, %s, %s)",
                (role, enterprise, county),
            )


async def test_alarm_kpis_read_a_blank_filter_as_matching_nothing(
    seeded: str, plant: Plant, tmp_path: Path
) -> None:
    start = datetime.now(UTC) - timedelta(minutes=1)
    async with running_engine(plant, seeded, tmp_path) as engine:
        await engine.raise_(AA_HH, AA_GAS, BB_GAS)
    end = datetime.now(UTC) + timedelta(minutes=1)
    async with await psycopg.AsyncConnection.connect(seeded, autocommit=True) as conn:
        assert (await alarm_kpis(conn, start=start, end=end)).annunciations == 3
        assert (await alarm_kpis(conn, start=start, end=end, enterprise="AA")).annunciations == 2
        for blank in ({"enterprise": ""}, {"county": ""}, {"hazard_source": ""}, {"unit": ""}):
            assert (await alarm_kpis(conn, start=start, end=end, **blank)).annunciations == 0, blank


# --- the docs pages' CSP ----------------------------------------------------------------------


def inline_hashes(page: str) -> set[str]:
    return {
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in re.findall(r"<script(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script>", page, re.DOTALL)
        if s.strip()
    }


def directives(policy: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in (p.strip() for p in policy.split(";")) if d}


@pytest.mark.parametrize("path", ["/docs", "/docs/oauth2-redirect", "/redoc"])
async def test_the_docs_pages_may_load_their_cdn_and_own_inline_scripts(
    client: httpx.AsyncClient, path: str
) -> None:
    r = await client.get(path)
    assert r.status_code == 200
    csp = directives(r.headers["content-security-policy"])
    assert "https://cdn.jsdelivr.net" in csp["script-src"]
    assert "'unsafe-inline'" not in csp["script-src"] and "'unsafe-eval'" not in csp["script-src"]
    assert inline_hashes(r.text) <= set(csp["script-src"])
    if path != "/redoc":  # Swagger UI starts from an inline script; ReDoc has none
        assert inline_hashes(r.text)
    assert csp["frame-ancestors"] == ["'none'"]
    assert len(r.headers.get_list("content-security-policy")) == 1
    assert r.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("path", ["/openapi.json", "/healthz", "/api/v1/auth/me", "/docs/", "/console/"])
async def test_everything_else_keeps_the_strict_policy(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    csp = directives(r.headers["content-security-policy"])
    assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"], path


async def test_migration_0009_stops_on_existing_blank_bindings_naming_the_users(backend: Backend) -> None:
    """A database from before 0009 holding blank rows: the upgrade refuses (widening them or
    disabling them is a person's decision) and says who; once fixed, it applies."""
    dsn = create_scratch_db(backend)
    try:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await upgrade(conn, until=8)
            await conn.execute(
                """INSERT INTO app_user (username, display_name, role, enterprise, county)
                   VALUES ('eng_blank', 'x', 'engineer', '', NULL), ('duty_blank', 'y', 'bureau_duty', NULL, '')"""
            )
            with pytest.raises(StorageError, match="blank enterprise or county: duty_blank, eng_blank"):
                await upgrade(conn)
            await conn.execute(
                "UPDATE app_user SET enterprise = NULL, county = NULL WHERE username LIKE '%blank'"
            )
            applied = [m.version for m in await upgrade(conn)]
            assert applied[:1] == [9]
    finally:
        drop_scratch_db(backend, dsn)


async def test_a_history_bucket_of_thousands_of_digits_is_422_naming_it(client: httpx.AsyncClient) -> None:
    """int() refuses strings over 4,300 digits (a 500 before); the bucket is bounded in length."""
    r = await client.get(
        "/api/v1/history",
        params={"tags": "AA.V1.LT1", "start": "2026-11-30T00:00:00Z", "end": "2026-11-30T01:00:00Z",
                "bucket": "1" * 5000},
        headers=await login(client, "op_aa"),
    )  # fmt: skip
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", "bucket"]
