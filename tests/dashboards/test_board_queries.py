"""Every panel and variable query of every generated board, run as Grafana would run it.

Against a historian the real chain filled (tests/support/grafana_plant.py: the simulated plant
with a PLC restart, a crash and restart, acknowledgements, a chattering alarm and a bypass
permit), on both backends, as the read-only role hazardwatch_grafana, with the macros and
template variables expanded by dashboards/expand.py as Grafana expands them. Each query must
give the columns and types its panel is built for, and data.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import errors

from api.online import PlantIndex, online_rates
from core.settings import AckDeadlines, GrafanaSettings
from dashboards.boards import build_boards
from dashboards.build import PanelQuery, panel_queries, variable_queries
from dashboards.expand import TimeRange, Variable, expand, interval_for
from dashboards.push import TIME_INTERVAL
from storage.db import Backend, connect
from tests.support.grafana_plant import Filled

# Every deadline one second: the scenario's standing alarms are overdue by the time we look.
SETTINGS_GRAFANA = GrafanaSettings(ack_deadline_s=AckDeadlines(critical=1, high=1, medium=1, low=1))

T, I, F, B, D = "text", "int", "float", "bool", "time"  # noqa: E741 (column kinds, one letter for the table)
_KIND = {
    "text": T, "int2": I, "int4": I, "int8": I, "numeric": F, "float8": F, "bool": B, "timestamptz": D,
}  # fmt: skip
SERIES = {"time": D, "metric": T, "value": F}
# The datasource's minimum interval (jsonData.timeInterval, provisioning and push: "1s"); Grafana's
# SQL datasource would assume 1m without it.
MIN_INTERVAL = timedelta(seconds=float(TIME_INTERVAL.removesuffix("s")))

# The columns each panel's visualisation is configured for (overrides, links, mappings name them).
COLUMNS: dict[tuple[str, str], dict[str, str]] = {
    ("hw-bureau", "重大危险源"): {"重大危险源": I},
    ("hw-bureau", "报警 (按优先级)"): {"priority": T, "alarms": I},
    ("hw-bureau", "数据在线率 (24 小时)"): {"在线率": F},
    ("hw-bureau", "超时未确认"): {"超时未确认": I},
    ("hw-bureau", "重大危险源一览 (实时风险)"): {
        "属地": T, "企业": T, "危险源": T, "等级": I, "风险": T, "紧急": I, "高": I, "中低": I, "超时未确认": I,
        "联锁旁路停用": I, "enterprise": T, "hazard_source": T,
    },
    ("hw-bureau", "报警趋势 (按优先级)"): {"time": D, "metric": T, "value": I},
    ("hw-bureau", "各企业数据在线率 (24 小时)"): {"企业": T, "在线率": F, "点数": I},
    ("hw-bureau", "超时未确认报警"): {
        "报警时间": D, "企业": T, "危险源": T, "优先级": T, "位号": T, "类型": T, "未确认分钟": F, "key": T,
    },
    ("hw-bureau", "联锁旁路 / 停用 / 输入故障"): {
        "企业": T, "危险源": T, "联锁": T, "名称": T, "状态": T, "有效表决": T, "表决": T, "旁路输入": T,
        "故障输入": T, "许可到期": D,
    },
    ("hw-hazard-source", "液位"): SERIES,
    ("hw-hazard-source", "压力"): SERIES,
    ("hw-hazard-source", "温度"): SERIES,
    ("hw-hazard-source", "流量"): SERIES,
    ("hw-hazard-source", "可燃/有毒气体"): SERIES,
    ("hw-hazard-source", "联锁状态与有效表决"): {
        "联锁": T, "名称": T, "表决": T, "有效表决": T, "动作输入": I, "联锁动作": B, "降级": B, "状态": T,
        "旁路输入": T, "故障输入": T, "旁路许可": I, "许可到期": D, "切断阀": T, "阀位": F, "安全位置": B,
    },
    ("hw-hazard-source", "紧急切断阀与开关量"): {
        "位号": T, "名称": T, "类型": T, "当前值": F, "单位": T, "质量": T, "时间": D,
    },
    ("hw-hazard-source", "最近报警"): {
        "时间": D, "优先级": T, "状态": T, "位号": T, "类型": T, "值": F, "限值": F, "确认时间": D, "key": T,
    },
    ("hw-hazard-source", "全部测点当前值"): {
        "位号": T, "名称": T, "类型": T, "当前值": F, "单位": T, "质量": T, "时间": D,
    },
    ("hw-alarms", "报警率与泛滥"): {"平均报警数/10分钟": F, "报警总数": F, "泛滥时间占比": F, "10分钟峰值": I},
    ("hw-alarms", "每 10 分钟报警数 (目标 1，泛滥 10)"): {"time": D, "报警数/10分钟": I},
    ("hw-alarms", "泛滥时段 (10 分钟 >10 条)"): {"开始": D, "结束": D, "报警数": F, "10分钟峰值": I},
    ("hw-alarms", "前 10 报警源"): {"key": T, "位号": T, "类型": T, "次数": I, "占比": F},
    ("hw-alarms", "抖动报警 (1 分钟内 ≥3 次)"): {"key": T, "抖动次数": I, "最近": D},
    ("hw-alarms", "陈旧报警"): {"key": T, "位号": T, "优先级": T, "状态": T, "报警时间": D, "持续小时": F},
    ("hw-alarms", "优先级分布 (建议 低 ≈80% / 中 ≈15% / 高与紧急 ≈5%)"): {"priority": T, "alarms": I},
    ("hw-alarms", "确认时间 (按优先级)"): {
        "优先级": T, "确认次数": I, "中位(秒)": F, "90%(秒)": F, "时限(秒)": F, "超时": I,
    },
    ("hw-data-quality", "企业数据在线率"): {"企业": T, "在线率": F, "点数": I},
    ("hw-data-quality", "坏值 / 无数据测点"): {"坏": I, "无数据": I, "点数": I},
    ("hw-data-quality", "在线率最低的测点"): {"企业": T, "危险源": T, "位号": T, "名称": T, "在线率": F},
    ("hw-data-quality", "陈旧 / 坏值 / 冻结测点"): {
        "企业": T, "位号": T, "名称": T, "问题": T, "质量码": I, "值": F, "最新时间": D,
    },
    ("hw-data-quality", "采集链路"): {
        "采集源": T, "协议": T, "企业": T, "状态": T, "设备": T, "点数": I, "读数": I, "重连": I, "中断起": D,
        "最后成功": D, "最后错误": T, "上报时间": D,
    },
    ("hw-data-quality", "历史库与落盘缓存"): {
        "引擎": T, "数据库": T, "待补写行": I, "缓存字节": I, "已写入": I, "已补写": I, "丢弃": I, "隔离": I,
        "停机缺口标记": I, "上报时间": D, "心跳": D, "启动时间": D,
    },
    ("hw-data-quality", "采集缺口 (停机与通讯中断)"): {"开始": D, "结束": D, "类型": T, "点数": I, "来源": T},
}  # fmt: skip


def _boards(filled: Filled) -> list[dict[str, Any]]:
    settings = filled.plant.settings.model_copy(update={"grafana": SETTINGS_GRAFANA})
    return build_boards(filled.plant, settings)


def _reader(filled: Filled) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(filled.dsn, user="hazardwatch_grafana", autocommit=True)


def _variables(
    filled: Filled, board: str, enterprise: str | None = None, source: str | None = None
) -> list[Variable]:
    """The board's variables as Grafana would send them: the detail board and the alarm KPIs
    (one operator position) single-valued, the others "All" (or the one enterprise given)."""
    plant = filled.plant
    if board == "hw-hazard-source":
        return [Variable("enterprise", enterprise or ""), Variable("hazard_source", source or "")]
    if board == "hw-alarms":
        return [
            Variable("enterprise", enterprise or ""),
            Variable("stale_h", "0"),
        ]  # 0 h: every standing alarm
    chosen = [e for e in plant.enterprises if enterprise is None or e.code == enterprise]
    return [
        Variable("county", sorted({e.county for e in chosen}), multi=True, include_all=enterprise is None),
        Variable("enterprise", sorted(e.code for e in chosen), multi=True, include_all=enterprise is None),
    ]


def _scopes(filled: Filled, board: str) -> list[tuple[str | None, str | None]]:
    plant = filled.plant
    if board == "hw-hazard-source":
        return [(e.code, h.code) for e in plant.enterprises for h in e.hazard_sources]
    if board == "hw-alarms":
        return [(e.code, None) for e in plant.enterprises]
    return [(None, None)]


def _ranges(filled: Filled, q: PanelQuery) -> dict[str, TimeRange]:
    now = datetime.now(UTC)
    if q.time_from is not None:  # the panel's own relative range
        assert q.time_from == "24h"
        return {"own": TimeRange(now - timedelta(hours=24), now)}
    return {
        "scenario": TimeRange(filled.start - timedelta(minutes=1), now),
        "30 days": TimeRange(now - timedelta(days=30), now),
    }


def _run(conn: psycopg.Connection[tuple[Any, ...]], filled: Filled, q: PanelQuery, rng: TimeRange,
         variables: list[Variable]) -> tuple[dict[str, str], list[tuple[Any, ...]]]:  # fmt: skip
    text = expand(
        q.raw_sql, rng, interval=interval_for(rng, q.max_data_points, min_interval=MIN_INTERVAL), variables=variables,
        timescaledb=filled.backend is Backend.TIMESCALEDB,
    )  # fmt: skip
    try:
        cur = conn.execute(text)
    except psycopg.Error as exc:
        raise AssertionError(f"{q.board_uid} «{q.title}»: {exc}\n{text}") from exc
    rows = cur.fetchall()
    assert cur.description is not None
    kinds = {}
    for d in cur.description:
        info = conn.adapters.types.get(d.type_code)
        kinds[d.name] = _KIND.get(info.name if info else str(d.type_code), str(d.type_code))
    return kinds, rows


def _kinds_match(got: dict[str, str], want: dict[str, str]) -> bool:
    """Grafana's $__timeGroupAlias gives epoch seconds (numeric) without TimescaleDB and a
    timestamptz with it: both are a time to Grafana; an integer count may come as numeric."""
    if list(got) != list(want):
        return False
    for name, kind in want.items():
        ok = {kind} | ({F} if kind in (D, I) else set())
        if got[name] not in ok:
            return False
    return True


def test_every_panel_query_runs_with_its_columns_and_data(filled: Filled) -> None:
    boards = _boards(filled)
    seen: set[tuple[str, str]] = set()
    nonempty: set[tuple[str, str]] = set()
    with _reader(filled) as conn:
        for board in boards:
            scopes = _scopes(filled, board["uid"])
            for q in panel_queries(board):
                key = (q.board_uid, q.title)
                assert key in COLUMNS, f"a panel the test does not know: {key}"
                seen.add(key)
                for ent, hs in scopes:
                    for label, rng in _ranges(filled, q).items():
                        kinds, rows = _run(conn, filled, q, rng, _variables(filled, board["uid"], ent, hs))
                        assert _kinds_match(kinds, COLUMNS[key]), f"{key} over {label}: {kinds}"
                        if rows:
                            nonempty.add(key)
    assert seen == set(COLUMNS), f"panels gone: {set(COLUMNS) - seen}"
    assert nonempty == seen, f"no data from: {sorted(seen - nonempty)}"


def test_the_crash_and_the_lost_gateway_show_as_gaps(filled: Filled) -> None:
    board = next(b for b in _boards(filled) if b["uid"] == "hw-data-quality")
    q = next(q for q in panel_queries(board) if q.title.startswith("采集缺口"))
    with _reader(filled) as conn:
        _, rows = _run(conn, filled, q, _ranges(filled, q)["scenario"], _variables(filled, board["uid"]))
    kinds = {r[2] for r in rows}
    assert kinds == {"引擎停机缺口", "通讯中断"}, rows
    crash = next(r for r in rows if r[2] == "引擎停机缺口")
    assert crash[3] == len(filled.plant.tags()) and crash[0] < crash[1]  # every point marked, from -> to


def test_every_variable_query_lists_choices(filled: Filled) -> None:
    with _reader(filled) as conn:
        for board in _boards(filled):
            for v in variable_queries(board):
                rng = TimeRange(filled.start, datetime.now(UTC))
                text = expand(v.raw_sql, rng, interval=interval_for(rng, min_interval=MIN_INTERVAL), variables=[Variable("enterprise", "LGGT")],
                              timescaledb=filled.backend is Backend.TIMESCALEDB)  # fmt: skip
                cur = conn.execute(text)
                rows = cur.fetchall()
                assert rows, f"{board['uid']} ${v.name}: no choices"
                assert cur.description is not None
                names = [d.name for d in cur.description]
                assert names in (["county"], ["__value", "__text"]), names


def _plan_relations(plan: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(schema, relation, loops executed) of every scan node of an EXPLAIN ANALYZE plan."""
    out = []
    if "Relation Name" in plan:
        out.append((plan["Schema"], plan["Relation Name"], int(plan.get("Actual Loops", 0))))
    for child in plan.get("Plans", []):
        out.extend(_plan_relations(child))
    return out


def _root_table(conn: psycopg.Connection[tuple[Any, ...]], schema: str, name: str) -> str:
    """A partition or TimescaleDB chunk's root table (both are inheritance children)."""
    oid = conn.execute("SELECT %s::regclass::oid", [f'"{schema}"."{name}"']).fetchone()[0]  # type: ignore[index]
    while True:
        row = conn.execute("SELECT inhparent FROM pg_inherits WHERE inhrelid = %s", [oid]).fetchone()
        if row is None:
            return str(conn.execute("SELECT %s::regclass::text", [oid]).fetchone()[0])  # type: ignore[index]
        oid = row[0]


def test_long_ranges_read_the_rollup_and_short_ranges_raw_readings(filled: Filled) -> None:
    series = [
        q
        for b in _boards(filled)
        for q in panel_queries(b)
        if q.format == "time_series" and "reading r" in q.raw_sql
    ]
    assert len(series) >= 5
    now = datetime.now(UTC)
    pairs = [(e.code, h.code) for e in filled.plant.enterprises for h in e.hazard_sources]
    ranges = {
        "30 days": TimeRange(now - timedelta(days=30), now),
        "2 minutes": TimeRange(filled.end - timedelta(minutes=2), filled.end),
    }
    with psycopg.connect(filled.dsn, autocommit=True) as conn:
        for q in series:
            read: dict[str, dict[str, int]] = {label: {} for label in ranges}
            for (ent, hs), (label, rng) in itertools.product(pairs, ranges.items()):
                text = expand(q.raw_sql, rng, interval=interval_for(rng, q.max_data_points, min_interval=MIN_INTERVAL),
                              variables=_variables(filled, q.board_uid, ent, hs),
                              timescaledb=filled.backend is Backend.TIMESCALEDB)  # fmt: skip
                row = conn.execute(f"EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON) {text}").fetchone()
                assert row is not None
                plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
                for schema, name, n in _plan_relations(plan[0]["Plan"]):
                    root = _root_table(conn, schema, name)
                    read[label][root] = read[label].get(root, 0) + n
            assert read["30 days"].get("reading", 0) == 0, f"{q.title}: 30 days scanned raw readings {read}"
            assert read["30 days"].get("reading_1m", 0) > 0, f"{q.title}: {read}"
            assert read["2 minutes"].get("reading", 0) > 0, f"{q.title}: {read}"
            assert read["2 minutes"].get("reading_1m", 0) == 0, f"{q.title}: {read}"


def test_the_grafana_role_reads_the_boards_tables_only_and_writes_nothing(filled: Filled) -> None:
    with _reader(filled) as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        assert conn.execute("SELECT count(*) FROM reading").fetchone()[0] > 0  # type: ignore[index]
        for table in ("app_user", "api_key", "audit_log", "alarm_command", "notification", "delivery",
                      "delivery_attempt", "delivery_journal", "rule_state", "schema_version"):  # fmt: skip
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(f"SELECT * FROM {table} LIMIT 1")
        # even with the read-only default turned off, it holds no write privilege anywhere
        conn.execute("SET default_transaction_read_only = off")
        for statement in (
            "INSERT INTO reading VALUES (now(), 1, 1.0, 192)",
            "UPDATE alarm_state SET acked = true",
            "DELETE FROM tag_latest",
            "TRUNCATE alarm_journal",
            "CREATE TABLE grafana_was_here (x int)",
            "INSERT INTO app_user (username, display_name, role) VALUES ('x', 'x', 'admin')",
        ):
            with pytest.raises((errors.InsufficientPrivilege, errors.ReadOnlySqlTransaction)):
                conn.execute(statement)


def test_the_online_rate_is_the_apis(filled: Filled) -> None:
    """The board's online rate per point equals api/online.py's for the same window."""
    board = next(b for b in _boards(filled) if b["uid"] == "hw-data-quality")
    q = next(q for q in panel_queries(board) if q.title == "在线率最低的测点")
    now = datetime.now(UTC)
    rng = TimeRange(filled.start - timedelta(minutes=3), now)
    variables = _variables(filled, board["uid"])
    raw = q.raw_sql.replace("LIMIT 100", "LIMIT 100000")
    with _reader(filled) as conn:
        text = expand(raw, rng, interval=interval_for(rng, min_interval=MIN_INTERVAL), variables=variables,
                      timescaledb=filled.backend is Backend.TIMESCALEDB)  # fmt: skip
        rows = conn.execute(text).fetchall()
        grafana = {r[2]: r[4] for r in rows}
        ids = dict(conn.execute("SELECT key, id FROM tag").fetchall())
    assert len(grafana) > 50

    async def api_rates() -> dict[int, float]:
        index = PlantIndex(filled.plant)
        conn = await connect(filled.dsn, autocommit=True)
        try:
            pairs = [(ids[k], index.expectation(k)) for k in grafana]
            return await online_rates(conn, pairs, rng.start, rng.end, now)
        finally:
            await conn.close()

    api = asyncio.run(api_rates())
    for key, rate in grafana.items():
        assert math.isclose(rate, api[ids[key]], abs_tol=1e-9), (key, rate, api[ids[key]])
    assert min(grafana.values()) < 1.0  # the gateway outage and the crash cost some points minutes


def _panel(filled: Filled, uid: str, title: str) -> PanelQuery:
    board = next(b for b in _boards(filled) if b["uid"] == uid)
    return next(q for q in panel_queries(board) if q.title == title)


def _rows(filled: Filled, uid: str, title: str, enterprise: str | None = None) -> list[tuple[Any, ...]]:
    q = _panel(filled, uid, title)
    rng = next(iter(_ranges(filled, q).values()))
    with _reader(filled) as conn:
        return _run(conn, filled, q, rng, _variables(filled, uid, enterprise))[1]


def _superuser(filled: Filled, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(filled.dsn, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


def test_the_bureau_board_counts_what_the_alarm_tables_hold(filled: Filled) -> None:
    sources = sum(len(e.hazard_sources) for e in filled.plant.enterprises)
    assert _rows(filled, "hw-bureau", "重大危险源") == [(sources,)]
    table = _rows(filled, "hw-bureau", "重大危险源一览 (实时风险)")
    assert (
        len(table) == sources
        and {r[4] for r in table} <= {"红", "橙", "黄", "蓝"}
        and "红" in {r[4] for r in table}
    )
    # every unacknowledged alarm is overdue with the one-second deadlines, a latched one included
    unacked = dict(
        _superuser(filled, "SELECT key, status FROM alarm_state WHERE NOT acked AND status <> 'normal'")
    )
    assert "latched" in unacked.values()
    overdue = {r[-1] for r in _rows(filled, "hw-bureau", "超时未确认报警")}
    assert overdue == {k for k, st in unacked.items() if st != "shelved"}
    assert _rows(filled, "hw-bureau", "超时未确认") == [(len(overdue),)]
    (rate,) = _rows(filled, "hw-bureau", "数据在线率 (24 小时)")[0]
    assert 0 <= rate <= 1  # the scenario's few minutes of a 24 h window (the API's own value: test below)
    permit = _superuser(filled, "SELECT interlock FROM interlock_bypass WHERE state = 'approved'")[0][0]
    exceptions = {f"{r[1]}.{r[2]}": r[4] for r in _rows(filled, "hw-bureau", "联锁旁路 / 停用 / 输入故障")}
    assert exceptions[permit] in ("旁路", "旁路超期", "输入故障")


def test_the_alarm_kpis_show_the_acknowledgements_and_the_chatter(filled: Filled) -> None:
    acks = dict(
        _superuser(filled, """SELECT s.enterprise, count(*) FROM alarm_journal j JOIN alarm_state s ON s.key = j.alarm_key
                             WHERE j.action = 'ACKED' GROUP BY 1""")
    )  # fmt: skip
    assert sum(acks.values()) >= 3
    for ent, n in acks.items():
        rows = _rows(filled, "hw-alarms", "确认时间 (按优先级)", ent)
        assert sum(r[1] for r in rows) == n and all(r[2] >= 0 for r in rows)
    chatter = [
        r
        for e in filled.plant.enterprises
        for r in _rows(filled, "hw-alarms", "抖动报警 (1 分钟内 ≥3 次)", e.code)
    ]
    assert chatter and all(r[1] >= 1 for r in chatter)
    for e in filled.plant.enterprises:  # one position's alarms only
        top = _rows(filled, "hw-alarms", "前 10 报警源", e.code)
        # tag alarms are keyed ENTERPRISE.EQUIPMENT.CODE:KIND, interlock ones HAZARD_SOURCE.CODE...
        mine = (f"{e.code}.", *(f"{h.code}." for h in e.hazard_sources))
        assert top and all(r[0].startswith(mine) for r in top), (e.code, top)


def test_a_county_sees_nothing_of_the_other(filled: Filled) -> None:
    """Grafana's variables are no tenancy (the role is the boundary), but a county's board must
    not mix in another county's enterprises: every panel, filtered to one enterprise's county."""
    plant = filled.plant
    with _reader(filled) as conn:
        for mine in plant.enterprises:
            others = [e for e in plant.enterprises if e.county != mine.county]
            assert others
            foreign = (
                {e.name for e in others}
                | {e.code + "." for e in others}
                | {h.code for e in others for h in e.hazard_sources}
            )
            for board in _boards(filled):
                if board["uid"] in ("hw-hazard-source", "hw-alarms"):
                    continue  # single-valued: one enterprise by construction
                for q in panel_queries(board):
                    for rng in _ranges(filled, q).values():
                        _, rows = _run(conn, filled, q, rng, _variables(filled, board["uid"], mine.code))
                        text = " ".join(str(c) for r in rows for c in r if isinstance(c, str))
                        leaked = sorted(f for f in foreign if f in text)
                        assert not leaked, f"{board['uid']} «{q.title}» for {mine.code}: {leaked}"


def test_the_interlock_panel_votes_as_the_api(filled: Filled) -> None:
    from api.interlock_views import Latest, defined_interlocks, interlock_view

    latest = {
        key: Latest(value, quality, time)
        for key, value, quality, time in _superuser(
            filled, "SELECT t.key, l.value, l.quality, l.time FROM tag_latest l JOIN tag t ON t.id = l.tag_id"
        )
    }
    checked = 0
    for d in defined_interlocks(filled.plant):
        api = interlock_view(d, latest, {})
        rows = _rows_detail(filled, d.enterprise.code, d.hazard_source.code)
        row = next(r for r in rows if r[0] == d.interlock.code)
        assert (row[3], row[4], row[5], row[6]) == (
            api.effective_voting,
            api.votes,
            api.demand,
            api.degraded,
        ), d.key
        assert row[9] == ",".join(sorted(k.split(".")[2] for k in api.failed_inputs)), d.key
        assert row[14] == api.final_element.safe, d.key
        checked += 1
    assert checked >= 3


def _rows_detail(filled: Filled, enterprise: str, source: str) -> list[tuple[Any, ...]]:
    q = _panel(filled, "hw-hazard-source", "联锁状态与有效表决")
    rng = next(iter(_ranges(filled, q).values()))
    with _reader(filled) as conn:
        return _run(conn, filled, q, rng, _variables(filled, "hw-hazard-source", enterprise, source))[1]


def test_the_role_cannot_read_names_or_free_text(filled: Filled) -> None:
    with _reader(filled) as conn:
        for column, table in (
            ("acked_by", "alarm_state"), ("by_whom", "alarm_state"), ("reason", "alarm_state"),
            ("actor", "alarm_journal"), ("detail", "alarm_journal"),
            ("requested_by", "interlock_bypass"), ("decided_by", "interlock_bypass"), ("reason", "interlock_bypass"),
        ):  # fmt: skip
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(f"SELECT {column} FROM {table} LIMIT 1")
        assert conn.execute("SELECT count(*) FROM alarm_journal").fetchone()[0] > 0  # type: ignore[index]


def test_data_quality_lists_what_the_engine_finds_stale_and_the_bad_points(filled: Filled) -> None:
    stale = {
        r[0] for r in _superuser(filled, "SELECT subject FROM alarm_state WHERE kind = 'STALE' AND condition")
    }
    bad = {r[0] for r in _superuser(
        filled, "SELECT t.key FROM tag_latest l JOIN tag t ON t.id = l.tag_id WHERE t.in_service AND l.quality & 64 = 0"
    )}  # fmt: skip
    assert stale
    problems = {r[1]: r[3] for r in _rows(filled, "hw-data-quality", "陈旧 / 坏值 / 冻结测点")}
    for key in stale:
        assert "陈旧" in problems[key].split(","), (key, problems.get(key))
    for key in bad:
        assert "坏" in problems[key].split(","), (key, problems.get(key))
