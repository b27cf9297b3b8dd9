"""/api/v1/history: raw readings and buckets (reading_1m for whole minutes), auto buckets, CSV
export, bounds and bad inputs (422 naming the field), and tenancy (another enterprise's tag is
an unknown tag, in JSON and CSV)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest

from api.history_view import AUTO_POINTS, JSON_DIGITS, auto_bucket, json_body
from core.plant import Plant
from core.quality import Quality
from core.settings import ApiSettings
from storage.queries import History
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


async def test_json_text_of_times_numbers_and_gaps(client: httpx.AsyncClient, filled: str) -> None:
    """What the fast encoder must keep: raw times with all six fractional digits (also when the
    microseconds have leading zeros), buckets' whole seconds, a bucket without a usable reading
    as null (count 0), numbers at 12 significant digits, the body's JSON content type."""
    t = T0 + timedelta(hours=1)
    await write(
        filled,
        [
            ("AA.V1.LT1", us(t) + 1, 0.1 + 0.2, GOOD),
            ("AA.V1.LT1", us(t) + 1_023_456, 2.5, GOOD),
            ("AA.V1.LT1", us(t) + 61 * S_US, float("nan"), BAD),
        ],
    )
    h = await login(client, "op_aa")
    window = q(["AA.V1.LT1"], t, t + timedelta(seconds=2), bucket="raw")
    r = await client.get("/api/v1/history", params=window, headers=h)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text
    [s] = r.json()["series"]
    stamp = iso(t)[:-1]
    assert s["time"] == [f"{stamp}.000001Z", f"{stamp[:-2]}01.023456Z"]
    assert s["value"] == [0.3, 2.5] and s["quality_name"] == ["GOOD", "GOOD"]
    r = await client.get(
        "/api/v1/history", params=q(["AA.V1.LT1"], t, t + timedelta(minutes=2), bucket="60"), headers=h
    )
    [s] = r.json()["series"]
    assert s["time"] == [iso(t), iso(t + timedelta(minutes=1))]
    assert s["count"] == [2, 0] and s["bad_count"] == [0, 1]
    assert s["min"] == [0.3, None] and s["avg"] == [1.4, None] and s["max"] == [2.5, None]
    assert s["last"] == [2.5, None]  # the BAD reading's NaN


def _reference(h: History, key_of: dict[int, str], order: list[str], raw: bool) -> list[dict[str, object]]:
    """The answer built the plain way: a Python object per point, stdlib datetime formatting."""

    def num(v: float) -> float | None:
        if not math.isfinite(v):
            return None
        return float(f"{v:.{JSON_DIGITS}g}") if 1e-11 <= abs(v) < 1e34 else v  # see _significant

    def when(t_us: int) -> str:
        t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t_us)
        return t.isoformat(timespec="microseconds" if raw else "seconds").replace("+00:00", "Z")

    out = []
    for key in order:
        [tag_id] = [i for i, k in key_of.items() if k == key]
        rows = np.flatnonzero(h.tag_id == tag_id).tolist()
        s: dict[str, object] = {"tag": key, "time": [when(int(h.time[i])) for i in rows]}
        if raw:
            s["value"] = [num(float(h.last[i])) for i in rows]
            s["quality"] = [int(h.quality[i]) for i in rows]
            s["quality_name"] = [Quality(int(h.quality[i])).name for i in rows]
        else:
            for name in ("min", "max", "avg", "last"):
                s[name] = [num(float(getattr(h, name)[i])) for i in rows]
            s["count"] = [int(h.count[i]) for i in rows]
            s["bad_count"] = [int(h.bad_count[i]) for i in rows]
        out.append(s)
    return out


def _digits(v: float) -> int:
    """Significant digits of ``v``'s shortest repr (JSON_DIGITS for a rounded value)."""
    mantissa = repr(abs(v)).split("e")[0].replace(".", "").strip("0")
    return len(mantissa)


@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize("n", [0, 1, 2000])
def test_json_body_matches_the_plain_encoding(raw: bool, n: int) -> None:
    """json_body (orjson from numpy columns) means what the per-point Python answer means:
    random times (microseconds for raw), NaN and infinities as null, values of every magnitude."""
    rng = np.random.default_rng(n)
    tag_id = np.sort(rng.integers(1, 4, n)).astype(np.int32)
    if raw:
        time = 1_790_000_000 * S_US + rng.integers(0, 10**12, n)
    else:
        time = rng.integers(0, 3_000_000, n) * 60 * S_US  # 1970 .. 1975
    time = np.sort(time).astype(np.int64)  # sorted by time within each tag, as history() returns

    def values() -> np.ndarray:
        v = rng.normal(0, 10.0 ** rng.integers(-9, 13, n))
        v[rng.random(n) < 0.1] = np.nan
        v[rng.random(n) < 0.01] = np.inf
        return v

    qualities = np.array([int(q) for q in (Quality.GOOD, Quality.BAD_COMM_FAILURE)], np.uint8)
    h = History(
        tag_id, time, values(), values(), values(), rng.integers(0, 61, n), rng.integers(0, 61, n),
        values(), rng.choice(qualities, n), "reading",
    )  # fmt: skip
    key_of = {1: "AA.V1.PT1", 2: "AA.V1.LT1", 3: "BB.G1.AT1", 9: "AA.V1.TT1"}  # 9: no rows
    order = ["BB.G1.AT1", "AA.V1.TT1", "AA.V1.PT1", "AA.V1.LT1"]
    head = {"start": "s", "end": "e", "bucket_s": None if raw else 60, "source": "reading"}
    got = json.loads(json_body(h, key_of, order, raw, head))
    want = _reference(h, key_of, order, raw)
    assert {k: got[k] for k in head} == head and [s["tag"] for s in got["series"]] == order
    for g, w in zip(got["series"], want, strict=True):
        assert g.keys() == w.keys()
        for name, column in w.items():
            if name in ("min", "max", "avg", "last", "value"):  # a tie's 12th digit may round either way
                assert [v is None for v in g[name]] == [v is None for v in column], name
                pairs = [(a, b) for a, b in zip(g[name], column, strict=True) if b is not None]
                assert all(math.isclose(a, b, rel_tol=1e-11) and _digits(a) <= _digits(b) for a, b in pairs)
            else:
                assert g[name] == column, name


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
