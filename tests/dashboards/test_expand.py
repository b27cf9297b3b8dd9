"""dashboards.expand against Grafana's own test cases and a real PostgreSQL/TimescaleDB.

Sources of the expected strings (grafana/grafana unless noted):
  M  pkg/tsdb/grafana-postgresql-datasource/macros_test.go (TestMacroEngine)
  S  public/app/features/plugins/sql/datasource/SqlDatasource.ts (interpolateVariable)
  F  grafana/scenes packages/scenes/src/variables/interpolation/formatRegistry.ts
  R  packages/grafana-data/src/datetime/rangeutil.ts (roundInterval, calculateInterval, secondsToHms)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest

from dashboards.expand import (
    MacroError,
    TimeRange,
    Variable,
    expand,
    format_interval,
    interval_for,
    round_interval,
)
from storage.db import Backend
from tests.support.databases import migrated_db

# M: "Given a time range between 2018-04-12 00:00 and 2018-04-12 00:05"
GO_RANGE = TimeRange(datetime(2018, 4, 12, 18, 0, tzinfo=UTC), datetime(2018, 4, 12, 18, 5, tzinfo=UTC))
MINUTE = timedelta(minutes=1)


def _x(sql: str, *, ts: bool = False, rng: TimeRange = GO_RANGE, variables: tuple[Variable, ...] = ()) -> str:
    return expand(sql, rng, interval=MINUTE, variables=variables, timescaledb=ts)


@pytest.mark.parametrize(
    ("sql", "ts", "expected"),
    [
        # M: interpolate __time function / wrapped in aggregation
        ("select $__time(time_column)", False, 'select time_column AS "time"'),
        ("select min($__time(time_column))", False, 'select min(time_column AS "time")'),
        # M: __timeFilter with from/to in RFC3339Nano, __timeFrom, __timeTo
        (
            "WHERE $__timeFilter(time_column)",
            False,
            "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'",
        ),
        ("select $__timeFrom()", False, "select '2018-04-12T18:00:00Z'"),
        ("select $__timeTo()", False, "select '2018-04-12T18:05:00Z'"),
        # M: __timeGroup pre 5.3 compatibility (a ',' right after the call adds the alias)
        (
            "SELECT $__timeGroup(time_column,'5m'), value",
            False,
            'SELECT floor(extract(epoch from time_column)/300)*300 AS "time", value',
        ),
        (
            "SELECT $__timeGroup(time_column,'5m') as time, value",
            False,
            "SELECT floor(extract(epoch from time_column)/300)*300 as time, value",
        ),
        (
            "SELECT $__timeGroup(time_column,'5m')",
            False,
            "SELECT floor(extract(epoch from time_column)/300)*300",
        ),
        (
            "SELECT $__timeGroupAlias(time_column,'5m')",
            False,
            'SELECT floor(extract(epoch from time_column)/300)*300 AS "time"',
        ),
        ("$__timeGroup(time_column , '5m')", False, "floor(extract(epoch from time_column)/300)*300"),
        # M: TimescaleDB enabled, including the large and small intervals
        ("GROUP BY $__timeGroup(time_column,'5m')", True, "GROUP BY time_bucket('300.000s',time_column)"),
        ("GROUP BY $__timeGroup(time_column , '5m')", True, "GROUP BY time_bucket('300.000s',time_column)"),
        (
            "GROUP BY $__timeGroup(time_column , '12d')",
            True,
            "GROUP BY time_bucket('1036800.000s',time_column)",
        ),
        ("GROUP BY $__timeGroup(time_column , '20ms')", True, "GROUP BY time_bucket('0.020s',time_column)"),
        # the same 12d without TimescaleDB: Go's %v prints 1036800 as 1.0368e+06 (valid SQL)
        (
            "GROUP BY $__timeGroup(time_column , '12d')",
            False,
            "GROUP BY floor(extract(epoch from time_column)/1.0368e+06)*1.0368e+06",
        ),
        # M: unix epoch macros (from.Unix(), from.UnixNano())
        ("select $__unixEpochFilter(time)", False, "select time >= 1523556000 AND time <= 1523556300"),
        (
            "select $__unixEpochNanoFilter(time)",
            False,
            "select time >= 1523556000000000000 AND time <= 1523556300000000000",
        ),
        ("select $__unixEpochNanoFrom()", False, "select 1523556000000000000"),
        ("select $__unixEpochNanoTo()", False, "select 1523556300000000000"),
        (
            "SELECT $__unixEpochGroup(time_column+time_adjustment,'5m')",
            False,
            "SELECT floor((time_column+time_adjustment)/300)*300",
        ),
        (
            "SELECT $__unixEpochGroupAlias(time_column+time_adjustment,'5m')",
            False,
            'SELECT floor((time_column+time_adjustment)/300)*300 AS "time"',
        ),
        # sqleng.Interpolate: the backend's global substitutions
        ("$__unixEpochFrom() $__unixEpochTo()", False, "1523556000 1523556300"),
        # $__timeGroupAlias(time, $__interval): the browser puts "1m" in, the backend parses it
        ("$__timeGroupAlias(time, $__interval)", False, 'floor(extract(epoch from time)/60)*60 AS "time"'),
        ("$__timeGroupAlias(time, $__interval)", True, "time_bucket('60.000s',time) AS \"time\""),
        # fill argument is accepted (it only shapes Grafana's post-processing)
        ("$__timeGroup(t, '5m', NULL)", False, "floor(extract(epoch from t)/300)*300"),
        ("$__timeGroup(t, '5m', 0.5)", True, "time_bucket('300.000s',t)"),
    ],
)
def test_backend_macros_as_grafana_tests_them(sql: str, ts: bool, expected: str) -> None:
    assert _x(sql, ts=ts) == expected


def test_time_filter_keeps_the_millisecond_grafana_sends() -> None:
    # M: "1960-02-01 07:00:00.5" → RFC3339Nano "1960-02-01T07:00:00.5Z"; the browser ships whole ms.
    rng = TimeRange(
        datetime(1960, 2, 1, 7, 0, 0, 500_999, tzinfo=UTC), datetime(1980, 2, 3, 8, 0, 0, 500_000, tzinfo=UTC)
    )
    assert _x("WHERE $__timeFilter(c)", rng=rng) == (
        "WHERE c BETWEEN '1960-02-01T07:00:00.5Z' AND '1980-02-03T08:00:00.5Z'"
    )
    # before 1970 Go's Unix() floors: -312915599.5 s is -312915600, not -312915599
    assert _x("$__unixEpochFilter(t)", rng=rng) == "t >= -312915600 AND t <= 318412800"


def test_time_range_in_another_zone_is_sent_in_utc() -> None:
    beijing = timezone(timedelta(hours=8))
    rng = TimeRange(datetime(2018, 4, 13, 2, 0, tzinfo=beijing), datetime(2018, 4, 13, 2, 5, tzinfo=beijing))
    assert _x("$__timeFrom() $__from", rng=rng) == "'2018-04-12T18:00:00Z' 1523556000000"


@pytest.mark.parametrize(
    ("variable", "expected"),
    [
        # S: a single plain value: quotes doubled, NOT wrapped in quotes
        (Variable("v", "O'Brien"), "O''Brien"),
        # S: multi or includeAll: every value quoteLiteral'd and joined by ','
        (Variable("v", "O'Brien", multi=True), "'O''Brien'"),
        (Variable("v", "O'Brien", include_all=True), "'O''Brien'"),
        (Variable("v", ["a'b", "c"], multi=True), "'a''b','c'"),
        # All without a custom allValue: every option's value
        (Variable("v", ["LHJH", "QDHG", "YZSH"], multi=True, include_all=True), "'LHJH','QDHG','YZSH'"),
    ],
)
def test_variables_as_the_sql_datasource_quotes_them(variable: Variable, expected: str) -> None:
    for syntax in ("$v", "${v}", "[[v]]"):
        assert _x(f"x IN ({syntax})", variables=(variable,)) == f"x IN ({expected})"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        # F: an explicit format replaces the datasource's quoting
        ("${v:csv}", "a'b,c"),
        ("${v:raw}", "a'b,c"),
        ("${v:sqlstring}", "'a''b','c'"),
        ("${v:singlequote}", "'a\\'b','c'"),
        ("${v:doublequote}", '"a\'b","c"'),
        ("${v:pipe}", "a'b|c"),
        ("${v:percentencode}", "%7Ba%27b%2Cc%7D"),
        ("[[v:csv]]", "a'b,c"),
        ("${v:nosuchformat}", "{a'b,c}"),  # sceneInterpolator falls back to glob
        # built-ins: $__from/$__to are ms epoch numbers, formats per the global-variables docs
        ("$__from ${__to}", "1523556000000 1523556300000"),
        ("${__from:date}", "2018-04-12T18:00:00.000Z"),
        ("${__from:date:iso}", "2018-04-12T18:00:00.000Z"),
        ("${__to:date:seconds}", "1523556300"),
        ("${__to:date:ms}", "1523556300000"),
        ("$__interval $__interval_ms ${__interval}", "1m 60000 1m"),
        # unknown $words are left as written; $__range is Prometheus/Loki-only
        ("$nope ${nope:csv} $__range $__range_s $1", "$nope ${nope:csv} $__range $__range_s $1"),
    ],
)
def test_formats_and_builtins(template: str, expected: str) -> None:
    assert _x(template, variables=(Variable("v", ["a'b", "c"], multi=True),)) == expected


def test_single_string_through_sqlstring_gets_its_quotes() -> None:
    assert _x("${v:sqlstring}", variables=(Variable("v", 'say "hi" it\'s'),)) == "'say \\\"hi\\\" it''s'"


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT $__foo(x)", 'unknown macro "__foo"'),
        (
            "SELECT $__timeGroup(x)",
            "macro __timeGroup needs time column and interval and optional fill value",
        ),
        (
            "SELECT $__timeGroupAlias(x)",
            "macro __timeGroup needs time column and interval and optional fill value",
        ),
        ("SELECT $__timeGroup(x, 'fortnight')", "error parsing interval 'fortnight'"),
        ("SELECT $__timeGroup(x, '5m', sometimes)", "error parsing fill value sometimes"),
        # Grafana's macro regex stops at the first ')', so a nested call splits at its comma.
        ("SELECT $__timeGroupAlias(coalesce(a,b), '5m')", "error parsing interval b"),
        # the first error wins, as in macros.go
        ("SELECT $__bar(x), $__timeGroup(x)", 'unknown macro "__bar"'),
        ("SELECT '$__dashboard'", "$__dashboard is a Grafana global this module does not reproduce"),
        ("${__from:date:YYYY-MM}", "date format 'YYYY-MM' uses the browser's time zone; not reproduced"),
        ("${v:lucene}", "variable format 'lucene' (in ${v:lucene}) is not reproduced"),
    ],
)
def test_what_grafana_refuses_raises(sql: str, message: str) -> None:
    with pytest.raises(MacroError) as err:
        _x(sql, variables=(Variable("v", "a"),))
    assert str(err.value) == message


def test_nested_parentheses_are_cut_as_grafana_cuts_them() -> None:
    # No error here, but the SQL silently loses ", b": what Grafana really runs.
    assert _x("WHERE $__timeFilter(coalesce(a,b))") == (
        "WHERE coalesce(a BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z')"
    )
    # a cast instead of a call keeps the argument whole
    assert _x("$__timeGroupAlias(a::timestamptz, '5m')", ts=True) == (
        "time_bucket('300.000s',a::timestamptz) AS \"time\""
    )


def test_calendar_units_step_from_now_like_go_add_date() -> None:
    # gtime.ParseInterval: "1M" is now.AddDate(0, 1, 0) - now; 31 Jan + 1 month normalises to 3 Mar
    # (31 days). Grafana's "now" is the wall clock; here it is the range's end.
    end = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
    rng = TimeRange(end - timedelta(days=1), end)
    assert _x("$__timeGroup(t, '1M')", ts=True, rng=rng) == "time_bucket('2678400.000s',t)"
    assert _x("$__timeGroup(t, '1w')", rng=rng) == "floor(extract(epoch from t)/604800)*604800"
    # Go's %v switches to exponent form from 1e+06 up and below 1e-04
    assert _x("$__timeGroup(t, '30d')", rng=rng) == "floor(extract(epoch from t)/2.592e+06)*2.592e+06"
    assert _x("$__unixEpochGroup(t, '50us')", rng=rng) == "floor((t)/5e-05)*5e-05"
    assert _x("$__unixEpochGroup(t, '1h30m')", rng=rng) == "floor((t)/5400)*5400"


def test_macros_inside_comments_and_strings_are_still_expanded() -> None:
    # macros.go runs its regex over the whole text: a commented-out unknown macro fails the query
    assert _x("SELECT 1 -- $__timeFrom()") == "SELECT 1 -- '2018-04-12T18:00:00Z'"
    with pytest.raises(MacroError, match="__old"):
        _x("SELECT 1 -- $__old(t)")


def test_bad_inputs() -> None:
    naive = datetime(2018, 4, 12, 18, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        TimeRange(naive, naive + MINUTE)
    with pytest.raises(ValueError, match="reversed"):
        TimeRange(GO_RANGE.end, GO_RANGE.start)
    with pytest.raises(ValueError, match="whole number of milliseconds"):
        expand("x", GO_RANGE, interval=timedelta(microseconds=1500), timescaledb=False)
    with pytest.raises(ValueError, match="duplicate"):
        _x("$v", variables=(Variable("v", "a"), Variable("v", "b")))
    with pytest.raises(ValueError, match="positive"):
        interval_for(GO_RANGE, max_data_points=0)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0.009, timedelta(milliseconds=1)),
        (0.012, timedelta(milliseconds=10)),
        (0.7, timedelta(milliseconds=500)),
        (3.6, timedelta(seconds=5)),
        (12.4, timedelta(seconds=10)),
        (44.9, timedelta(seconds=30)),
        (45, timedelta(minutes=1)),
        (89.9, timedelta(minutes=1)),
        (90, timedelta(minutes=2)),
        (86399, timedelta(hours=12)),
        (86400, timedelta(days=1)),
        (3628799, timedelta(days=30)),
        (3628800, timedelta(days=365)),
    ],
)
def test_round_interval_table(seconds: float, expected: timedelta) -> None:
    # R: roundInterval's bounds ("case interval < 45000: return 30000" …)
    assert round_interval(seconds) == expected


def _last(hours: float) -> TimeRange:
    end = datetime(2026, 12, 1, tzinfo=UTC)
    return TimeRange(end - timedelta(hours=hours), end)


def test_interval_for_and_its_printed_form() -> None:
    # R: calculateInterval(range, maxDataPoints, lowLimit); the SQL datasource's lower limit is 1m.
    assert interval_for(_last(1)) == MINUTE  # 3.6 s rounds to 5 s, raised to 1m
    assert interval_for(_last(1), min_interval=timedelta(seconds=1)) == timedelta(seconds=5)
    assert interval_for(_last(24)) == timedelta(minutes=1)  # 86.4 s → 1m
    assert interval_for(_last(24 * 7)) == timedelta(minutes=10)  # 604.8 s → 10m
    assert interval_for(_last(24 * 30), max_data_points=300) == timedelta(hours=2)  # 8640 s → 2h
    assert interval_for(_last(6), max_data_points=100, min_interval=timedelta(seconds=10)) == timedelta(
        minutes=5
    )


@pytest.mark.parametrize(
    ("td", "printed"),
    [
        (timedelta(milliseconds=500), "500ms"),
        (timedelta(seconds=30), "30s"),
        (timedelta(minutes=1), "1m"),
        (timedelta(seconds=90), "1m"),  # secondsToHms keeps only the largest unit
        (timedelta(hours=2), "2h"),
        (timedelta(weeks=1), "7d"),
        (timedelta(days=365), "1y"),
    ],
)
def test_format_interval(td: timedelta, printed: str) -> None:
    assert format_interval(td) == printed


def test_min_interval_of_90s_prints_1m_but_groups_by_90s() -> None:
    # $__interval says "1m" while $__interval_ms says 90000: Grafana's own inconsistency, kept.
    rng = _last(1)
    interval = interval_for(rng, min_interval=timedelta(seconds=90))
    assert expand("$__interval $__interval_ms", rng, interval=interval, timescaledb=False) == "1m 90000"


PANEL_SQL = """
SELECT $__timeGroupAlias(ts, $__interval), count(*) AS n, sum(v) AS total
FROM (
  SELECT g AS ts, extract(minute from g)::int AS v, tag
  FROM generate_series($__timeFrom()::timestamptz, $__timeTo()::timestamptz, interval '1 minute') AS g,
       unnest(ARRAY['a''b', 'c', 'd']) AS tag
) AS s
WHERE $__timeFilter(ts) AND tag IN ($tag) AND tag <> '$plain'
  AND extract(epoch from ts) BETWEEN $__unixEpochFrom() AND $__unixEpochTo()
  AND ts >= '${__from:date:iso}'::timestamptz AND $__interval_ms = 60000
GROUP BY 1
ORDER BY 1
"""


@pytest.mark.services
@pytest.mark.parametrize(
    ("backend", "timescaledb"),
    [(Backend.POSTGRES, False), (Backend.TIMESCALEDB, False), (Backend.TIMESCALEDB, True)],
)
def test_expanded_panel_query_runs_on_the_real_server(backend: Backend, timescaledb: bool) -> None:
    rng = _last(1)
    variables = (Variable("tag", ["a'b", "c"], multi=True), Variable("plain", "it's"))
    sql = expand(PANEL_SQL, rng, interval=interval_for(rng), variables=variables, timescaledb=timescaledb)
    assert ("time_bucket('60.000s',ts)" in sql) is timescaledb
    # a migrated scratch database: on 5433 the migrations are what create the timescaledb extension
    with migrated_db(backend) as dsn, psycopg.connect(dsn, connect_timeout=5) as conn:
        rows = conn.execute(sql.encode()).fetchall()
    # 61 minutes inclusive of both ends, two of the three tags
    assert len(rows) == 61
    assert all(n == 2 for _, n, _ in rows)
    first = rows[0][0]
    epoch = first.timestamp() if timescaledb else float(first)
    assert epoch == rng.start.timestamp()
