"""/api/v1/history: raw readings and buckets (reading_1m for whole minutes), auto buckets, CSV
export, bounds and bad inputs (422 naming the field), and tenancy (another enterprise's tag is
an unknown tag, in JSON and CSV)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from api.history_view import AUTO_POINTS, auto_bucket
from core.plant import Plant
from core.quality import Quality
from core.settings import ApiSettings
from tests.api.conftest import login, make_client
from tests.support.api_readings import S_US, not_found_like_unknown, us, write

T0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
GOOD, BAD = int(Quality.GOOD), int(Quality.BAD_COMM_FAILURE)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@pytest.fixture
async def filled(seeded: str) -> str:
    """PT1 (AA) every second for 3 minutes from T0, the 10th reading BAD; BB's AT1 likewise."""
    rows = []
    for s in range(180):
        rows.append(("AA.V1.PT1", us(T0) + s * S_US, float(s), BAD if s == 10 else GOOD))
        rows.append(("BB.G1.AT1", us(T0) + s * S_US, 100.0 + s, GOOD))
    rows.append(("AA.V1.LT1", us(T0) + 30 * S_US, 7.5, GOOD))
    await write(seeded, rows)
    return seeded


def q(tags: list[str], start: datetime, end: datetime, **more: str) -> dict[str, object]:
    return {"tags": tags, "start": iso(start), "end": iso(end), **more}


async def test_raw_readings(client: httpx.AsyncClient, filled: str) -> None:
    h = await login(client, "op_aa")
    r = await client.get(
        "/api/v1/history", params=q(["AA.V1.PT1"], T0, T0 + timedelta(seconds=20), bucket="raw"), headers=h
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["bucket_s"], body["source"]) == (None, "reading")
    assert body["start"] == iso(T0)
    [s] = body["series"]
    assert s["tag"] == "AA.V1.PT1" and len(s["time"]) == 20
    assert s["time"][1] == iso(T0 + timedelta(seconds=1)).replace("Z", ".000000Z")
    assert datetime.fromisoformat(s["time"][1]) == T0 + timedelta(seconds=1)
    assert s["value"][:3] == [0.0, 1.0, 2.0] and s["value"][10] == 10.0
    assert s["quality"][10] == BAD and s["quality_name"][10] == "BAD_COMM_FAILURE"
    assert s["quality_name"][0] == "GOOD" and "min" not in s


async def test_minute_buckets_come_from_the_rollup(client: httpx.AsyncClient, filled: str) -> None:
    h = await login(client, "op_aa")
    r = await client.get(
        "/api/v1/history",
        params=q(["AA.V1.PT1", "AA.V1.LT1"], T0, T0 + timedelta(minutes=3), bucket="60"),
        headers=h,
    )
    body = r.json()
    assert (body["bucket_s"], body["source"]) == (60, "reading_1m")
    pt1, lt1 = body["series"]  # in request order
    assert (pt1["tag"], lt1["tag"]) == ("AA.V1.PT1", "AA.V1.LT1")
    assert pt1["time"] == [iso(T0 + timedelta(minutes=m)) for m in range(3)]
    assert pt1["count"] == [59, 60, 60] and pt1["bad_count"] == [1, 0, 0]
    assert pt1["min"] == [0.0, 60.0, 120.0] and pt1["max"] == [59.0, 119.0, 179.0]
    assert pt1["last"] == [59.0, 119.0, 179.0]
    assert pt1["avg"][1] == pytest.approx(89.5)
    assert lt1["time"] == [iso(T0)] and lt1["last"] == [7.5]


async def test_auto_buckets(client: httpx.AsyncClient, filled: str) -> None:
    h = await login(client, "op_aa")

    async def auto(window: timedelta) -> dict[str, object]:
        r = await client.get("/api/v1/history", params=q(["AA.V1.PT1"], T0, T0 + window), headers=h)
        assert r.status_code == 200, r.text
        body: dict[str, object] = r.json()
        return body

    small = await auto(timedelta(minutes=10))  # 600 readings at 1 s: raw
    assert (small["bucket_s"], small["source"]) == (None, "reading")
    two_hours = await auto(timedelta(hours=2))  # 7200 s / 2000 -> 5 s buckets, from raw (a short window)
    assert (two_hours["bucket_s"], two_hours["source"]) == (5, "reading")
    day = await auto(timedelta(days=1))  # 43.2 s -> a minute
    assert (day["bucket_s"], day["source"]) == (60, "reading_1m")
    month = await auto(timedelta(days=30))  # never raw beyond a day
    assert (month["bucket_s"], month["source"]) == (1800, "reading_1m")
    [s] = month["series"]  # type: ignore[misc]
    assert s["count"] == [179]  # the three minutes in one half hour, the BAD one apart
    assert s["bad_count"] == [1]


async def test_thirty_days_at_minute_buckets_reads_the_rollup_only(
    client: httpx.AsyncClient, filled: str
) -> None:
    """The benchmark's query (1 tag x 30 days x 60 s): reading_1m, never raw readings."""
    h = await login(client, "op_aa")
    start = T0 - timedelta(days=27)
    r = await client.get(
        "/api/v1/history", params=q(["AA.V1.PT1"], start, start + timedelta(days=30), bucket="60"), headers=h
    )
    assert r.status_code == 200, r.text
    assert (r.json()["bucket_s"], r.json()["source"]) == (60, "reading_1m")
    assert r.json()["series"][0]["count"] == [59, 60, 60]


async def test_csv_export(client: httpx.AsyncClient, filled: str) -> None:
    h = await login(client, "op_aa")
    r = await client.get(
        "/api/v1/history",
        params=q(
            ["AA.V1.PT1"], T0 + timedelta(seconds=9), T0 + timedelta(seconds=12), bucket="raw", format="csv"
        ),
        headers=h,
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"].startswith('attachment; filename="history-')
    assert not r.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows == [
        ["time", "tag", "value", "quality", "quality_name"],
        [iso(T0 + timedelta(seconds=9)).replace("Z", ".000000Z"), "AA.V1.PT1", "9.0", "192", "GOOD"],
        [
            iso(T0 + timedelta(seconds=10)).replace("Z", ".000000Z"),
            "AA.V1.PT1",
            "10.0",
            "24",
            "BAD_COMM_FAILURE",
        ],
        [iso(T0 + timedelta(seconds=11)).replace("Z", ".000000Z"), "AA.V1.PT1", "11.0", "192", "GOOD"],
    ]
    # buckets, asked for by Accept
    r = await client.get(
        "/api/v1/history",
        params=q(["AA.V1.PT1"], T0, T0 + timedelta(minutes=2), bucket="60"),
        headers={**h, "Accept": "text/csv"},
    )
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["time", "tag", "min", "max", "avg", "last", "count", "bad_count"]
    assert rows[1] == [
        iso(T0),
        "AA.V1.PT1",
        "0.0",
        "59.0",
        repr((sum(range(60)) - 10) / 59),
        "59.0",
        "59",
        "1",
    ]
    assert len(rows) == 3


async def test_history_tenancy(client: httpx.AsyncClient, filled: str) -> None:
    window = (T0, T0 + timedelta(minutes=3))
    for user in ("op_aa", "bureau_xy"):
        h = await login(client, user)
        for tags in (["BB.G1.AT1"], ["AA.V1.PT1", "BB.G1.AT1"]):
            for fmt in ("json", "csv"):
                foreign = await client.get("/api/v1/history", params=q(tags, *window, format=fmt), headers=h)
                unknown = await client.get(
                    "/api/v1/history",
                    params=q([t.replace("BB.", "ZZ.") for t in tags], *window, format=fmt),
                    headers=h,
                )
                not_found_like_unknown(foreign, unknown, "BB.G1.AT1", "ZZ.G1.AT1")
                assert foreign.json() == {"detail": "unknown tag BB.G1.AT1"}
        r = await client.get("/api/v1/history", params=q(["AA.V1.PT1"], *window, format="csv"), headers=h)
        assert "BB." not in r.text and r.text.count("AA.V1.PT1") == 180
    h = await login(client, "bureau_city")
    r = await client.get(
        "/api/v1/history", params=q(["AA.V1.PT1", "BB.G1.AT1"], *window, bucket="60"), headers=h
    )
    assert [s["tag"] for s in r.json()["series"]] == ["AA.V1.PT1", "BB.G1.AT1"]
    assert r.json()["series"][1]["count"] == [60, 60, 60]


async def test_history_bad_inputs(client: httpx.AsyncClient, filled: str) -> None:
    h = await login(client, "op_aa")
    ok = {"tags": ["AA.V1.PT1"], "start": iso(T0), "end": iso(T0 + timedelta(hours=1))}
    day2 = iso(T0 + timedelta(days=2))
    for change, loc in (
        ({"tags": []}, "tags"),
        ({"tags": [f"AA.V1.T{i}" for i in range(21)]}, "tags"),
        ({"start": "2026-01-02T00:00:00"}, "start"),  # naive
        ({"end": "2026-01-02T00:00:00"}, "end"),
        ({"start": None}, "start"),
        ({"end": iso(T0)}, "end"),  # empty window
        ({"start": iso(T0 - timedelta(days=401))}, "start"),  # > max_history_days
        ({"bucket": "often"}, "bucket"),
        ({"bucket": "0"}, "bucket"),
        ({"bucket": "-60"}, "bucket"),
        ({"bucket": "1.5"}, "bucket"),
        ({"bucket": "raw", "end": day2}, "bucket"),  # raw beyond a day
        ({"bucket": "30", "end": day2}, "bucket"),  # sub-minute buckets read raw
        ({"format": "xml"}, "format"),
    ):
        params = {k: v for k, v in {**ok, **change}.items() if v is not None}
        r = await client.get("/api/v1/history", params=params, headers=h)
        assert r.status_code == 422, (change, r.text)
        assert r.json()["detail"][0]["loc"][:2] == ["query", loc], change
    r = await client.get("/api/v1/history", params={**ok, "tags": ["AA.V1.PT1", "AA.V1.PT1"]}, headers=h)
    assert len(r.json()["series"]) == 1  # duplicates asked once


@pytest.fixture
async def small_client(seeded: str, plant: Plant) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(seeded, plant, ApiSettings(max_history_points=100, max_history_days=10)) as c:
        app = c._transport.app  # type: ignore[attr-defined]
        async with app.router.lifespan_context(app):
            yield c


async def test_history_bounds_from_settings(small_client: httpx.AsyncClient, filled: str) -> None:
    c = small_client
    h = await login(c, "op_aa")
    base = {"tags": ["AA.V1.PT1"], "start": iso(T0)}
    # 100 one-minute buckets fit (with the widened edge: 99 + 1), 200 do not
    r = await c.get(
        "/api/v1/history", params={**base, "end": iso(T0 + timedelta(minutes=99)), "bucket": "60"}, headers=h
    )
    assert r.status_code == 200, r.text
    r = await c.get(
        "/api/v1/history", params={**base, "end": iso(T0 + timedelta(minutes=200)), "bucket": "60"}, headers=h
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "bucket"]
    # 180 raw readings are more than 100
    r = await c.get(
        "/api/v1/history", params={**base, "end": iso(T0 + timedelta(minutes=3)), "bucket": "raw"}, headers=h
    )
    assert r.status_code == 422 and "180 readings" in r.json()["detail"][0]["msg"]
    r = await c.get("/api/v1/history", params={**base, "end": iso(T0 + timedelta(days=11))}, headers=h)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "start"]


@pytest.mark.parametrize("interval_s", [0.1, 1.0, 60.0, 3600.0])
def test_auto_never_reads_raw_beyond_a_day(interval_s: float) -> None:
    """Whatever the sampling, a window over a day gets whole-minute buckets (reading_1m) of at
    most AUTO_POINTS per tag; a day or less may be raw only when that stays under AUTO_POINTS."""
    for window_s in (60, 1800, 7200, 86_400, 86_401, 3 * 86_400, 30 * 86_400, 400 * 86_400):
        window = timedelta(seconds=window_s)
        width = auto_bucket(window, interval_s).seconds
        if width is None:
            assert window <= timedelta(days=1) and window_s / interval_s <= AUTO_POINTS
        else:
            assert window_s / width <= AUTO_POINTS, (window, width)
            if window > timedelta(days=1):
                assert width % 60 == 0, (window, width)
