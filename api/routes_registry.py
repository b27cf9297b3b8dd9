"""Registry, live values, history and KPIs: enterprises, hazard sources, tags, /history, /kpis.

Tenancy: every read is filtered by the caller's scope in SQL (api.registry_views); an id or a
filter value outside it answers the same 404 as an unknown one ("unknown tag X"), and nothing
outside it is in any list, count, rate, KPI or CSV. Times in and out are ISO 8601 with an
offset; a naive time, an empty or too long window is a 422 naming the field.
"""

from __future__ import annotations

import dataclasses
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from pydantic import AwareDatetime, BaseModel, Field

from alarms.kpi import alarm_kpis
from api import registry_views as views
from api.deps import ApiState, Caller, Db, State
from api.history_view import RAW_MAX_WINDOW, auto_bucket, csv_rows, json_body
from api.online import Expectation, PlantIndex, mean_rate, online_rates
from api.principal import Principal
from core.clock import from_datetime as to_us
from core.plant import TagKind
from core.quality import name_of
from storage.queries import history

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["registry"])

MAX_HISTORY_TAGS = 20
ONLINE_WINDOW = timedelta(hours=24)  # the lists' online rate
RECENT_TTL_S = 60.0  # how long a list's per-point 24 h rate is reused (per API process)
KPI_WINDOW = timedelta(hours=24)  # the KPI routes' default period (alarms and online rate), ending now
# Times outside this range are refused (422): arithmetic near datetime's limits would overflow.
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)


# --- models -----------------------------------------------------------------------------


class Problem(BaseModel):
    detail: str = Field(examples=["unknown enterprise BB"])


NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "unknown, or outside the caller's scope (the same answer)"}
}
INVALID: dict[int | str, dict[str, Any]] = {
    422: {"description": 'invalid parameter; `detail[].loc` names it (e.g. `["query", "end"]`)'}
}


class AlarmCounts(BaseModel):
    """Active alarms (unacknowledged, acknowledged, returned unacknowledged, latched, shelved)."""

    critical: int = 0
    high: int = 0
    medium: int = 0
    low: int = 0
    total: int = 0
    unacknowledged: int = 0

    @classmethod
    def of(cls, c: views.AlarmCounts | None) -> AlarmCounts:
        c = c or views.AlarmCounts()
        return cls(**c.by_priority, total=c.total, unacknowledged=c.unacknowledged)


class Enterprise(BaseModel):
    code: str
    name: str
    county: str = Field(description="属地县(市、区): the supervising county bureau")
    hazard_sources: int
    tags: int
    alarms: AlarmCounts
    status: str = Field(description="worst active alarm priority, or normal")
    online_rate: float | None = Field(description="share of expected samples received usable, last 24 h")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "code": "AA",
                    "name": "甲化工",
                    "county": "孝义市",
                    "hazard_sources": 2,
                    "tags": 4,
                    "alarms": {
                        "critical": 1,
                        "high": 0,
                        "medium": 0,
                        "low": 0,
                        "total": 1,
                        "unacknowledged": 1,
                    },
                    "status": "critical",
                    "online_rate": 0.998,
                }
            ]
        }
    }


class HazardSource(BaseModel):
    enterprise: str
    code: str
    name: str
    kind: str = Field(description="PRODUCTION | STORAGE")
    grade: int = Field(ge=1, le=4, description="GB 18218 grade, 1 highest")
    r: float | None = Field(description="GB 18218 R value when computed (hazard_source.attrs.r), else null")
    tags: int
    status: str = Field(description="worst active alarm priority, or normal")
    alarms: AlarmCounts
    online_rate: float | None = Field(description="mean of its points' online rates, last 24 h")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "enterprise": "AA",
                    "code": "AA-HS1",
                    "name": "液氨储罐区",
                    "kind": "STORAGE",
                    "grade": 2,
                    "r": None,
                    "tags": 3,
                    "status": "high",
                    "alarms": {
                        "critical": 0,
                        "high": 1,
                        "medium": 0,
                        "low": 0,
                        "total": 1,
                        "unacknowledged": 0,
                    },
                    "online_rate": 1.0,
                }
            ]
        }
    }


class Limits(BaseModel):
    ll: float | None = None
    l: float | None = None  # noqa: E741 — the plant's own name
    h: float | None = None
    hh: float | None = None


class Latest(BaseModel):
    time: datetime
    value: float | None = Field(description="null when not finite (a BAD reading)")
    quality: int = Field(description="OPC DA quality byte (GOOD 192, UNCERTAIN 64, BAD 0 + substatus)")
    quality_name: str = Field(examples=["GOOD", "BAD_COMM_FAILURE"])


class Tag(BaseModel):
    key: str = Field(examples=["AA.V1.LT1"])
    enterprise: str
    hazard_source: str
    equipment: str
    name: str
    kind: str
    unit: str
    range: tuple[float, float] | None
    in_service: bool
    limits: Limits | None = Field(description="alarm limits from the plant config, when it has any")
    latest: Latest | None = Field(description="newest stored reading; null if it never reported")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "key": "AA.V1.LT1",
                    "enterprise": "AA",
                    "hazard_source": "AA-HS1",
                    "equipment": "V1",
                    "name": "液位",
                    "kind": "LEVEL",
                    "unit": "m",
                    "range": [0, 10],
                    "in_service": True,
                    "limits": {"ll": None, "l": None, "h": 8, "hh": 9},
                    "latest": {
                        "time": "2026-11-30T08:00:00Z",
                        "value": 7.5,
                        "quality": 192,
                        "quality_name": "GOOD",
                    },
                }
            ]
        }
    }


class TagPage(BaseModel):
    total: int = Field(description="tags matching the filters")
    limit: int
    offset: int
    items: list[Tag]


class ActiveAlarm(BaseModel):
    key: str
    kind: str
    priority: str
    status: str
    acked: bool
    since: datetime


class Sampling(BaseModel):
    device: str | None
    interval_s: float
    changes_only: bool = Field(description="an OPC UA subscription: reports changes only")


class TagDetail(Tag):
    retired: bool
    sampling: Sampling
    active_alarms: list[ActiveAlarm]


class QualitySummary(BaseModel):
    good: int = 0
    uncertain: int = 0
    bad: int = 0
    no_data: int = 0


class HazardSourceDetail(HazardSource):
    substances: list[dict[str, Any]]
    quality: QualitySummary = Field(description="its tags by the quality of their latest reading")
    tag_list: list[Tag]


class Series(BaseModel):
    """Columns of one tag: raw readings (time, value, quality, quality_name) or buckets
    (time = bucket start, min, max, avg, last, count, bad_count); null where no usable reading."""

    tag: str
    time: list[str]
    value: list[float | None] | None = None
    quality: list[int] | None = None
    quality_name: list[str] | None = None
    min: list[float | None] | None = None
    max: list[float | None] | None = None
    avg: list[float | None] | None = None
    last: list[float | None] | None = None
    count: list[int] | None = None
    bad_count: list[int] | None = None


class HistoryOut(BaseModel):
    start: datetime
    end: datetime
    bucket_s: int | None = Field(description="null: raw readings")
    source: str = Field(description="reading (raw) or reading_1m (rollup)")
    series: list[Series]

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "start": "2026-11-01T00:00:00Z",
                    "end": "2026-11-01T00:03:00Z",
                    "bucket_s": 60,
                    "source": "reading_1m",
                    "series": [
                        {
                            "tag": "AA.V1.LT1",
                            "time": ["2026-11-01T00:00:00Z", "2026-11-01T00:01:00Z", "2026-11-01T00:02:00Z"],
                            "min": [7.1, 7.2, None],
                            "max": [7.4, 7.5, None],
                            "avg": [7.2, 7.3, None],
                            "last": [7.3, 7.5, 0.0],
                            "count": [60, 60, 0],
                            "bad_count": [0, 0, 60],
                        }
                    ],
                }
            ]
        }
    }


class FloodWindow(BaseModel):
    start: datetime
    count: int


class Chatter(BaseModel):
    key: str
    annunciations: int
    most_in_60s: int


class StaleAlarm(BaseModel):
    key: str
    raised_at: datetime


class Contributor(BaseModel):
    key: str
    count: int
    share_pct: float


class PriorityShare(BaseModel):
    priority: str
    count: int
    pct: float


class Check(BaseModel):
    name: str
    value: float
    target: str
    verdict: str = Field(examples=["OK", "WARN", "BAD", "NO_DATA"])


class AlarmKpis(BaseModel):
    """EEMUA 191 / ISA-18.2 alarm KPIs of the alarms in the caller's scope (alarms/kpi.py)."""

    start: datetime
    end: datetime
    now: datetime
    annunciations: int
    windows: int
    per_10min: float
    per_day: float
    peak_10min: int
    flood_windows: list[FloodWindow]
    flood_pct: float
    chattering: list[Chatter]
    stale: list[StaleAlarm]
    top: list[Contributor]
    priorities: list[PriorityShare]
    shelved: int
    suppressed: int
    out_of_service: int
    acked: int
    unacked: int
    ack_mean_s: float | None
    ack_p90_s: float | None
    checks: list[Check]


class PointRate(BaseModel):
    tag: str
    enterprise: str
    hazard_source: str
    rate: float | None = Field(description="null: out of service")
    sampling: Sampling


class GroupRate(BaseModel):
    code: str
    enterprise: str | None = Field(default=None, description="a hazard source's enterprise")
    rate: float | None
    points: int


class OnlineKpis(BaseModel):
    start: datetime
    end: datetime
    definition: str
    enterprises: list[GroupRate]
    hazard_sources: list[GroupRate]
    points: list[PointRate]

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "start": "2026-11-29T08:00:00Z",
                    "end": "2026-11-30T08:00:00Z",
                    "definition": "share of expected samples received usable (reading_1m)",
                    "enterprises": [{"code": "AA", "enterprise": None, "rate": 0.996, "points": 4}],
                    "hazard_sources": [{"code": "AA-HS1", "enterprise": "AA", "rate": 0.995, "points": 3}],
                    "points": [
                        {
                            "tag": "AA.V1.PT1",
                            "enterprise": "AA",
                            "hazard_source": "AA-HS1",
                            "rate": 0.995,
                            "sampling": {"device": "plc", "interval_s": 1.0, "changes_only": False},
                        }
                    ],
                }
            ]
        }
    }


DEFINITION = (
    "share of the window's expected samples that arrived usable (GOOD or UNCERTAIN), from reading_1m: "
    "a polled point expects one per device interval, counting at most ceil(60/interval) per minute; "
    "an OPC UA subscription (changes only) is online in a minute with a usable reading or whose "
    "newest earlier reading was usable; minutes still open in the writer are left out"
)


# --- helpers ----------------------------------------------------------------------------


def _invalid(field: str, msg: str, value: Any) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", field), "msg": msg, "input": value}]
    )


def _unknown(what: str, value: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"unknown {what} {value}")


def _index(state: ApiState) -> PlantIndex:
    index = state.extras.get("plant_index")
    if not isinstance(index, PlantIndex) or index.plant is not state.plant:
        index = state.extras["plant_index"] = PlantIndex(state.plant)
    return index


def _window(
    start: datetime | None, end: datetime | None, default: timedelta, max_days: int
) -> tuple[datetime, datetime]:
    for name, value in (("start", start), ("end", end)):
        if value is not None and not _EARLIEST <= value <= _LATEST:
            raise _invalid(
                name, f"{name} must lie in {_EARLIEST.year}..{_LATEST.year - 1}", value.isoformat()
            )
    end = end or datetime.now(UTC)
    start = start or end - default
    if end <= start:
        raise _invalid("end", "end must be after start", end.isoformat())
    if end - start > timedelta(days=max_days):
        raise _invalid(
            "start", f"the window may be at most {max_days} days (api.max_history_days)", start.isoformat()
        )
    return start.astimezone(UTC), end.astimezone(UTC)


async def _enterprise_in_scope(db: Db, who: Principal, code: str | None) -> None:
    if code is not None and not await views.enterprises(db, who.scope, code):
        raise _unknown("enterprise", code)


async def _hazard_source_in_scope(db: Db, who: Principal, code: str | None, enterprise: str | None) -> None:
    if code is not None and not await views.hazard_sources(db, who.scope, enterprise=enterprise, code=code):
        raise _unknown("hazard source", code)


def _latest(row: views.TagRow) -> Latest | None:
    if row.time is None or row.quality is None:
        return None
    value = row.value if row.value is not None and math.isfinite(row.value) else None
    return Latest(time=row.time, value=value, quality=row.quality, quality_name=name_of(row.quality))


def _tag(row: views.TagRow, index: PlantIndex) -> Tag:
    configured = index.tags.get(row.key)
    limits = None
    if configured is not None and configured.limits is not None:
        lim = configured.limits
        if any(v is not None for v in (lim.ll, lim.l, lim.h, lim.hh)):
            limits = Limits(ll=lim.ll, l=lim.l, h=lim.h, hh=lim.hh)
    has_range = row.range_lo is not None and row.range_hi is not None
    return Tag(
        key=row.key,
        enterprise=row.enterprise,
        hazard_source=row.hazard_source,
        equipment=row.equipment,
        name=row.name,
        kind=row.kind,
        unit=row.unit,
        range=(row.range_lo, row.range_hi) if has_range else None,
        in_service=row.in_service,
        limits=limits,
        latest=_latest(row),
    )


def _sampling(x: Expectation) -> Sampling:
    return Sampling(device=x.device, interval_s=x.interval_s, changes_only=x.changes_only)


async def _rates(
    db: Db, index: PlantIndex, rows: list[views.TagRow], start: datetime, end: datetime
) -> dict[str, float | None]:
    """Online rate per tag key; None for a point out of service."""
    serving = [r for r in rows if r.in_service]
    got = await online_rates(
        db, [(r.id, index.expectation(r.key)) for r in serving], start, end, datetime.now(UTC)
    )
    return {r.key: got.get(r.id) if r.in_service else None for r in rows}


async def _recent_rates(db: Db, state: ApiState, rows: list[views.TagRow]) -> dict[str, float | None]:
    """The lists' last-24-h rate per tag key, each kept RECENT_TTL_S in this process: a bureau's
    overview lists every point of its jurisdiction, and a 24 h window moves little in a minute."""
    cache: dict[int, tuple[float, float | None]] = state.extras.setdefault("online_24h", {})
    clock = time.monotonic()
    for stale in [k for k, (at, _) in cache.items() if clock - at > RECENT_TTL_S]:
        del cache[stale]
    missing = [r for r in rows if r.in_service and r.id not in cache]
    if missing:
        now = datetime.now(UTC)
        index = _index(state)
        got = await online_rates(
            db, [(r.id, index.expectation(r.key)) for r in missing], now - ONLINE_WINDOW, now, now
        )
        for r in missing:
            cache[r.id] = (clock, got.get(r.id))
    return {r.key: cache[r.id][1] if r.in_service else None for r in rows}


def _r_value(attrs: dict[str, Any]) -> float | None:
    r = attrs.get("r")
    return float(r) if isinstance(r, int | float) else None


# --- enterprises --------------------------------------------------------------------------


async def _enterprise_list(db: Db, state: ApiState, who: Principal, code: str | None) -> list[Enterprise]:
    rows = await views.enterprises(db, who.scope, code)
    counts = await views.alarm_counts(db, who.scope, by="enterprise", enterprise=code)
    tag_rows, _ = await views.tags(db, who.scope, enterprise=code)
    rates = await _recent_rates(db, state, tag_rows)
    per_enterprise: dict[str, list[float | None]] = {}
    for t in tag_rows:
        per_enterprise.setdefault(t.enterprise, []).append(rates[t.key])
    return [
        Enterprise(
            code=r.code,
            name=r.name,
            county=r.county,
            hazard_sources=r.hazard_sources,
            tags=r.tags,
            alarms=AlarmCounts.of(counts.get((r.code,))),
            status=(counts.get((r.code,)) or views.AlarmCounts()).worst,
            online_rate=mean_rate(per_enterprise.get(r.code, [])),
        )
        for r in rows
    ]


@router.get(
    "/enterprises",
    response_model=list[Enterprise],
    summary="Enterprises in the caller's scope",
    description="Code, name, county, hazard source and tag counts, active alarms by priority, "
    "unacknowledged count and the 24 h online rate, by code.",
)
async def list_enterprises(who: Caller, db: Db, state: State) -> list[Enterprise]:
    return await _enterprise_list(db, state, who, None)


@router.get(
    "/enterprises/{enterprise}",
    response_model=Enterprise,
    summary="One enterprise",
    responses=NOT_FOUND,
)
async def get_enterprise(enterprise: str, who: Caller, db: Db, state: State) -> Enterprise:
    found = await _enterprise_list(db, state, who, enterprise)
    if not found:
        raise _unknown("enterprise", enterprise)
    return found[0]


# --- hazard sources -------------------------------------------------------------------------


async def _hazard_source_list(
    db: Db, state: ApiState, who: Principal, enterprise: str | None, code: str | None
) -> tuple[list[HazardSource], list[views.HazardSourceRow], list[views.TagRow]]:
    rows = await views.hazard_sources(db, who.scope, enterprise=enterprise, code=code)
    counts = await views.alarm_counts(db, who.scope, by="hazard_source", enterprise=enterprise)
    tag_rows, _ = await views.tags(db, who.scope, enterprise=enterprise, hazard_source=code)
    rates = await _recent_rates(db, state, tag_rows)
    per_source: dict[tuple[str, str], list[float | None]] = {}
    for t in tag_rows:
        per_source.setdefault((t.enterprise, t.hazard_source), []).append(rates[t.key])
    out = []
    for r in rows:
        c = counts.get((r.enterprise, r.code))
        out.append(
            HazardSource(
                enterprise=r.enterprise,
                code=r.code,
                name=r.name,
                kind=r.kind,
                grade=r.grade,
                r=_r_value(r.attrs),
                tags=r.tags,
                status=(c or views.AlarmCounts()).worst,
                alarms=AlarmCounts.of(c),
                online_rate=mean_rate(per_source.get((r.enterprise, r.code), [])),
            )
        )
    return out, rows, tag_rows


@router.get(
    "/hazard-sources",
    response_model=list[HazardSource],
    summary="Hazard sources (重大危险源) in the caller's scope",
    description="Grade, R when computed, status (worst active alarm priority), active alarm counts "
    "and the 24 h online rate, by enterprise and code; `enterprise` narrows to one enterprise.",
    responses={**NOT_FOUND, **INVALID},
)
async def list_hazard_sources(
    who: Caller,
    db: Db,
    state: State,
    enterprise: Annotated[str | None, Query(description="enterprise code", examples=["AA"])] = None,
) -> list[HazardSource]:
    await _enterprise_in_scope(db, who, enterprise)
    return (await _hazard_source_list(db, state, who, enterprise, None))[0]


@router.get(
    "/hazard-sources/{hazard_source}",
    response_model=HazardSourceDetail,
    summary="One hazard source with its tags",
    responses=NOT_FOUND,
)
async def get_hazard_source(hazard_source: str, who: Caller, db: Db, state: State) -> HazardSourceDetail:
    found, rows, tag_rows = await _hazard_source_list(db, state, who, None, hazard_source)
    if not found:
        raise _unknown("hazard source", hazard_source)
    index = _index(state)
    tag_list = [_tag(t, index) for t in tag_rows if t.enterprise == found[0].enterprise]
    quality = QualitySummary()
    for t in tag_list:
        if t.latest is None:
            quality.no_data += 1
        elif t.latest.quality & 0xC0 == 0xC0:
            quality.good += 1
        elif t.latest.quality & 0xC0 == 0x40:
            quality.uncertain += 1
        else:
            quality.bad += 1
    return HazardSourceDetail(
        **found[0].model_dump(),
        substances=list(rows[0].attrs.get("substances", [])),
        quality=quality,
        tag_list=tag_list,
    )


# --- tags ---------------------------------------------------------------------------------------


@router.get(
    "/tags",
    response_model=TagPage,
    summary="Tags: metadata, alarm limits and latest value",
    description="Tags in the caller's scope by key, one page (`limit`, `offset`); filters by "
    "enterprise, hazard source and kind. Latest value and quality come from tag_latest.",
    responses={**NOT_FOUND, **INVALID},
)
async def list_tags(
    who: Caller,
    db: Db,
    state: State,
    enterprise: Annotated[str | None, Query(description="enterprise code", examples=["AA"])] = None,
    hazard_source: Annotated[str | None, Query(description="hazard source code", examples=["AA-HS1"])] = None,
    kind: Annotated[TagKind | None, Query(description="tag kind")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> TagPage:
    await _enterprise_in_scope(db, who, enterprise)
    await _hazard_source_in_scope(db, who, hazard_source, enterprise)
    rows, total = await views.tags(
        db,
        who.scope,
        enterprise=enterprise,
        hazard_source=hazard_source,
        kind=kind.value if kind else None,
        limit=limit,
        offset=offset,
    )
    index = _index(state)
    return TagPage(total=total, limit=limit, offset=offset, items=[_tag(r, index) for r in rows])


@router.get(
    "/tags/{tag}",
    response_model=TagDetail,
    summary="One tag: metadata, limits, latest value, sampling and active alarms",
    responses=NOT_FOUND,
)
async def get_tag(tag: str, who: Caller, db: Db, state: State) -> TagDetail:
    row = (await views.tags_by_key(db, who.scope, [tag])).get(tag)
    if row is None:
        raise _unknown("tag", tag)
    index = _index(state)
    alarms = await views.active_alarms_of(db, tag)
    return TagDetail(
        **_tag(row, index).model_dump(),
        retired=row.retired,
        sampling=_sampling(index.expectation(tag)),
        active_alarms=[ActiveAlarm(**a) for a in alarms],
    )


# --- history ----------------------------------------------------------------------------------


def _bucket(text: str, window: timedelta, tags: list[views.TagRow], index: PlantIndex) -> int | None:
    """Bucket width in seconds (None: raw) for ``bucket=`` raw | auto | <seconds>."""
    if text == "auto":
        fastest = min(index.expectation(t.key).interval_s for t in tags)
        return auto_bucket(window, fastest).seconds
    if text == "raw":
        if window > RAW_MAX_WINDOW:
            raise _invalid(
                "bucket", "raw readings only for windows of at most 1 day: use auto or seconds", text
            )
        return None
    if not text.isdecimal() or int(text) < 1 or int(text) > 366 * 86400:
        raise _invalid("bucket", "bucket is raw, auto or a whole number of seconds (1 .. 31622400)", text)
    seconds = int(text)
    if seconds % 60 and window > RAW_MAX_WINDOW:
        raise _invalid(
            "bucket", "buckets that are not whole minutes read raw readings: windows of at most 1 day", text
        )
    return seconds


def _wants_csv(request: Request, fmt: str | None) -> bool:
    if fmt is not None:
        return fmt == "csv"
    accept = request.headers.get("accept", "")
    return "text/csv" in accept and "application/json" not in accept


@router.get(
    "/history",
    response_model=HistoryOut,
    summary="History of up to 20 tags: raw readings or buckets, JSON or CSV",
    description=(
        "Readings in [start, end). `bucket`: `raw`, `auto` (at most ~2000 points per tag; raw only "
        "for windows of a day or less, rollups from reading_1m beyond) or a width in seconds "
        "(whole minutes read reading_1m). `format=csv` (or `Accept: text/csv`) streams an attachment "
        "with a header row: time,tag,value,quality,quality_name for raw rows, "
        "time,tag,min,max,avg,last,count,bad_count for buckets. Bounds: api.max_history_days, "
        "api.max_history_points."
    ),
    responses={
        **NOT_FOUND,
        **INVALID,
        200: {"content": {"text/csv": {"example": "time,tag,value,quality,quality_name\n"}}},
    },
)
async def get_history(
    request: Request,
    who: Caller,
    db: Db,
    state: State,
    tags: Annotated[
        list[str],
        Query(
            min_length=1,
            max_length=MAX_HISTORY_TAGS,
            description="tag keys (repeat)",
            examples=[["AA.V1.LT1"]],
        ),
    ],
    start: Annotated[AwareDatetime, Query(description="inclusive, ISO 8601 with offset")],
    end: Annotated[AwareDatetime, Query(description="exclusive, ISO 8601 with offset")],
    bucket: Annotated[
        str, Query(max_length=12, description="raw | auto | seconds", examples=["auto", "60"])
    ] = "auto",
    format: Annotated[Literal["json", "csv"] | None, Query(description="default: json")] = None,
) -> Any:
    s = state.settings
    start, end = _window(start, end, timedelta(0), s.max_history_days)
    keys = list(dict.fromkeys(tags))
    found = await views.tags_by_key(db, who.scope, keys)
    for k in keys:
        if k not in found:
            raise _unknown("tag", k)
    rows = [found[k] for k in keys]
    index = _index(state)
    window = end - start
    width = _bucket(bucket, window, rows, index)
    if (
        width is not None
        and (math.ceil(window.total_seconds() / width) + 1) * len(rows) > s.max_history_points
    ):
        raise _invalid(
            "bucket", f"more than {s.max_history_points} points (api.max_history_points): widen it", bucket
        )
    key_of = {r.id: r.key for r in rows}
    h = await history(db, sorted(key_of), to_us(start), to_us(end), None if width is None else float(width))
    if len(h) > s.max_history_points:
        raise _invalid(
            "bucket",
            f"{len(h)} readings exceed {s.max_history_points} (api.max_history_points): use a bucket",
            bucket,
        )
    raw = width is None
    if _wants_csv(request, format):
        name = f"history-{start:%Y%m%dT%H%M%SZ}-{end:%Y%m%dT%H%M%SZ}.csv"
        return StreamingResponse(
            csv_rows(h, key_of, raw),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    head: dict[str, object] = {
        "start": start.isoformat().replace("+00:00", "Z"),
        "end": end.isoformat().replace("+00:00", "Z"),
        "bucket_s": width,
        "source": h.source,
    }
    # Written by orjson from the numpy columns, not validated through HistoryOut (which only
    # documents it): 10^5 points as Python objects would cost more than the query.
    return Response(json_body(h, key_of, keys, raw, head), media_type="application/json")


# --- KPIs -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class KpiFilter:
    enterprise: str | None
    hazard_source: str | None
    start: datetime
    end: datetime


async def _kpi_filter(
    who: Caller,
    db: Db,
    state: State,
    enterprise: Annotated[str | None, Query(description="enterprise code")] = None,
    hazard_source: Annotated[str | None, Query(description="hazard source code")] = None,
    start: Annotated[AwareDatetime | None, Query(description="default: end - 24 h")] = None,
    end: Annotated[AwareDatetime | None, Query(description="default: now")] = None,
) -> KpiFilter:
    """The KPI routes' window (default the last 24 h) and filters, each in the caller's scope
    (404 as unknown otherwise)."""
    start, end = _window(start, end, KPI_WINDOW, state.settings.max_history_days)
    await _enterprise_in_scope(db, who, enterprise)
    await _hazard_source_in_scope(db, who, hazard_source, enterprise)
    return KpiFilter(enterprise, hazard_source, start, end)


@router.get(
    "/kpis/alarms",
    response_model=AlarmKpis,
    summary="Alarm KPIs (EEMUA 191 / ISA-18.2) of the caller's scope",
    description="Annunciation rates, floods, chattering, stale, top contributors, priority mix and "
    "acknowledgement times over [start, end) (default: the last 24 h).",
    responses={**NOT_FOUND, **INVALID},
)
async def get_alarm_kpis(who: Caller, db: Db, f: Annotated[KpiFilter, Depends(_kpi_filter)]) -> AlarmKpis:
    enterprise, hazard_source, start, end = f.enterprise, f.hazard_source, f.start, f.end
    scope = who.scope
    kpis = await alarm_kpis(
        db,
        start=start,
        end=end,
        enterprise=enterprise or scope.enterprise,
        county=scope.county,
        hazard_source=hazard_source,
        now=min(end, datetime.now(UTC)),
    )
    return AlarmKpis.model_validate(dataclasses.asdict(kpis))


@router.get(
    "/kpis/online",
    response_model=OnlineKpis,
    summary="Data online rate (数据在线率) per point, hazard source and enterprise",
    description=DEFINITION + ". Window [start, end), default the last 24 h, whole minutes.",
    responses={**NOT_FOUND, **INVALID},
)
async def get_online_kpis(
    who: Caller, db: Db, state: State, f: Annotated[KpiFilter, Depends(_kpi_filter)]
) -> OnlineKpis:
    enterprise, hazard_source, start, end = f.enterprise, f.hazard_source, f.start, f.end
    rows, _ = await views.tags(db, who.scope, enterprise=enterprise, hazard_source=hazard_source)
    index = _index(state)
    rates = await _rates(db, index, rows, start, end)
    by_enterprise: dict[str, list[float | None]] = {}
    by_source: dict[tuple[str, str], list[float | None]] = {}
    for r in rows:
        by_enterprise.setdefault(r.enterprise, []).append(rates[r.key])
        by_source.setdefault((r.enterprise, r.hazard_source), []).append(rates[r.key])
    return OnlineKpis(
        start=start,
        end=end,
        definition=DEFINITION,
        enterprises=[
            GroupRate(code=e, rate=mean_rate(v), points=len(v)) for e, v in sorted(by_enterprise.items())
        ],
        hazard_sources=[
            GroupRate(code=h, enterprise=e, rate=mean_rate(v), points=len(v))
            for (e, h), v in sorted(by_source.items())
        ],
        points=[
            PointRate(
                tag=r.key,
                enterprise=r.enterprise,
                hazard_source=r.hazard_source,
                rate=rates[r.key],
                sampling=_sampling(index.expectation(r.key)),
            )
            for r in rows
        ],
    )
