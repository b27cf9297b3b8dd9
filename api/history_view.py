"""History for the API: the bucket a request gets, and its answer as JSON columns or CSV rows.

``auto`` picks the smallest width of a fixed ladder that keeps a window at or under
AUTO_POINTS buckets per tag; raw readings only for windows of at most RAW_MAX_WINDOW (then the
ladder's widths are whole minutes, so storage.queries serves them from reading_1m alone).
Times go out as ISO 8601 UTC ("Z"); NaN aggregates (no usable reading) as null / empty; JSON
numbers carry JSON_DIGITS significant digits, CSV the stored double exactly. The JSON body is
written by orjson straight from the numpy columns: no Python object per point.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import orjson

from core.clock import US_PER_S
from core.quality import name_of
from storage.queries import History

__all__ = [
    "AUTO_POINTS",
    "JSON_DIGITS",
    "RAW_MAX_WINDOW",
    "BucketChoice",
    "auto_bucket",
    "csv_rows",
    "json_body",
]

AUTO_POINTS = 2000  # per tag: a chart's width in pixels, roughly
RAW_MAX_WINDOW = timedelta(days=1)  # raw readings are never scanned for a wider window
# auto widths in seconds: every one from 60 up is whole minutes (reading_1m serves it)
_LADDER = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
# Far beyond any instrument's resolution, and a quarter shorter a body than 17-digit doubles
# (orjson formats either as fast); CSV keeps every digit.
JSON_DIGITS = 12
# numpy columns as JSON arrays (NaN and infinities as null); datetime64 as "...Z"
_ORJSON = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z
_STAMP = len(b'"2026-11-01T00:00:00Z",')  # one whole-second time in orjson's array text
_RAW_COLUMNS = ("time", "tag", "value", "quality", "quality_name")
_BUCKET_COLUMNS = ("time", "tag", "min", "max", "avg", "last", "count", "bad_count")


@dataclass(frozen=True, slots=True)
class BucketChoice:
    seconds: int | None  # None: raw readings


def auto_bucket(window: timedelta, min_interval_s: float) -> BucketChoice:
    """Raw when the tags' fastest sampling gives at most AUTO_POINTS readings in ``window``
    (and the window is at most RAW_MAX_WINDOW); else the smallest ladder width giving at most
    AUTO_POINTS buckets, never under a minute for a window over RAW_MAX_WINDOW."""
    seconds = window.total_seconds()
    if window <= RAW_MAX_WINDOW and seconds / max(min_interval_s, 1e-3) <= AUTO_POINTS:
        return BucketChoice(None)
    floor = 60 if window > RAW_MAX_WINDOW else 1
    need = max(floor, math.ceil(seconds / AUTO_POINTS))
    for width in _LADDER:
        if width >= need:
            return BucketChoice(width)
    return BucketChoice(math.ceil(need / 86400) * 86400)  # whole days beyond the ladder


def _iso(times_us: np.ndarray, raw: bool) -> list[str]:
    stamps = times_us.astype("datetime64[us]")
    return np.datetime_as_string(stamps, unit="us" if raw else "s", timezone="UTC").tolist()


def _significant(a: np.ndarray, digits: int) -> np.ndarray:
    """``a`` rounded to ``digits`` significant digits, vectorized. Dividing the rounded integer
    by an exact power of ten gives the double nearest the short decimal, whose shortest repr is
    short (a smaller body). Powers of ten beyond 10**22 are not exact doubles: values that would
    need one (|a| under 1e-11 or from 1e34) stay as stored, every digit."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        exp = np.floor(np.log10(np.abs(a)))
        k = (digits - 1 - np.where(np.isfinite(exp), exp, 0)).astype(np.int64)
        up = np.power(10.0, np.clip(k, 0, 22))
        down = np.power(10.0, np.clip(-k, 0, 22))
        out = np.where(k >= 0, np.round(a * up) / up, np.round(a / down) * down)
    # NaN stays NaN; a value too large to scale, or needing an inexact power, stays as is
    return np.where(np.isfinite(out) & (np.abs(k) <= 22), out, a)


def json_body(
    h: History,
    key_of: dict[int, str],
    order: list[str],
    raw: bool,
    head: dict[str, object],
) -> bytes:
    """The JSON answer: ``head`` (start, end, bucket_s, source) and one columnar series per
    requested tag (in request order, empty ones included)."""
    out: dict[str, dict[str, object]] = {}
    ids = np.array(sorted(key_of), dtype=np.int32)
    los = np.searchsorted(h.tag_id, ids, side="left").tolist()
    his = np.searchsorted(h.tag_id, ids, side="right").tolist()
    for tag_id, lo, hi in zip(ids.tolist(), los, his, strict=True):
        part = slice(lo, hi)
        s: dict[str, object] = {"tag": key_of[tag_id], "time": _json_times(h.time[part], raw)}
        if raw:
            s["value"] = _significant(h.last[part], JSON_DIGITS)
            q = np.ascontiguousarray(h.quality[part])
            s["quality"] = q
            s["quality_name"] = _names(q)
        else:
            for name in ("min", "max", "avg", "last"):
                s[name] = _significant(getattr(h, name)[part], JSON_DIGITS)
            s["count"] = np.ascontiguousarray(h.count[part])
            s["bad_count"] = np.ascontiguousarray(h.bad_count[part])
        out[key_of[tag_id]] = s
    return orjson.dumps({**head, "series": [out[k] for k in order]}, option=_ORJSON)


def _names(quality: np.ndarray) -> list[str]:
    """Quality names, one name_of call per distinct code (the list's strings are shared)."""
    codes, inverse = np.unique(quality, return_inverse=True)
    names = np.array([name_of(int(c)) for c in codes.tolist()], dtype=object)
    out: list[str] = names[inverse].tolist()
    return out


def _json_times(times_us: np.ndarray, raw: bool) -> orjson.Fragment:
    """The times as a JSON array of ISO 8601 UTC strings, the same text as ``_iso`` (whole
    seconds for buckets, always six fractional digits for raw readings), ~10x faster.

    orjson writes the whole seconds (fixed width for years 1000..9999: the API's window is
    1970..2200); raw readings' microseconds are spliced in as digits, column-wise."""
    n = len(times_us)
    if n == 0:
        return orjson.Fragment(b"[]")
    seconds = times_us // US_PER_S  # floor: the fraction below is never negative
    text = orjson.dumps(seconds.astype("datetime64[s]"), option=_ORJSON)
    if len(text) != n * _STAMP + 1:  # a year of other than four digits: the slow way
        return orjson.Fragment(orjson.dumps(_iso(times_us, raw)))
    if not raw:
        return orjson.Fragment(text)
    cells = np.frombuffer(text[1:-1] + b",", np.uint8).reshape(n, _STAMP)  # '"YYYY-MM-DDTHH:MM:SSZ",'
    out = np.empty((n, _STAMP + 7), np.uint8)
    out[:, :20] = cells[:, :20]
    out[:, 20] = ord(".")
    fraction = times_us - seconds * US_PER_S
    for i in range(6):
        out[:, 21 + i] = fraction // 10 ** (5 - i) % 10 + ord("0")
    out[:, 27:] = cells[:, 20:]  # 'Z",'
    return orjson.Fragment(b"[" + out.tobytes()[:-1] + b"]")


def csv_rows(h: History, key_of: dict[int, str], raw: bool, chunk: int = 5000) -> Iterator[str]:
    """The CSV text (header first), a chunk of rows at a time, ordered by tag then time."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_RAW_COLUMNS if raw else _BUCKET_COLUMNS)
    yield buf.getvalue()
    for lo in range(0, len(h), chunk):
        part = slice(lo, lo + chunk)
        buf.seek(0)
        buf.truncate()
        times = _iso(h.time[part], raw)
        tags = [key_of[int(i)] for i in h.tag_id[part].tolist()]
        if raw:
            q = h.quality[part].tolist()
            w.writerows(zip(times, tags, _cells(h.last[part]), q, [name_of(int(x)) for x in q], strict=True))
        else:
            w.writerows(
                zip(
                    times, tags, _cells(h.min[part]), _cells(h.max[part]), _cells(h.avg[part]),
                    _cells(h.last[part]), h.count[part].tolist(), h.bad_count[part].tolist(), strict=True,
                )
            )  # fmt: skip
        yield buf.getvalue()


def _cells(a: np.ndarray) -> list[str]:
    return ["" if v != v else repr(v) for v in a.tolist()]
