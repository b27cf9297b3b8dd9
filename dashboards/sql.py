"""The SQL behind every Grafana panel, with Grafana's macros left for Grafana to expand.

Each query is run by tests/dashboards/test_board_queries.py against a database filled by the
simulated plant, on both backends, as the read-only role ``hazardwatch_grafana`` (migration
0010), after dashboards/expand.py has expanded the macros as Grafana does.

Rules every query keeps:
- Time series pick their table by ``$__interval_ms``: raw ``reading`` below one minute, the
  ``reading_1m`` rollup from one minute up, so a 30-day panel never scans raw rows (both
  branches are in one UNION ALL; the one whose ``WHERE`` is constant-false is never executed).
- Only usable readings (GOOD or UNCERTAIN: the 0x40 bit) enter values; BAD rows are data
  quality, shown on the data-quality board.
- Scope comes from template variables: ``$county`` and ``$enterprise`` are multi-value (``IN
  (...)``, Grafana quotes each value); ``$hazard_source`` on the detail board is single-valued
  and quoted here (``'$hazard_source'``; Grafana doubles any quote inside).
- What only the plant config knows (alarm limits, interlock voting, acknowledgement deadlines)
  is written into the query as literals when the boards are generated, so a board is rebuilt
  (``hazardwatch grafana build``) when the config changes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from core.plant import Plant, resolve_key
from core.settings import AckDeadlines

__all__ = [
    "ACK_DEADLINE_S",
    "InterlockRow",
    "alarm_rows",
    "interlocks_of",
    "literal",
]

# Acknowledgement deadline per priority (settings.grafana.ack_deadline_s) when none is given.
ACK_DEADLINE_S = AckDeadlines()

USABLE = "(({q}) & 64) <> 0"  # GOOD or UNCERTAIN (core/quality.py)


def usable(q: str) -> str:
    return USABLE.format(q=q)


def literal(v: str | float | bool | None) -> str:
    """An SQL literal of a config value (text, finite number, bool, NULL)."""
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        f = float(v)
        if not math.isfinite(f):
            raise ValueError(f"not a finite number: {v!r}")
        return repr(f)
    if "\x00" in v:
        raise ValueError("text holds a NUL character")
    if any(c in v for c in "$[\\"):
        # Grafana expands $name, ${name}, [[name]] and $__macro(...) anywhere in a panel's SQL,
        # string literals included: a Unicode-escape literal spells them without the characters.
        escaped = v.replace("\\", "\\\\").replace("'", "''").replace("$", "\\0024").replace("[", "\\005B")
        return "U&'" + escaped + "'"
    return "'" + v.replace("'", "''") + "'"


def values(columns: Sequence[tuple[str, str]], rows: Iterable[Sequence[str | float | bool | None]]) -> str:
    """``(VALUES ...) AS name(cols)`` body: typed first row, or an empty typed set."""
    names = ", ".join(c for c, _ in columns)
    lines = []
    for row in rows:
        lines.append(
            "(" + ", ".join(f"{literal(v)}::{t}" for v, (_, t) in zip(row, columns, strict=True)) + ")"
        )
    if not lines:
        nulls = ", ".join(f"NULL::{t} AS {c}" for c, t in columns)
        return f"SELECT {nulls} WHERE false"
    return "SELECT * FROM (VALUES\n    " + ",\n    ".join(lines) + f"\n) AS v({names})"


# --- registry ----------------------------------------------------------------------------

_SCOPED_TAGS = """
    FROM tag t
    JOIN hazard_source h ON h.id = t.hazard_source_id
    JOIN enterprise e ON e.id = h.enterprise_id"""


@dataclass(frozen=True, slots=True)
class InterlockRow:
    key: str
    enterprise: str
    hazard_source: str
    code: str
    name: str
    m: int
    n: int
    in_service: bool
    fe_tag: str
    fe_safe: float
    fe_tol: float
    inputs: tuple[tuple[str, str, float, str | None], ...]  # tag key, op, trip value, bypass switch key


def interlocks_of(plant: Plant) -> list[InterlockRow]:
    out = []
    for e in plant.enterprises:
        for h in e.hazard_sources:
            for il in h.interlocks:
                m, _, n = il.voting.partition("oo")
                inputs = tuple(
                    (
                        resolve_key(e.code, i.tag),
                        i.op,
                        float(i.value),
                        resolve_key(e.code, i.bypass) if i.bypass else None,
                    )
                    for i in il.inputs
                )
                out.append(
                    InterlockRow(
                        f"{h.code}.{il.code}",
                        e.code,
                        h.code,
                        il.code,
                        il.name,
                        int(m),
                        int(n),
                        il.in_service,
                        resolve_key(e.code, il.final_element.tag),
                        float(il.final_element.safe_value),
                        float(il.final_element.tolerance),
                        inputs,
                    )
                )
    return out


def interlock_ctes(rows: Sequence[InterlockRow]) -> str:
    """``d`` (one row per interlock) and ``i`` (one per input), from the config."""
    d = values(
        [
            ("key", "text"),
            ("enterprise", "text"),
            ("hazard_source", "text"),
            ("code", "text"),
            ("name", "text"),
            ("m", "int"),
            ("n", "int"),
            ("in_service", "bool"),
            ("fe_tag", "text"),
            ("fe_safe", "float8"),
            ("fe_tol", "float8"),
        ],
        [
            (
                r.key,
                r.enterprise,
                r.hazard_source,
                r.code,
                r.name,
                r.m,
                r.n,
                r.in_service,
                r.fe_tag,
                r.fe_safe,
                r.fe_tol,
            )
            for r in rows
        ],
    )
    i = values(
        [("key", "text"), ("tag", "text"), ("op", "text"), ("trip", "float8"), ("bypass_tag", "text")],
        [(r.key, *inp) for r in rows for inp in r.inputs],
    )
    return f"d AS ({d}),\ni AS ({i})"


# The inputs' state on their latest values, as api/interlock_views.py computes it: an input is
# failed when BAD or never reported, bypassed when its switch reads >= 0.5 (usable), and votes
# when in the vote and its trip condition holds.
_INPUT_STATE = f"""inp AS (
    SELECT i.key, i.tag, l.value, l.quality,
           (l.quality IS NULL OR NOT {usable("l.quality")}) AS failed,
           coalesce(bl.value >= 0.5 AND bl.value <> 'NaN', false) AS bypassed,
           coalesce({usable("l.quality")} AND CASE i.op
               WHEN '>' THEN l.value > i.trip WHEN '>=' THEN l.value >= i.trip
               WHEN '<' THEN l.value < i.trip WHEN '<=' THEN l.value <= i.trip
               WHEN '==' THEN l.value = i.trip ELSE l.value <> i.trip END, false) AS tripping
    FROM i
    LEFT JOIN tag t ON t.key = i.tag LEFT JOIN tag_latest l ON l.tag_id = t.id
    LEFT JOIN tag bt ON bt.key = i.bypass_tag LEFT JOIN tag_latest bl ON bl.tag_id = bt.id),
vote AS (
    SELECT d.key,
           count(*) FILTER (WHERE NOT inp.failed AND NOT inp.bypassed) AS can_vote,
           count(*) FILTER (WHERE NOT inp.failed AND NOT inp.bypassed AND inp.tripping) AS votes,
           string_agg(split_part(inp.tag, '.', 3), ',' ORDER BY inp.tag) FILTER (WHERE inp.bypassed) AS bypassed,
           string_agg(split_part(inp.tag, '.', 3), ',' ORDER BY inp.tag)
               FILTER (WHERE inp.failed AND NOT inp.bypassed) AS failed
    FROM d JOIN inp ON inp.key = d.key GROUP BY d.key),
permit AS (
    SELECT b.interlock AS key, count(*) AS active, min(b.expires_at) AS expires_at,
           bool_or(b.expires_at < now()) AS overdue
    FROM interlock_bypass b
    WHERE b.state = 'approved' AND b.starts_at <= now()
    GROUP BY b.interlock)"""


def interlock_status(rows: Sequence[InterlockRow], where: str) -> str:
    """One row per interlock passing ``where`` (over ``d``): voting, demand, final element."""
    return f"""WITH {interlock_ctes(rows)},
{_INPUT_STATE}
SELECT d.code AS "联锁", d.name AS "名称",
       d.m || 'oo' || d.n AS "表决",
       least(d.m, v.can_vote) || 'oo' || v.can_vote AS "有效表决",
       v.votes AS "动作输入",
       (d.in_service AND v.can_vote > 0 AND v.votes >= least(d.m, v.can_vote)) AS "联锁动作",
       (NOT d.in_service OR v.can_vote < d.n) AS "降级",
       CASE WHEN NOT d.in_service THEN '停用' WHEN v.can_vote = 0 THEN '无法动作'
            WHEN v.can_vote < d.n THEN '降级' ELSE '投用' END AS "状态",
       coalesce(v.bypassed, '') AS "旁路输入", coalesce(v.failed, '') AS "故障输入",
       coalesce(p.active, 0) AS "旁路许可", p.expires_at AS "许可到期",
       split_part(d.fe_tag, '.', 3) AS "切断阀", fl.value AS "阀位",
       coalesce({usable("fl.quality")} AND abs(fl.value - d.fe_safe) <= d.fe_tol, false) AS "安全位置"
FROM d
JOIN vote v ON v.key = d.key
LEFT JOIN permit p ON p.key = d.key
LEFT JOIN tag ft ON ft.key = d.fe_tag LEFT JOIN tag_latest fl ON fl.tag_id = ft.id
WHERE {where}
ORDER BY d.key"""


def interlock_exceptions(rows: Sequence[InterlockRow]) -> str:
    """Bureau: interlocks bypassed (switch or permit) or out of service, across the county."""
    return f"""WITH {interlock_ctes(rows)},
{_INPUT_STATE}
SELECT e.name AS "企业", d.hazard_source AS "危险源", d.code AS "联锁", d.name AS "名称",
       CASE WHEN NOT d.in_service THEN '停用'
            WHEN coalesce(p.overdue, false) THEN '旁路超期'
            WHEN v.bypassed IS NOT NULL OR p.active > 0 THEN '旁路'
            WHEN v.failed IS NOT NULL THEN '输入故障' END AS "状态",
       least(d.m, v.can_vote) || 'oo' || v.can_vote AS "有效表决", d.m || 'oo' || d.n AS "表决",
       coalesce(v.bypassed, '') AS "旁路输入", coalesce(v.failed, '') AS "故障输入",
       p.expires_at AS "许可到期"
FROM d
JOIN vote v ON v.key = d.key
JOIN enterprise e ON e.code = d.enterprise
LEFT JOIN permit p ON p.key = d.key
WHERE e.county IN ($county)
  AND (NOT d.in_service OR v.bypassed IS NOT NULL OR v.failed IS NOT NULL OR p.active > 0)
ORDER BY 5, d.key"""


# --- readings ----------------------------------------------------------------------------


SERIES_NAME = "t.key || ' ' || t.name || coalesce(' (' || nullif(t.eng_unit, '') || ')', '')"


def series_name(key: str, name: str, unit: str) -> str:
    """The series name SERIES_NAME gives a tag (the board's overrides match it)."""
    return f"{key} {name}" + (f" ({unit})" if unit else "")


def series(where: str, metric: str = SERIES_NAME) -> str:
    """Mean value per ``$__interval`` and tag: raw readings below a minute, the rollup above.

    ``where`` filters ``t`` (tag), ``h`` (hazard_source) and ``e`` (enterprise)."""
    return f"""SELECT "time", metric, value FROM (
  SELECT $__timeGroupAlias(r.time, $__interval), {metric} AS metric, avg(r.value) AS value
  {_SCOPED_TAGS}
  JOIN reading r ON r.tag_id = t.id
  WHERE $__interval_ms < 60000 AND $__timeFilter(r.time) AND {usable("r.quality")} AND t.retired_at IS NULL
    AND {where}
  GROUP BY 1, 2
  UNION ALL
  SELECT $__timeGroupAlias(m.bucket, $__interval), {metric} AS metric, sum(m.sum) / sum(m.count) AS value
  {_SCOPED_TAGS}
  JOIN reading_1m m ON m.tag_id = t.id
  WHERE $__interval_ms >= 60000 AND $__timeFilter(m.bucket) AND m.count > 0 AND t.retired_at IS NULL
    AND {where}
  GROUP BY 1, 2
) s
ORDER BY 1, 2"""


def latest_table(where: str) -> str:
    return f"""SELECT split_part(t.key, '.', 2) || '.' || split_part(t.key, '.', 3) AS "位号", t.name AS "名称",
       t.kind AS "类型", l.value AS "当前值", t.eng_unit AS "单位",
       CASE WHEN l.quality IS NULL THEN '无数据' WHEN (l.quality & 192) = 192 THEN '好'
            WHEN {usable("l.quality")} THEN '可疑' ELSE '坏' END AS "质量",
       l.time AS "时间"
{_SCOPED_TAGS}
LEFT JOIN tag_latest l ON l.tag_id = t.id
WHERE t.retired_at IS NULL AND {where}
ORDER BY t.key"""


# --- alarms ------------------------------------------------------------------------------

ANNUNCIATED = "('unacknowledged', 'acknowledged', 'returned_unacknowledged', 'latched')"
RAISES = "('RAISED', 'RERAISED')"
PRIORITY_LABEL = (
    "CASE s.priority WHEN 'critical' THEN '紧急' WHEN 'high' THEN '高' WHEN 'medium' THEN '中' ELSE '低' END"
)


def deadline_s(priority: str, deadlines: AckDeadlines = ACK_DEADLINE_S) -> str:
    """The acknowledgement deadline (seconds) of the priority held by the SQL expression ``priority``."""
    d = deadlines.model_dump()
    whens = " ".join(f"WHEN '{p}' THEN {literal(s)}" for p, s in d.items())
    return f"(CASE {priority} {whens} ELSE {literal(d['low'])} END)"


def alarm_rows(where: str, limit: int = 200) -> str:
    """Current alarms (annunciated and hidden ones) with the key the console link needs."""
    return f"""SELECT s.raised_at AS "时间", {PRIORITY_LABEL} AS "优先级", s.status AS "状态",
       s.subject AS "位号", s.kind AS "类型", s.value AS "值", s."limit" AS "限值",
       s.acked_at AS "确认时间", s.key AS key
FROM alarm_state s
WHERE s.status <> 'normal' AND {where}
ORDER BY s.acked, CASE s.priority WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END,
         s.raised_at DESC NULLS LAST
LIMIT {limit}"""


# --- bureau overview ----------------------------------------------------------------------


def _overdue(deadlines: AckDeadlines) -> str:
    return (
        f"NOT s.acked AND s.status IN {ANNUNCIATED} "
        f"AND s.raised_at < now() - make_interval(secs => {deadline_s('s.priority', deadlines)})"
    )


_INTERLOCK_OUT = (
    "s.kind IN ('INPUT_BYPASSED', 'BYPASS_OVERDUE', 'OUT_OF_SERVICE', 'SIF_DISABLED') AND s.condition"
)


def bureau_sources(deadlines: AckDeadlines = ACK_DEADLINE_S) -> str:
    """Every hazard source of the county: grade, live risk colour, alarm counts, interlocks."""
    return f"""WITH a AS (
  SELECT s.enterprise, s.hazard_source,
         count(*) FILTER (WHERE s.status IN {ANNUNCIATED} AND s.priority = 'critical') AS critical,
         count(*) FILTER (WHERE s.status IN {ANNUNCIATED} AND s.priority = 'high') AS high,
         count(*) FILTER (WHERE s.status IN {ANNUNCIATED} AND s.priority IN ('medium', 'low')) AS other,
         count(*) FILTER (WHERE {_overdue(deadlines)}) AS overdue,
         count(*) FILTER (WHERE {_INTERLOCK_OUT}) AS interlocks_out
  FROM alarm_state s WHERE s.county IN ($county)
  GROUP BY 1, 2)
SELECT e.county AS "属地", e.name AS "企业", h.name AS "危险源", h.grade AS "等级",
       CASE WHEN coalesce(a.critical, 0) + coalesce(a.overdue, 0) > 0 THEN '红'
            WHEN coalesce(a.high, 0) + coalesce(a.interlocks_out, 0) > 0 THEN '橙'
            WHEN coalesce(a.other, 0) > 0 THEN '黄' ELSE '蓝' END AS "风险",
       coalesce(a.critical, 0) AS "紧急", coalesce(a.high, 0) AS "高", coalesce(a.other, 0) AS "中低",
       coalesce(a.overdue, 0) AS "超时未确认", coalesce(a.interlocks_out, 0) AS "联锁旁路停用",
       e.code AS enterprise, h.code AS hazard_source
FROM hazard_source h
JOIN enterprise e ON e.id = h.enterprise_id
LEFT JOIN a ON a.enterprise = e.code AND a.hazard_source = h.code
WHERE h.retired_at IS NULL AND e.retired_at IS NULL AND e.county IN ($county)
ORDER BY CASE WHEN coalesce(a.critical, 0) + coalesce(a.overdue, 0) > 0 THEN 0
              WHEN coalesce(a.high, 0) + coalesce(a.interlocks_out, 0) > 0 THEN 1
              WHEN coalesce(a.other, 0) > 0 THEN 2 ELSE 3 END, h.grade, e.code, h.code"""


def bureau_active_by_priority() -> str:
    return f"""SELECT {PRIORITY_LABEL} AS priority, count(*) AS alarms
FROM alarm_state s
WHERE s.status IN {ANNUNCIATED} AND s.county IN ($county)
GROUP BY s.priority, 1
ORDER BY CASE s.priority WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END"""


def bureau_overdue(deadlines: AckDeadlines = ACK_DEADLINE_S) -> str:
    return f"""SELECT s.raised_at AS "报警时间", e.name AS "企业", s.hazard_source AS "危险源",
       {PRIORITY_LABEL} AS "优先级", s.subject AS "位号", s.kind AS "类型",
       round(extract(epoch FROM now() - s.raised_at)::numeric / 60, 1) AS "未确认分钟", s.key AS key
FROM alarm_state s
JOIN enterprise e ON e.code = s.enterprise
WHERE {_overdue(deadlines)} AND s.county IN ($county)
ORDER BY s.raised_at
LIMIT 500"""


def bureau_overdue_count(deadlines: AckDeadlines = ACK_DEADLINE_S) -> str:
    return f"""SELECT count(*) AS "超时未确认" FROM alarm_state s WHERE {_overdue(deadlines)} AND s.county IN ($county)"""


def bureau_alarm_trend() -> str:
    """Annunciations (raised and re-raised) per interval and priority."""
    return f"""SELECT $__timeGroupAlias(j.at, $__interval), {PRIORITY_LABEL} AS metric, count(*) AS value
FROM alarm_journal j
JOIN alarm_state s ON s.key = j.alarm_key
WHERE $__timeFilter(j.at) AND j.action IN {RAISES} AND s.county IN ($county)
GROUP BY 1, 2
ORDER BY 1, 2"""


# --- online rate (api/online.py's definition, in one statement) ----------------------------


def online_points(where: str) -> str:
    """Each in-service point's online rate over the dashboard range (whole minutes, never past
    now, minutes a writer still holds open left out), as api/online.py defines it: a polled
    point counts min(samples, cap) / expected per minute; an OPC UA subscription point (silence
    means unchanged) counts a minute online when it has a sample or its previous reading was
    usable. The expectation comes from the registry (tag.attrs sample_s / changes_only)."""
    return f"""WITH w AS (
  SELECT date_trunc('minute', $__timeFrom()::timestamptz)
           + CASE WHEN date_trunc('minute', $__timeFrom()::timestamptz) = $__timeFrom()::timestamptz
                  THEN interval '0' ELSE interval '1 minute' END AS lo,
         date_trunc('minute', least($__timeTo()::timestamptz, now())) AS hi),
o AS (SELECT coalesce(array_agg(x.bucket), '{{}}') AS open FROM reading_1m_open x, w WHERE x.bucket >= w.lo AND x.bucket < w.hi),
p AS (
  SELECT t.id AS tag_id, e.code AS enterprise, e.name AS enterprise_name, h.code AS hazard_source, t.key, t.name,
         60.0 / coalesce((t.attrs->>'sample_s')::float8, 1.0) AS per_min,
         greatest(1, ceil(60.0 / coalesce((t.attrs->>'sample_s')::float8, 1.0)))::int AS cap,
         coalesce((t.attrs->>'changes_only')::bool, false) AS carry
  {_SCOPED_TAGS}
  WHERE t.in_service AND t.retired_at IS NULL AND {where}),
r AS (
  SELECT p.*,
         CASE WHEN p.carry
              THEN coalesce(c.online, 0)
                   + CASE WHEN b.usable THEN extract(epoch FROM coalesce(c.first, w.hi) - w.lo)::float8 / 60 ELSE 0 END
              ELSE coalesce(q.online, 0) END AS online,
         extract(epoch FROM w.hi - w.lo)::float8 / 60 - cardinality(o.open) AS expected
  FROM p CROSS JOIN w CROSS JOIN o
  LEFT JOIN LATERAL (
    SELECT sum(least(m.count, p.cap))::float8 / p.per_min AS online FROM reading_1m m
    WHERE NOT p.carry AND m.tag_id = p.tag_id AND m.bucket >= w.lo AND m.bucket < w.hi
      AND m.bucket <> ALL(o.open)) q ON true
  LEFT JOIN LATERAL (
    SELECT sum((x.count > 0)::int
               + CASE WHEN x.last_quality & 64 <> 0
                      THEN extract(epoch FROM x.next - x.bucket)::float8 / 60 - 1 ELSE 0 END) AS online,
           min(x.bucket) AS first
    FROM (SELECT m.bucket, m.count, m.last_quality, lead(m.bucket, 1, w.hi) OVER (ORDER BY m.bucket) AS next
          FROM reading_1m m
          WHERE p.carry AND m.tag_id = p.tag_id AND m.bucket >= w.lo AND m.bucket < w.hi
            AND m.bucket <> ALL(o.open)) x) c ON true
  LEFT JOIN LATERAL (
    SELECT m.last_quality & 64 <> 0 AS usable FROM reading_1m m
    WHERE p.carry AND m.tag_id = p.tag_id AND m.bucket < w.lo ORDER BY m.bucket DESC LIMIT 1) b ON true
  WHERE w.hi > w.lo),
rate AS (
  SELECT r.*, greatest(0.0, least(1.0, r.online / r.expected)) AS rate FROM r WHERE r.expected > 0)"""


def online_by_enterprise(where: str) -> str:
    return f"""{online_points(where)}
SELECT enterprise_name AS "企业", avg(rate) AS "在线率", count(*) AS "点数"
FROM rate GROUP BY enterprise, enterprise_name ORDER BY 2, enterprise"""


def online_worst_points(where: str, limit: int = 100) -> str:
    return f"""{online_points(where)}
SELECT enterprise_name AS "企业", hazard_source AS "危险源", key AS "位号", name AS "名称", rate AS "在线率"
FROM rate ORDER BY rate, key LIMIT {limit}"""


def online_city(where: str) -> str:
    return f"""{online_points(where)}
SELECT avg(rate) AS "在线率" FROM rate"""


# --- alarm performance (ISA-18.2 / EEMUA 191) ----------------------------------------------

# EEMUA 191 / ISA-18.2: about one alarm per 10 minutes per operator is manageable; more than 10
# in 10 minutes is a flood; an alarm raised 3 or more times within a minute chatters.
TARGET_PER_10MIN = 1
FLOOD_PER_10MIN = 10
CHATTER_WINDOW_S = 60
CHATTER_COUNT = 3

_RAISED = f"""alarm_journal j
JOIN alarm_state s ON s.key = j.alarm_key
WHERE $__timeFilter(j.at) AND j.action IN {RAISES} AND s.enterprise = '$enterprise'"""


def kpi_rate() -> str:
    return f"""SELECT $__timeGroupAlias(j.at, '10m'), count(*) AS "报警数/10分钟"
FROM {_RAISED}
GROUP BY 1 ORDER BY 1"""


def kpi_summary() -> str:
    """Average per 10 minutes over the range, the share of 10-minute windows in flood."""
    return f"""WITH b AS (
  SELECT date_bin('10 minutes', j.at, timestamptz 'epoch') AS t, count(*) AS n FROM {_RAISED} GROUP BY 1)
SELECT coalesce(sum(n), 0)::float8
         / greatest(1, extract(epoch FROM $__timeTo()::timestamptz - $__timeFrom()::timestamptz) / 600) AS "平均报警数/10分钟",
       coalesce(sum(n), 0) AS "报警总数",
       least(1.0, count(*) FILTER (WHERE n > {FLOOD_PER_10MIN})::float8
         / greatest(1, ceil(extract(epoch FROM $__timeTo()::timestamptz - $__timeFrom()::timestamptz) / 600)))
         AS "泛滥时间占比",
       coalesce(max(n), 0) AS "10分钟峰值"
FROM b"""


def kpi_floods() -> str:
    """Flood periods: runs of consecutive 10-minute windows with more than 10 alarms."""
    return f"""WITH b AS (
  SELECT date_bin('10 minutes', j.at, timestamptz 'epoch') AS t, count(*) AS n FROM {_RAISED} GROUP BY 1),
f AS (SELECT t, n, t - (row_number() OVER (ORDER BY t)) * interval '10 minutes' AS run FROM b WHERE n > {FLOOD_PER_10MIN})
SELECT min(t) AS "开始", max(t) + interval '10 minutes' AS "结束", sum(n) AS "报警数", max(n) AS "10分钟峰值"
FROM f GROUP BY run ORDER BY 1"""


def kpi_top() -> str:
    return f"""SELECT j.alarm_key AS key, min(s.subject) AS "位号", min(s.kind) AS "类型", count(*) AS "次数",
       count(*)::float8 / sum(count(*)) OVER () AS "占比"
FROM {_RAISED}
GROUP BY j.alarm_key ORDER BY 4 DESC, 1 LIMIT 10"""


def kpi_chattering() -> str:
    return f"""WITH r AS (
  SELECT j.alarm_key, j.at, lag(j.at, {CHATTER_COUNT - 1}) OVER (PARTITION BY j.alarm_key ORDER BY j.at) AS before
  FROM {_RAISED})
SELECT r.alarm_key AS key, count(*) AS "抖动次数", max(r.at) AS "最近"
FROM r WHERE r.at - r.before <= interval '{CHATTER_WINDOW_S} seconds'
GROUP BY r.alarm_key ORDER BY 2 DESC, 1 LIMIT 50"""


def kpi_stale() -> str:
    """Alarms standing (condition still present) longer than $stale_h hours (EEMUA: stale after 24 h)."""
    return f"""SELECT s.key AS key, s.subject AS "位号", {PRIORITY_LABEL} AS "优先级", s.status AS "状态",
       s.raised_at AS "报警时间", round(extract(epoch FROM now() - s.raised_at)::numeric / 3600, 1) AS "持续小时"
FROM alarm_state s
WHERE s.condition AND s.status IN {ANNUNCIATED} AND s.enterprise = '$enterprise'
  AND s.raised_at < now() - make_interval(secs => '$stale_h'::float8 * 3600)
ORDER BY s.raised_at LIMIT 200"""


def kpi_priority_mix() -> str:
    return f"""SELECT {PRIORITY_LABEL} AS priority, count(*) AS alarms
FROM {_RAISED}
GROUP BY s.priority, 1 ORDER BY 2 DESC"""


def kpi_time_to_ack(deadlines: AckDeadlines = ACK_DEADLINE_S) -> str:
    """Per priority: acknowledgements in the range and the time from the annunciation before."""
    return f"""WITH a AS (
  SELECT s.priority, greatest(0, extract(epoch FROM j.arrival - r.arrival))::float8 AS secs
  FROM alarm_journal j
  JOIN alarm_state s ON s.key = j.alarm_key
  CROSS JOIN LATERAL (
    SELECT x.arrival FROM alarm_journal x
    WHERE x.alarm_key = j.alarm_key AND x.action IN {RAISES} AND (x.seq, x.n) < (j.seq, j.n)
    ORDER BY x.seq DESC, x.n DESC LIMIT 1) r
  WHERE $__timeFilter(j.at) AND j.action = 'ACKED' AND s.enterprise = '$enterprise')
SELECT {PRIORITY_LABEL.replace("s.priority", "a.priority")} AS "优先级", count(*) AS "确认次数",
       percentile_cont(0.5) WITHIN GROUP (ORDER BY secs) AS "中位(秒)",
       percentile_cont(0.9) WITHIN GROUP (ORDER BY secs) AS "90%(秒)",
       {deadline_s("a.priority", deadlines)} AS "时限(秒)",
       count(*) FILTER (WHERE secs > {deadline_s("a.priority", deadlines)}) AS "超时"
FROM a GROUP BY a.priority ORDER BY min(CASE a.priority WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END)"""


# --- data quality --------------------------------------------------------------------------


def quality_points() -> str:
    """Points with a data-quality problem now: BAD or never reported (tag_latest), or a standing
    data-quality alarm of the engine (stale, frozen, out of range, clock ahead: the rules and
    delays the plant configures, rules/compile.py), so the board and the alarms agree."""
    return f"""WITH p AS (
  SELECT t.id, e.name AS enterprise, t.key, t.name
  {_SCOPED_TAGS}
  WHERE t.in_service AND t.retired_at IS NULL AND e.code IN ($enterprise)),
a AS (
  SELECT s.subject,
         string_agg(CASE s.kind WHEN 'STALE' THEN '陈旧' WHEN 'FROZEN' THEN '冻结' WHEN 'BAD_QUALITY' THEN '坏值报警'
                                WHEN 'OUT_OF_RANGE' THEN '超量程' ELSE '时钟超前' END, ',' ORDER BY s.kind) AS kinds
  FROM alarm_state s
  WHERE s.condition AND s.kind IN ('STALE', 'FROZEN', 'BAD_QUALITY', 'OUT_OF_RANGE', 'CLOCK_AHEAD')
    AND s.enterprise IN ($enterprise)
  GROUP BY s.subject)
SELECT p.enterprise AS "企业", p.key AS "位号", p.name AS "名称",
       concat_ws(',', CASE WHEN l.tag_id IS NULL THEN '无数据' WHEN NOT {usable("l.quality")} THEN '坏' END,
                 a.kinds) AS "问题",
       l.quality AS "质量码", l.value AS "值", l.time AS "最新时间"
FROM p
LEFT JOIN tag_latest l ON l.tag_id = p.id
LEFT JOIN a ON a.subject = p.key
WHERE l.tag_id IS NULL OR NOT {usable("l.quality")} OR a.kinds IS NOT NULL
ORDER BY 4, p.key LIMIT 500"""


def quality_counts() -> str:
    return f"""SELECT count(*) FILTER (WHERE l.tag_id IS NOT NULL AND NOT {usable("l.quality")}) AS "坏",
       count(*) FILTER (WHERE l.tag_id IS NULL) AS "无数据",
       count(*) AS "点数"
{_SCOPED_TAGS}
LEFT JOIN tag_latest l ON l.tag_id = t.id
WHERE t.in_service AND t.retired_at IS NULL AND e.code IN ($enterprise)"""


def collectors() -> str:
    return """SELECT c.source AS "采集源", c.protocol AS "协议", coalesce(e.name, '多个企业') AS "企业",
       CASE WHEN c.at < now() - interval '30 seconds' THEN '未上报' WHEN c.up THEN '正常'
            WHEN c.state = 'failed' THEN '中断' WHEN c.state = 'starting' THEN '启动中'
            ELSE '部分设备中断' END AS "状态",
       c.devices_up || '/' || c.devices_total AS "设备", c.tags AS "点数", c.readings AS "读数",
       c.reconnects AS "重连", c.failed_since AS "中断起", c.last_ok AS "最后成功", c.last_error AS "最后错误",
       c.at AS "上报时间"
FROM collector_status c
LEFT JOIN enterprise e ON e.code = c.enterprise
WHERE c.enterprise IN ($enterprise) OR c.enterprise IS NULL
ORDER BY c.up, c.source"""


def historian() -> str:
    return """SELECT h.engine AS "引擎", CASE WHEN h.db_up THEN '在线' ELSE '落盘缓存' END AS "数据库",
       h.pending_rows AS "待补写行", h.pending_bytes AS "缓存字节", h.written_rows AS "已写入",
       h.drained_rows AS "已补写", h.dropped_rows AS "丢弃", h.quarantined_rows AS "隔离",
       h.gap_markers AS "停机缺口标记", h.at AS "上报时间",
       hb.at AS "心跳", hb.started_at AS "启动时间"
FROM historian_status h
LEFT JOIN engine_heartbeat hb ON hb.name = h.engine
ORDER BY h.engine"""


def gaps() -> str:
    """Gaps in collection: an engine's crash gap (collection_gap, recorded by the next start,
    which stamped BAD|COMM_FAILURE markers on every point) and lost links (minutes whose newest
    reading is a BAD|COMM_FAILURE marker, quality 0x18, from the rollup, until the point's next
    minute with data: empty while still out; a crash's own markers are left to its row)."""
    return f"""SELECT g.gap_from AS "开始", g.gap_to AS "结束", '引擎停机缺口' AS "类型", g.points AS "点数", g.engine AS "来源"
FROM collection_gap g
WHERE g.gap_to >= $__timeFrom()::timestamptz AND g.gap_from <= $__timeTo()::timestamptz
UNION ALL
SELECT min(m.last_time), CASE WHEN bool_or(nx.bucket IS NULL) THEN NULL ELSE max(nx.bucket) END, '通讯中断',
       count(DISTINCT m.tag_id)::int, e.name
{_SCOPED_TAGS}
JOIN reading_1m m ON m.tag_id = t.id
LEFT JOIN LATERAL (
  SELECT n.bucket FROM reading_1m n WHERE n.tag_id = m.tag_id AND n.bucket > m.bucket AND n.count > 0
  ORDER BY n.bucket LIMIT 1) nx ON true
WHERE $__timeFilter(m.bucket) AND m.last_quality = 24 AND e.code IN ($enterprise)
  AND NOT EXISTS (SELECT FROM collection_gap g WHERE g.gap_from = m.last_time)
GROUP BY m.bucket, e.code, e.name
ORDER BY 1 DESC LIMIT 500"""
