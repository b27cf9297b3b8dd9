"""Registry endpoints: enterprises, hazard sources, tags, alarm KPIs, online rate — contents,
bad inputs (422 naming the field) and tenancy (another enterprise's or county's rows are
absent from lists and counts, and their ids answer exactly as unknown ids do)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from api import routes_registry
from core.plant import Plant
from core.quality import Quality
from tests.api.conftest import login
from tests.support.api_engine import AA_GAS, AA_HH, BB_GAS, running_engine
from tests.support.api_readings import MIN_US, S_US, minute_floor, not_found_like_unknown, us, write

# --- enterprises and hazard sources -------------------------------------------------------


SCOPES = [
    ("op_aa", ["AA"]),
    ("op_bb", ["BB"]),
    ("bureau_xy", ["AA"]),
    ("bureau_city", ["AA", "BB"]),
    ("admin", ["AA", "BB"]),
]


async def test_enterprises_follow_the_scope(client: httpx.AsyncClient) -> None:
    for user, visible in SCOPES:
        await _enterprises_seen_by(client, user, visible)


async def _enterprises_seen_by(client: httpx.AsyncClient, user: str, visible: list[str]) -> None:
    h = await login(client, user)
    r = await client.get("/api/v1/enterprises", headers=h)
    assert r.status_code == 200, r.text
    assert [e["code"] for e in r.json()] == visible
    for code in ("AA", "BB"):
        one = await client.get(f"/api/v1/enterprises/{code}", headers=h)
        if code in visible:
            assert one.status_code == 200 and one.json()["code"] == code
        else:
            not_found_like_unknown(one, await client.get("/api/v1/enterprises/ZZ", headers=h), code, "ZZ")
    hs = await client.get("/api/v1/hazard-sources", headers=h)
    assert {x["enterprise"] for x in hs.json()} == set(visible)


async def test_enterprise_fields(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/enterprises/AA", headers=await login(client, "op_aa"))
    body = r.json()
    assert body == {
        "code": "AA",
        "name": "甲化工",
        "county": "孝义市",
        "hazard_sources": 2,
        "tags": 4,
        "alarms": {"critical": 0, "high": 0, "medium": 0, "low": 0, "total": 0, "unacknowledged": 0},
        "status": "normal",
        "online_rate": 0.0,  # nothing was ever collected
    }


async def test_hazard_sources_and_detail(client: httpx.AsyncClient) -> None:
    h = await login(client, "bureau_city")
    r = await client.get("/api/v1/hazard-sources", params={"enterprise": "AA"}, headers=h)
    assert [(x["code"], x["grade"], x["kind"], x["tags"]) for x in r.json()] == [
        ("AA-HS1", 2, "STORAGE", 3),
        ("AA-HS2", 4, "STORAGE", 1),
    ]
    assert r.json()[0]["r"] is None and r.json()[0]["status"] == "normal"
    d = await client.get("/api/v1/hazard-sources/AA-HS1", headers=h)
    assert d.status_code == 200
    body = d.json()
    assert [t["key"] for t in body["tag_list"]] == ["AA.V1.AT1", "AA.V1.LT1", "AA.V1.PT1"]
    assert body["quality"] == {"good": 0, "uncertain": 0, "bad": 0, "no_data": 3}
    assert body["name"] == "液氨储罐区"


async def test_hazard_source_tenancy(client: httpx.AsyncClient) -> None:
    for user in ("op_aa", "bureau_xy"):
        h = await login(client, user)
        not_found_like_unknown(
            await client.get("/api/v1/hazard-sources/BB-HS1", headers=h),
            await client.get("/api/v1/hazard-sources/ZZ-HS9", headers=h),
            "BB-HS1",
            "ZZ-HS9",
        )
        not_found_like_unknown(
            await client.get("/api/v1/hazard-sources", params={"enterprise": "BB"}, headers=h),
            await client.get("/api/v1/hazard-sources", params={"enterprise": "ZZ"}, headers=h),
            "BB",
            "ZZ",
        )
    h = await login(client, "op_bb")
    assert (await client.get("/api/v1/hazard-sources/BB-HS1", headers=h)).json()["grade"] == 1


async def test_requires_authentication(client: httpx.AsyncClient) -> None:
    for path in ("/api/v1/enterprises", "/api/v1/hazard-sources", "/api/v1/tags", "/api/v1/kpis/online"):
        assert (await client.get(path)).status_code == 401


async def test_active_alarm_counts_by_scope(
    client: httpx.AsyncClient, plant: Plant, seeded: str, tmp_path: Path
) -> None:
    async with running_engine(plant, seeded, tmp_path) as engine:
        await engine.raise_(AA_HH, AA_GAS, BB_GAS)
    # alarms that are not active count nowhere: one back to normal, one out of service
    async with await psycopg.AsyncConnection.connect(seeded, autocommit=True) as conn:
        for key, status in (("AA.V1.PT1:H", "normal"), ("AA.V1.PT1:L", "out_of_service")):
            await conn.execute(
                """INSERT INTO alarm_state (key, enterprise, county, hazard_source, subject, kind, priority,
                       status, condition, acked, latching, since, seq)
                   VALUES (%s, 'AA', '孝义市', 'AA-HS1', 'AA.V1.PT1', 'H', 'medium', %s, false, false, false,
                           now(), 0)""",
                [key, status],
            )
    aa = {"critical": 1, "high": 1, "medium": 0, "low": 0, "total": 2, "unacknowledged": 2}
    bb = {"critical": 1, "high": 0, "medium": 0, "low": 0, "total": 1, "unacknowledged": 1}
    for user, expected in (
        ("op_aa", {"AA": aa}),
        ("bureau_xy", {"AA": aa}),
        ("bureau_city", {"AA": aa, "BB": bb}),
    ):
        h = await login(client, user)
        r = await client.get("/api/v1/enterprises", headers=h)
        assert {e["code"]: e["alarms"] for e in r.json()} == expected, user
        assert {e["code"]: e["status"] for e in r.json()} == dict.fromkeys(expected, "critical")
        hs = {
            x["code"]: (x["status"], x["alarms"]["total"])
            for x in (await client.get("/api/v1/hazard-sources", headers=h)).json()
        }
        want = {"AA-HS1": ("critical", 2), "AA-HS2": ("normal", 0)}
        if "BB" in expected:
            want["BB-HS1"] = ("critical", 1)
        assert hs == want, user
    h = await login(client, "op_aa")
    tag = (await client.get("/api/v1/tags/AA.V1.LT1", headers=h)).json()
    assert [(a["key"], a["priority"], a["status"]) for a in tag["active_alarms"]] == [
        (AA_HH, "high", "unacknowledged")
    ]


# --- tags ---------------------------------------------------------------------------------


async def test_tags_metadata_limits_and_latest(client: httpx.AsyncClient, seeded: str) -> None:
    t0 = minute_floor(datetime.now(UTC)) - timedelta(minutes=10)
    await write(
        seeded,
        [
            ("AA.V1.LT1", us(t0), 7.25, int(Quality.GOOD)),
            ("AA.V1.LT1", us(t0) + S_US, 7.5, int(Quality.GOOD)),
            ("AA.V1.PT1", us(t0), float("nan"), int(Quality.BAD_COMM_FAILURE)),
        ],
    )
    h = await login(client, "op_aa")
    r = await client.get("/api/v1/tags", headers=h)
    page = r.json()
    assert page["total"] == 4
    assert [t["key"] for t in page["items"]] == ["AA.T1.TT1", "AA.V1.AT1", "AA.V1.LT1", "AA.V1.PT1"]
    by_key = {t["key"]: t for t in page["items"]}
    assert set(by_key) == {"AA.V1.AT1", "AA.V1.LT1", "AA.V1.PT1", "AA.T1.TT1"}
    lt1 = by_key["AA.V1.LT1"]
    assert lt1["limits"] == {"ll": None, "l": None, "h": 8.0, "hh": 9.0}
    assert lt1["range"] == [0.0, 10.0] and lt1["unit"] == "m" and lt1["name"] == "液位"
    assert lt1["latest"]["value"] == 7.5 and lt1["latest"]["quality"] == 192
    assert lt1["latest"]["quality_name"] == "GOOD"
    assert datetime.fromisoformat(lt1["latest"]["time"]) == t0 + timedelta(seconds=1)
    pt1 = by_key["AA.V1.PT1"]
    assert pt1["latest"]["value"] is None and pt1["latest"]["quality_name"] == "BAD_COMM_FAILURE"
    assert pt1["limits"] is None and by_key["AA.T1.TT1"]["latest"] is None
    assert by_key["AA.V1.AT1"]["limits"]["hh"] is not None  # a gas detector's resolved levels
    d = (await client.get("/api/v1/tags/AA.V1.PT1", headers=h)).json()
    assert d["sampling"] == {"device": "plc", "interval_s": 1.0, "changes_only": False}
    assert d["active_alarms"] == [] and d["retired"] is False


async def test_tag_filters_and_paging(client: httpx.AsyncClient) -> None:
    h = await login(client, "bureau_city")
    keys = lambda r: [t["key"] for t in r.json()["items"]]  # noqa: E731
    r = await client.get("/api/v1/tags", params={"kind": "GAS"}, headers=h)
    assert keys(r) == ["AA.V1.AT1", "BB.G1.AT1"]
    r = await client.get("/api/v1/tags", params={"hazard_source": "AA-HS2"}, headers=h)
    assert keys(r) == ["AA.T1.TT1"]
    r = await client.get("/api/v1/tags", params={"enterprise": "BB"}, headers=h)
    assert keys(r) == ["BB.G1.AT1", "BB.G1.XV1"]
    r = await client.get("/api/v1/tags", params={"limit": 2, "offset": 5}, headers=h)
    assert r.json()["total"] == 6 and keys(r) == ["BB.G1.XV1"]
    r = await client.get("/api/v1/tags", params={"limit": 2, "offset": 50}, headers=h)
    assert r.json()["total"] == 6 and keys(r) == []


async def test_tag_bad_inputs(client: httpx.AsyncClient) -> None:
    h = await login(client, "op_aa")
    for params, loc in (
        ({"kind": "VOLTAGE"}, "kind"),
        ({"limit": 0}, "limit"),
        ({"limit": 10**6}, "limit"),
        ({"offset": -1}, "offset"),
    ):
        r = await client.get("/api/v1/tags", params=params, headers=h)
        assert r.status_code == 422, params
        assert r.json()["detail"][0]["loc"] == ["query", loc], params


async def test_tag_tenancy(client: httpx.AsyncClient) -> None:
    for user in ("op_aa", "bureau_xy"):
        h = await login(client, user)
        r = await client.get("/api/v1/tags", params={"limit": 5000}, headers=h)
        assert all(t["enterprise"] == "AA" for t in r.json()["items"]) and r.json()["total"] == 4
        not_found_like_unknown(
            await client.get("/api/v1/tags/BB.G1.AT1", headers=h),
            await client.get("/api/v1/tags/ZZ.G1.AT1", headers=h),
            "BB.G1.AT1",
            "ZZ.G1.AT1",
        )
        for key, foreign, unknown in (("enterprise", "BB", "ZZ"), ("hazard_source", "BB-HS1", "ZZ-HS1")):
            not_found_like_unknown(
                await client.get("/api/v1/tags", params={key: foreign}, headers=h),
                await client.get("/api/v1/tags", params={key: unknown}, headers=h),
                foreign,
                unknown,
            )
        r = await client.get("/api/v1/tags", params={"kind": "GAS"}, headers=h)
        assert [t["key"] for t in r.json()["items"]] == ["AA.V1.AT1"]


# --- KPIs ----------------------------------------------------------------------------------


async def test_alarm_kpis_by_scope(
    client: httpx.AsyncClient, plant: Plant, seeded: str, tmp_path: Path
) -> None:
    start = datetime.now(UTC) - timedelta(minutes=5)
    async with running_engine(plant, seeded, tmp_path) as engine:
        await engine.raise_(AA_HH, AA_GAS, BB_GAS)
    end = datetime.now(UTC) + timedelta(minutes=1)
    params = {"start": start.isoformat(), "end": end.isoformat()}
    for user, n, top in (
        ("op_aa", 2, {AA_HH, AA_GAS}),
        ("bureau_xy", 2, {AA_HH, AA_GAS}),
        ("op_bb", 1, {BB_GAS}),
        ("bureau_city", 3, {AA_HH, AA_GAS, BB_GAS}),
    ):
        h = await login(client, user)
        r = await client.get("/api/v1/kpis/alarms", params=params, headers=h)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["annunciations"] == n, user
        assert {c["key"] for c in body["top"]} == top, user
        assert body["unacked"] == n
    h = await login(client, "bureau_city")
    r = await client.get("/api/v1/kpis/alarms", params={**params, "enterprise": "BB"}, headers=h)
    assert r.json()["annunciations"] == 1
    r = await client.get("/api/v1/kpis/alarms", params={**params, "hazard_source": "AA-HS1"}, headers=h)
    assert r.json()["annunciations"] == 2
    h = await login(client, "op_aa")
    not_found_like_unknown(
        await client.get("/api/v1/kpis/alarms", params={**params, "enterprise": "BB"}, headers=h),
        await client.get("/api/v1/kpis/alarms", params={**params, "enterprise": "ZZ"}, headers=h),
        "BB",
        "ZZ",
    )
    r = await client.get("/api/v1/kpis/alarms", headers=h)  # default: the last 24 h
    assert r.status_code == 200 and r.json()["annunciations"] == 2


BAD_WINDOWS = [
    ({"start": "2026-01-02T00:00:00", "end": "2026-01-03T00:00:00Z"}, "start"),  # naive
    ({"start": "2026-01-02T00:00:00Z", "end": "2026-01-03T00:00:00"}, "end"),
    ({"start": "2026-01-03T00:00:00Z", "end": "2026-01-03T00:00:00Z"}, "end"),  # empty
    ({"start": "2026-01-03T00:00:00+08:00", "end": "2026-01-02T16:00:00Z"}, "end"),  # the same instant
    ({"start": "2020-01-01T00:00:00Z", "end": "2026-01-03T00:00:00Z"}, "start"),  # > max_history_days
    ({"start": "yesterday"}, "start"),
]


async def test_kpi_bad_windows(client: httpx.AsyncClient) -> None:
    h = await login(client, "op_aa")
    for path in ("/api/v1/kpis/alarms", "/api/v1/kpis/online"):
        for params, loc in BAD_WINDOWS:
            r = await client.get(path, params=params, headers=h)
            assert r.status_code == 422, (path, params, r.text)
            assert r.json()["detail"][0]["loc"] == ["query", loc], (path, params)


async def test_online_rate_from_crafted_gaps(client: httpx.AsyncClient, seeded: str) -> None:
    """Hand-computed: ten minutes, [t0, t0 + 10 min)."""
    t0 = minute_floor(datetime.now(UTC)) - timedelta(minutes=30)
    base = us(t0)
    rows: list[tuple[str, int, float, int]] = []
    good, bad = int(Quality.GOOD), int(Quality.BAD_COMM_FAILURE)
    # PT1, polled every 1 s (Modbus plc): minutes 0-3 full (60 each), minute 4 half (30 good,
    # 30 bad), minutes 5-9 nothing, and a burst of 120 in minute 3 that must not count twice:
    # (4 * 60 + 30) / 600 = 0.45
    for m in range(5):
        for s in range(60):
            rows.append(("AA.V1.PT1", base + m * MIN_US + s * S_US, 1.0, good if m < 4 or s < 30 else bad))
    rows += [("AA.V1.PT1", base + 3 * MIN_US + s * 500_000 + 250_000, 1.0, good) for s in range(120)]
    # LT1, an OPC UA subscription: good before the window (carried in), unchanged until minute 3,
    # a BAD at minute 3 (offline from there), good again at minute 7: online 0-2, 7-9 = 6 / 10
    rows += [
        ("AA.V1.LT1", base - 5 * MIN_US, 5.0, good),
        ("AA.V1.LT1", base + 3 * MIN_US + 10 * S_US, float("nan"), bad),
        ("AA.V1.LT1", base + 7 * MIN_US + 5 * S_US, 5.5, good),
    ]
    # BB's gas detector, polled: all ten minutes full
    rows += [("BB.G1.AT1", base + s * S_US, 3.0, good) for s in range(600)]
    await write(seeded, rows)
    params = {"start": t0.isoformat(), "end": (t0 + timedelta(minutes=10)).isoformat()}
    h = await login(client, "bureau_city")
    r = await client.get("/api/v1/kpis/online", params=params, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    rates = {p["tag"]: p["rate"] for p in body["points"]}
    assert rates == {
        "AA.V1.AT1": 0.0,
        "AA.V1.LT1": pytest.approx(0.6),
        "AA.V1.PT1": pytest.approx(0.45),
        "AA.T1.TT1": 0.0,
        "BB.G1.AT1": pytest.approx(1.0),
        "BB.G1.XV1": 0.0,
    }
    groups = {g["code"]: (g["rate"], g["points"]) for g in body["enterprises"] + body["hazard_sources"]}
    assert groups["AA"] == (pytest.approx((0.6 + 0.45) / 4), 4)
    assert groups["AA-HS1"] == (pytest.approx((0.6 + 0.45) / 3), 3)
    assert groups["BB"] == (pytest.approx(0.5), 2)
    # unaligned bounds shrink to whole minutes: [t0 + 1 min, t0 + 4 min) of PT1 is full
    r = await client.get(
        "/api/v1/kpis/online",
        params={
            "start": (t0 + timedelta(seconds=30)).isoformat(),
            "end": (t0 + timedelta(minutes=4, seconds=30)).isoformat(),
            "hazard_source": "AA-HS1",
        },
        headers=h,
    )
    assert {p["tag"]: p["rate"] for p in r.json()["points"]}["AA.V1.PT1"] == pytest.approx(1.0)
    # tenancy: op_aa and the 孝义市 bureau see AA's points only, and 404 for BB as for ZZ
    for user in ("op_aa", "bureau_xy"):
        hu = await login(client, user)
        r = await client.get("/api/v1/kpis/online", params=params, headers=hu)
        assert {p["enterprise"] for p in r.json()["points"]} == {"AA"}
        assert [g["code"] for g in r.json()["enterprises"]] == ["AA"]
        not_found_like_unknown(
            await client.get("/api/v1/kpis/online", params={**params, "enterprise": "BB"}, headers=hu),
            await client.get("/api/v1/kpis/online", params={**params, "enterprise": "ZZ"}, headers=hu),
            "BB",
            "ZZ",
        )
    # the lists' 24 h rate is the same computation (PT1's 4.5 full minutes of 24 h here)
    r = await client.get("/api/v1/enterprises/BB", headers=h)
    assert r.json()["online_rate"] == pytest.approx(0.5 * 10 / (24 * 60), abs=2e-3)
    # a minute a writer still holds open counts on neither side: 9 minutes expected, not 10
    async with await psycopg.AsyncConnection.connect(seeded, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO reading_1m_open (bucket, tag_lo, tag_hi) VALUES (%s, 0, 0)",
            [t0 + timedelta(minutes=4)],
        )
    r = await client.get("/api/v1/kpis/online", params=params, headers=h)
    rates = {p["tag"]: p["rate"] for p in r.json()["points"]}
    assert rates["AA.V1.PT1"] == pytest.approx(240 / 540)  # its half minute 4 left out
    assert rates["AA.V1.LT1"] == pytest.approx(6 / 9)
    assert rates["BB.G1.AT1"] == pytest.approx(1.0)


async def test_odd_inputs_are_client_errors(client: httpx.AsyncClient) -> None:
    """What a fuzzer sends (NUL bytes, times at datetime's limits) is a 404 or 422, never a 500."""
    h = await login(client, "bureau_city")
    for path in ("/api/v1/enterprises/A%00B", "/api/v1/hazard-sources/A%00B", "/api/v1/tags/A.B.%00"):
        r = await client.get(path, headers=h)
        assert r.status_code == 404, (path, r.text)
    for path, params in (
        ("/api/v1/tags", {"enterprise": "A\x00"}),
        ("/api/v1/hazard-sources", {"enterprise": "A\x00"}),
        ("/api/v1/kpis/online", {"hazard_source": "A\x00"}),
        (
            "/api/v1/history",
            {"tags": "A.B.\x00", "start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"},
        ),
    ):
        r = await client.get(path, params=params, headers=h)
        assert r.status_code == 404, (path, r.text)
    for path in ("/api/v1/kpis/alarms", "/api/v1/kpis/online", "/api/v1/history"):
        for params, loc in (
            ({"start": "2026-01-01T00:00:00Z", "end": "0001-01-01T00:00:00Z"}, "end"),
            ({"start": "9999-12-31T23:59:59Z", "end": "2026-01-01T00:00:00Z"}, "start"),
            ({"end": "9999-12-31T23:59:59-01:00", "start": "2026-01-01T00:00:00Z"}, "end"),
            ({"start": "0001-01-01T00:00:00+14:00", "end": "2026-01-01T00:00:00Z"}, "start"),
        ):
            r = await client.get(path, params={"tags": "AA.V1.PT1", **params}, headers=h)
            assert r.status_code == 422, (path, params, r.text)
            assert ["query", loc] in [e["loc"] for e in r.json()["detail"]], (path, params)


def test_openapi_documents_the_registry() -> None:
    app = FastAPI()
    app.include_router(routes_registry.router)
    doc = app.openapi()
    paths = doc["paths"]
    for path in (
        "/api/v1/enterprises/{enterprise}",
        "/api/v1/hazard-sources/{hazard_source}",
        "/api/v1/tags/{tag}",
        "/api/v1/history",
        "/api/v1/kpis/alarms",
        "/api/v1/kpis/online",
    ):
        op = paths[path]["get"]
        assert op["summary"] and "404" in op["responses"] and "422" in op["responses"], path
    assert "text/csv" in paths["/api/v1/history"]["get"]["responses"]["200"]["content"]
