"""A PostgreSQL panel query's rawSql as Grafana 11/12 sends it to the database, so tests and the
benchmark run exactly that text. Three passes, in Grafana's order: the browser's template
interpolation (grafana/scenes sceneInterpolator + SqlDatasource.interpolateVariable), the backend's
global substitutions (sqleng Interpolate), then the PostgreSQL macro engine (macros.go). Each pass
copies its source's quirks on purpose — a macro argument with a comma or a nested ')' breaks in
Grafana, so it must break here too.
"""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from urllib.parse import quote

__all__ = [
    "SQL_DATASOURCE_MIN_INTERVAL",
    "MacroError",
    "TimeRange",
    "Variable",
    "expand",
    "format_interval",
    "interval_for",
    "round_interval",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# SqlDatasource: `this.interval = settingsData.timeInterval || '1m'`, the lower bound when neither the
# panel nor the datasource sets a min interval.
SQL_DATASOURCE_MIN_INTERVAL = timedelta(minutes=1)


class MacroError(ValueError):
    """A query Grafana would refuse: its backend's macro error text (``unknown macro "__x"``,
    ``error parsing interval b``…), or a template feature this module does not reproduce."""


@dataclass(frozen=True, slots=True)
class TimeRange:
    """The dashboard's absolute time range; Grafana ships it to the backend in whole milliseconds."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.utcoffset() is None or self.end.utcoffset() is None:
            raise ValueError("TimeRange needs timezone-aware datetimes")
        if self.start > self.end:
            raise ValueError(f"TimeRange reversed: {self.start.isoformat()} > {self.end.isoformat()}")

    @property
    def from_ms(self) -> int:
        return (self.start - _EPOCH) // _MS

    @property
    def to_ms(self) -> int:
        return (self.end - _EPOCH) // _MS


@dataclass(frozen=True, slots=True)
class Variable:
    """A dashboard variable's current value: a str for one selection, a sequence for a multi
    selection or for All (then every option's value; a custom allValue is not modelled)."""

    name: str
    value: str | Sequence[str]
    multi: bool = False
    include_all: bool = False


# rangeutil.roundInterval: (upper bound exclusive, result), in milliseconds.
_ROUND_MS: tuple[tuple[float, int], ...] = (
    (10, 1), (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000),
    (3500, 2000), (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000), (45000, 30000),
    (90000, 60000), (210000, 120000), (450000, 300000), (750000, 600000), (1050000, 900000),
    (1500000, 1200000), (2700000, 1800000), (5400000, 3600000), (9000000, 7200000),
    (16200000, 10800000), (32400000, 21600000), (86400000, 43200000), (604800000, 86400000),
    (1814400000, 604800000), (3628800000, 2592000000),
)  # fmt: skip


def round_interval(seconds: float) -> timedelta:
    """Grafana's roundInterval table (packages/grafana-data rangeutil.ts)."""
    return _round_ms(seconds * 1000)


def _round_ms(ms: float) -> timedelta:
    for bound, result in _ROUND_MS:
        if ms < bound:
            return timedelta(milliseconds=result)
    return timedelta(milliseconds=31536000000)


def interval_for(
    rng: TimeRange, max_data_points: int = 1000, min_interval: timedelta | None = None
) -> timedelta:
    """rangeutil.calculateInterval: the rounded span per data point, raised to the lower limit
    (the panel's min interval, else the datasource's timeInterval, else the SQL default 1m).
    Grafana's maxDataPoints is the panel's own setting, else its width in pixels."""
    if max_data_points <= 0:
        raise ValueError("max_data_points must be positive")
    low = SQL_DATASOURCE_MIN_INTERVAL if min_interval is None else min_interval
    rounded = _round_ms((rng.to_ms - rng.from_ms) / max_data_points)  # in ms, as Grafana divides
    return max(rounded, low)


def format_interval(td: timedelta) -> str:
    """rangeutil.secondsToHms, which prints $__interval: only the largest whole unit (90 s → "1m")."""
    rest = td / timedelta(seconds=1)
    for size, unit in ((31536000, "y"), (86400, "d"), (3600, "h"), (60, "m"), (1, "s")):
        if count := int(rest // size):
            return f"{count}{unit}"
        rest %= size
    ms = int((td / timedelta(seconds=1)) * 1000.0 // 1)
    return f"{ms}ms" if ms else "less than a millisecond"


# ---- pass 1: the browser (grafana/scenes sceneInterpolator, VARIABLE_REGEX from variables/constants.ts)

_VARIABLE_RE = re.compile(
    r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}", re.ASCII
)
# scenes macrosIndex entries this module does not compute; a panel query using one fails loudly.
_UNREPRODUCED_MACROS = frozenset(
    {"__all_variables", "__url_time_range", "__value", "__data", "__series", "__field", "__url",
     "__timezone", "__user", "__org", "__dashboard"}
)  # fmt: skip
_Value = str | int | list[str]


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_interpolate(value: _Value, multi: bool, include_all: bool) -> str:
    """SqlDatasource.interpolateVariable: a single plain value is escaped but NOT quoted."""
    if isinstance(value, str):
        return _quote_literal(value) if multi or include_all else value.replace("'", "''")
    if isinstance(value, int):
        return str(value)
    return ",".join(_quote_literal(v) for v in value)


def _js_string(value: _Value) -> str:
    return ",".join(value) if isinstance(value, list) else str(value)


def _each(value: _Value, fn: Callable[[str], str]) -> str:
    return ",".join(fn(v) for v in value) if isinstance(value, list) else fn(str(value))


def _percent(value: str) -> str:
    return quote(value, safe="-_.~")  # encodeURIComponent, then !'()* escaped too


def _date(value: _Value, args: list[str]) -> str:
    if isinstance(value, int):
        ms: int | None = value
    elif isinstance(value, str) and (m := re.match(r"\s*([+-]?\d+)", value, re.ASCII)):
        ms = int(m.group(1))
    else:
        ms = None
    if ms is None:
        return "NaN"
    arg = args[0] if args else "iso"
    if arg == "ms":
        return _js_string(value)
    if arg == "seconds":
        return str((ms + 500) // 1000)  # Math.round
    if arg == "iso":
        return (_EPOCH + ms * _MS).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    raise MacroError(f"date format {':'.join(args)!r} uses the browser's time zone; not reproduced")


_FORMATS: dict[str, Callable[[_Value, list[str], str], str]] = {
    "raw": lambda v, a, n: _js_string(v),
    "csv": lambda v, a, n: _js_string(v),
    "pipe": lambda v, a, n: "|".join(v) if isinstance(v, list) else str(v),
    "join": lambda v, a, n: (a[0] if a else ",").join(v) if isinstance(v, list) else str(v),
    "distributed": lambda v, a, n: (
        ",".join([v[0], *(f"{n}={x}" for x in v[1:])]) if isinstance(v, list) and v else _js_string(v)
    ),
    "glob": lambda v, a, n: "{" + ",".join(v) + "}" if isinstance(v, list) and len(v) > 1 else _js_string(v),
    "json": lambda v, a, n: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, separators=(",", ":")),
    "sqlstring": lambda v, a, n: _each(v, lambda s: "'" + s.replace("'", "''").replace('"', '\\"') + "'"),
    "singlequote": lambda v, a, n: _each(v, lambda s: "'" + s.replace("'", "\\'") + "'"),
    "doublequote": lambda v, a, n: _each(v, lambda s: '"' + s.replace('"', '\\"') + '"'),
    "percentencode": lambda v, a, n: _percent("{" + ",".join(v) + "}" if isinstance(v, list) else str(v)),
    "date": lambda v, a, n: _date(v, a),
}  # fmt: skip
_UNREPRODUCED_FORMATS = frozenset(
    {"lucene", "regex", "html", "text", "queryparam", "customqueryparam", "percentencodeuri"}
)


def _format(name: str, value: _Value, fmt: str | None, multi: bool, include_all: bool) -> str:
    if fmt is None:
        return _sql_interpolate(value, multi, include_all)
    fmt_id, *args = fmt.split(":")
    if fmt_id in _UNREPRODUCED_FORMATS:
        raise MacroError(f"variable format {fmt_id!r} (in ${{{name}:{fmt}}}) is not reproduced")
    # sceneInterpolator: an unknown format falls back to glob.
    return _FORMATS.get(fmt_id, _FORMATS["glob"])(value, args, name)


def _browser_pass(sql: str, rng: TimeRange, interval: timedelta, variables: Sequence[Variable]) -> str:
    by_name = {v.name: v for v in variables}
    interval_ms = interval // _MS
    scoped: dict[str, _Value] = {"__interval": format_interval(interval), "__interval_ms": interval_ms}
    macros: dict[str, _Value] = {"__from": rng.from_ms, "__to": rng.to_ms}

    def replace(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(6)
        multi = include_all = False
        if name in scoped:  # SceneQueryRunner's request.scopedVars come first
            value: _Value = scoped[name]
        elif name in by_name:
            var = by_name[name]
            value = var.value if isinstance(var.value, str) else list(var.value)
            multi, include_all = var.multi, var.include_all
        elif name in macros:
            value = macros[name]
        elif name in _UNREPRODUCED_MACROS:
            raise MacroError(f"${name} is a Grafana global this module does not reproduce")
        else:
            return m.group(0)  # unknown: left as written, as Grafana does
        if m.group(5) is not None:
            raise MacroError(f"field path in {m.group(0)} is not reproduced")
        return _format(name, value, fmt, multi, include_all)

    return _VARIABLE_RE.sub(replace, sql)


# ---- pass 2: sqleng.Interpolate (global substitutions on the backend)


def _go_format_interval(ns: int) -> str:
    """gtime.FormatInterval."""
    for size, unit in ((365 * 86400 * 10**9, "y"), (86400 * 10**9, "d"), (3600 * 10**9, "h"),
                       (60 * 10**9, "m"), (10**9, "s"), (10**6, "ms")):  # fmt: skip
        if ns >= size:
            return f"{ns // size}{unit}"
    return "1ms"


def _backend_pass(sql: str, rng: TimeRange, interval: timedelta) -> str:
    ns = interval // timedelta(microseconds=1) * 1000
    sql = sql.replace("$__interval_ms", str(ns // 10**6))
    sql = sql.replace("$__interval", _go_format_interval(ns))
    sql = sql.replace("$__unixEpochFrom()", str(rng.from_ms // 1000))
    return sql.replace("$__unixEpochTo()", str(rng.to_ms // 1000))


# ---- pass 3: grafana-postgresql-datasource macros.go

_MACRO_RE = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")
_GO_UNITS_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
                "h": 3600 * 10**9}  # fmt: skip
_GO_DURATION_PART = re.compile(r"(\d*)(?:\.(\d*))?([^\d.]*)", re.ASCII)


def _go_parse_duration(text: str) -> int | None:
    """time.ParseDuration, in nanoseconds; None where Go returns an error."""
    s, sign = text, 1
    if s[:1] in ("-", "+"):
        sign, s = (-1 if s[0] == "-" else 1), s[1:]
    if s == "0":
        return 0
    if not s:
        return None
    total = Fraction(0)
    while s:
        m = _GO_DURATION_PART.match(s)
        if m is None or not (m.group(1) or m.group(2)) or m.group(3) not in _GO_UNITS_NS:
            return None
        number = Fraction(int(m.group(1) or "0")) + (
            Fraction(int(m.group(2)), 10 ** len(m.group(2))) if m.group(2) else 0
        )
        total += number * _GO_UNITS_NS[m.group(3)]
        s = s[m.end() :]
    return sign * int(total)


def _go_parse_interval(text: str, now: datetime) -> int | None:
    """gtime.ParseInterval, in nanoseconds: d/w/M/y are calendar steps from now, in UTC."""
    m = re.fullmatch(r"(\d+)([dwMy])", text, re.ASCII)
    if m is None:
        return _go_parse_duration(text)
    num, unit = int(m.group(1)), m.group(2)
    if unit in "dw":
        return num * (7 if unit == "w" else 1) * 86400 * 10**9
    now = now.astimezone(UTC)
    months = now.month - 1 + (num if unit == "M" else 12 * num)
    year, month = now.year + months // 12, months % 12 + 1
    # Go's AddDate normalises an overflowing day (31 Jan + 1M = 3 Mar).
    overflow = now.day - calendar.monthrange(year, month)[1]
    later = now.replace(year=year, month=month, day=min(now.day, calendar.monthrange(year, month)[1]))
    later += timedelta(days=max(overflow, 0))
    return (later - now) // timedelta(microseconds=1) * 1000


def _go_float(x: float) -> str:
    """Go's %v of a float64: shortest digits, exponent form from 1e+06 up and below 1e-04."""
    if x == 0:
        return "0"
    sign, digits, exp = Decimal(repr(x)).normalize().as_tuple()
    assert isinstance(exp, int)
    ds = "".join(map(str, digits))
    point = len(ds) + exp  # digits before the decimal point
    e = point - 1
    neg = "-" if sign else ""
    if e < -4 or e >= 6:
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{neg}{mant}e{'-' if e < 0 else '+'}{abs(e):02d}"
    if point <= 0:
        return f"{neg}0.{'0' * -point}{ds}"
    if point >= len(ds):
        return f"{neg}{ds}{'0' * (point - len(ds))}"
    return f"{neg}{ds[:point]}.{ds[point:]}"


def _go_seconds(ns: int) -> float:
    """time.Duration.Seconds()."""
    sec, nsec = divmod(ns, 10**9) if ns >= 0 else (-((-ns) // 10**9), -((-ns) % 10**9))
    return float(sec) + float(nsec) / 1e9


def _rfc3339nano(ms: int) -> str:
    base = (_EPOCH + (ms // 1000) * timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{ms % 1000:03d}".rstrip("0")
    return f"{base}.{frac}Z" if frac else f"{base}Z"


def _macro(name: str, args: list[str], rng: TimeRange, timescaledb: bool) -> str:
    if name in ("__time", "__timeEpoch", "__timeFilter", "__unixEpochFilter", "__unixEpochNanoFilter") and (
        not args
    ):
        raise MacroError(f"missing time column argument for macro {name}")
    start, end = _rfc3339nano(rng.from_ms), _rfc3339nano(rng.to_ms)
    if name == "__time":
        return f'{args[0]} AS "time"'
    if name == "__timeEpoch":
        return f'extract(epoch from {args[0]}) as "time"'
    if name == "__timeFilter":
        return f"{args[0]} BETWEEN '{start}' AND '{end}'"
    if name == "__timeFrom":
        return f"'{start}'"
    if name == "__timeTo":
        return f"'{end}'"
    if name in ("__timeGroup", "__unixEpochGroup"):
        if len(args) < 2:
            raise MacroError(f"macro {name} needs time column and interval and optional fill value")
        ns = _go_parse_interval(args[1].strip("'"), rng.end)
        if ns is None:
            raise MacroError(f"error parsing interval {args[1]}")
        if len(args) == 3 and args[2] not in ("NULL", "previous") and not _go_float_ok(args[2]):
            raise MacroError(f"error parsing fill value {args[2]}")
        secs = _go_seconds(ns)
        if name == "__unixEpochGroup":
            return f"floor(({args[0]})/{_go_float(secs)})*{_go_float(secs)}"
        if timescaledb:
            return f"time_bucket('{secs:.3f}s',{args[0]})"
        return f"floor(extract(epoch from {args[0]})/{_go_float(secs)})*{_go_float(secs)}"
    if name in ("__timeGroupAlias", "__unixEpochGroupAlias"):
        return _macro(name.removesuffix("Alias"), args, rng, timescaledb) + ' AS "time"'
    if name == "__unixEpochFilter":
        return f"{args[0]} >= {rng.from_ms // 1000} AND {args[0]} <= {rng.to_ms // 1000}"
    if name == "__unixEpochNanoFilter":
        return f"{args[0]} >= {rng.from_ms * 10**6} AND {args[0]} <= {rng.to_ms * 10**6}"
    if name == "__unixEpochNanoFrom":
        return str(rng.from_ms * 10**6)
    if name == "__unixEpochNanoTo":
        return str(rng.to_ms * 10**6)
    raise MacroError(f'unknown macro "{name}"')


def _go_float_ok(text: str) -> bool:
    """strconv.ParseFloat accepts it (decimal, exponent, inf/nan; underscores are not modelled)."""
    return re.fullmatch(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|infinity|nan)", text,
                        re.ASCII | re.IGNORECASE) is not None  # fmt: skip


def _macro_pass(sql: str, rng: TimeRange, timescaledb: bool) -> str:
    errors: list[MacroError] = []

    def replace(m: re.Match[str]) -> str:
        name = m.group(1)
        # pre-5.3 compatibility: $__timeGroup directly followed by ',' gets the alias. Go looks the
        # text up with strings.Index, so the first occurrence of identical calls decides for all.
        if name == "__timeGroup":
            at = sql.find(m.group(0)) + len(m.group(0))
            if sql[at : at + 1] == ",":
                name = "__timeGroupAlias"
        args = [a.strip(" ") for a in m.group(2).split(",")]
        try:
            return _macro(name, args, rng, timescaledb)
        except MacroError as exc:
            errors.append(exc)
            return "macro_error()"

    out = _MACRO_RE.sub(replace, sql)
    if errors:
        raise errors[0]
    return out


def expand(
    sql: str,
    rng: TimeRange,
    *,
    interval: timedelta,
    variables: Sequence[Variable] = (),
    timescaledb: bool,
) -> str:
    """The SQL Grafana runs for a panel query ``sql`` over ``rng``; ``interval`` is the panel's
    (see interval_for), ``timescaledb`` the datasource's jsonData.timescaledb."""
    if interval < _MS or interval % _MS:
        raise ValueError(f"interval must be a whole number of milliseconds ≥ 1 ms, not {interval}")
    names = [v.name for v in variables]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate variable names in {names}")
    sql = _browser_pass(sql, rng, interval, variables)
    sql = _backend_pass(sql, rng, interval)
    return _macro_pass(sql, rng, timescaledb)
