"""The four boards, built with Grafana's typed builders (grafana-foundation-sdk, Grafana 11.6).

The SDK has no query type for SQL datasources, so ``SqlQuery`` below is the one we add: the
fields Grafana's PostgreSQL datasource stores for a raw-SQL query (refId, rawSql, format,
rawQuery, editorMode, datasource). Everything else (panels, variables, thresholds, overrides,
links) is the SDK's own. Panel ids are assigned in order, and the layout is the SDK's
left-to-right flow, so the same plant gives the same JSON.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Any

from grafana_foundation_sdk.builders import (
    bargauge,
    dashboard,
    piechart,
    stat,
    table,
    timeseries,
)
from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import piechart as pm

from core.plant import Limits, Plant, Tag, TagKind
from core.settings import Settings
from dashboards import sql

__all__ = ["BOARD_UIDS", "DATASOURCE_TYPE", "build_boards"]

DATASOURCE_TYPE = "grafana-postgresql-datasource"
BOARD_UIDS = ("hw-bureau", "hw-hazard-source", "hw-alarms", "hw-data-quality")

# GB 2893 safety colours as Grafana names them; risk colours per DOMAIN.md (红 橙 黄 蓝).
RED, ORANGE, YELLOW, BLUE, GREEN = "red", "orange", "yellow", "blue", "green"


class SqlQuery(cogvariants.Dataquery):
    """A raw-SQL target of Grafana's PostgreSQL datasource."""

    def __init__(self, ref_id: str, raw_sql: str, fmt: str, datasource: dm.DataSourceRef) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.format = fmt
        self.datasource = datasource

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "datasource": self.datasource.to_json(),
            "editorMode": "code",
            "format": self.format,
            "rawQuery": True,
            "rawSql": self.raw_sql,
        }


class Sql(cogbuilder.Builder[SqlQuery]):
    def __init__(self, raw_sql: str, fmt: typing.Literal["table", "time_series"], ds: dm.DataSourceRef,
                 ref_id: str = "A") -> None:  # fmt: skip
        self._q = SqlQuery(ref_id, raw_sql, fmt, ds)

    def build(self) -> SqlQuery:
        return self._q


class _Ctx:
    """What every board builder needs: the datasource reference and the links' bases."""

    def __init__(self, settings: Settings) -> None:
        g = settings.grafana
        self.ds = dm.DataSourceRef(type_val=DATASOURCE_TYPE, uid=g.datasource_uid)
        self.console = g.console_url
        self.refresh = g.refresh
        self.deadlines = g.ack_deadline_s
        self.next_id = 0

    def pid(self) -> int:
        self.next_id += 1
        return self.next_id

    def table(self, title: str, raw_sql: str, h: int = 8, w: int = 24) -> table.Panel:
        return (
            table.Panel().id(self.pid()).title(title).datasource(self.ds).height(h).span(w)
            .with_target(Sql(raw_sql, "table", self.ds)).filterable(True)
        )  # fmt: skip

    def series(self, title: str, raw_sql: str, h: int = 8, w: int = 12) -> timeseries.Panel:
        return (
            timeseries.Panel().id(self.pid()).title(title).datasource(self.ds).height(h).span(w)
            .with_target(Sql(raw_sql, "time_series", self.ds))
        )  # fmt: skip

    def stat(self, title: str, raw_sql: str, h: int = 4, w: int = 6) -> stat.Panel:
        return (
            stat.Panel().id(self.pid()).title(title).datasource(self.ds).height(h).span(w)
            .with_target(Sql(raw_sql, "table", self.ds))
            .reduce_options(common_b.ReduceDataOptions().values(True).calcs([]).fields(""))
        )  # fmt: skip

    def alarm_link(self, field: str = "key") -> dashboard.DashboardLink:
        """A table cell's link to the console's alarm detail (the row's alarm key)."""
        return (
            dashboard.DashboardLink("报警详情 (值班台)")
            .url(f"{self.console}#alarm?key=${{__data.fields.{field}:percentencode}}")
            .target_blank(True)
        )


def _var_query(
    name: str, label: str, raw_sql: str, ds: dm.DataSourceRef, *, multi: bool, include_all: bool
) -> dashboard.QueryVariable:
    v = (
        dashboard.QueryVariable(name).label(label).datasource(ds).query(raw_sql)
        .refresh(dm.VariableRefresh.ON_DASHBOARD_LOAD).sort(dm.VariableSort.DISABLED)
        .multi(multi).include_all(include_all)
    )  # fmt: skip
    if include_all:
        v = v.current(dm.VariableOption(selected=True, text="All", value="$__all"))
    return v


_COUNTIES = "SELECT DISTINCT county FROM enterprise WHERE retired_at IS NULL ORDER BY 1"
_ENTERPRISES = "SELECT code AS __value, name AS __text FROM enterprise WHERE retired_at IS NULL ORDER BY code"
_SOURCES = (
    "SELECT h.code AS __value, h.name AS __text FROM hazard_source h JOIN enterprise e ON e.id = h.enterprise_id "
    "WHERE e.code = '$enterprise' AND h.retired_at IS NULL ORDER BY h.code"
)


def _thresholds(steps: Sequence[tuple[float | None, str]]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=v, color=c) for v, c in steps])
    )  # fmt: skip


def _text_colours(colours: dict[str, str]) -> list[dm.ValueMapping]:
    return [
        dm.ValueMap(options={k: dm.ValueMappingResult(color=c, index=i)})
        for i, (k, c) in enumerate(colours.items())
    ]


def _cell_colour() -> dm.DynamicConfigValue:
    return dm.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"})


def _hidden() -> dm.DynamicConfigValue:
    """A table column kept for links (an alarm's key, a source's codes) but not shown."""
    return dm.DynamicConfigValue(id_val="custom.hidden", value=True)


# --- bureau overview ---------------------------------------------------------------------------


def bureau(plant: Plant, c: _Ctx) -> dashboard.Dashboard:
    interlocks = sql.interlocks_of(plant)
    detail = (
        "/d/hw-hazard-source/?var-enterprise=${__data.fields.enterprise:percentencode}"
        "&var-hazard_source=${__data.fields.hazard_source:percentencode}&${__url_time_range}"
    )
    risk = {"红": RED, "橙": ORANGE, "黄": YELLOW, "蓝": BLUE}
    sources = (
        c.table("重大危险源一览 (实时风险)", sql.bureau_sources(c.deadlines), h=12)
        .override_by_name("风险", [dm.DynamicConfigValue(id_val="mappings", value=[m.to_json() for m in _text_colours(risk)]),
                                  _cell_colour()])
        .override_by_name("危险源", [dm.DynamicConfigValue(id_val="links", value=[
            dashboard.DashboardLink("危险源详情").url(detail).build().to_json()])])
        .override_by_name("enterprise", [_hidden()])
        .override_by_name("hazard_source", [_hidden()])
    )  # fmt: skip
    d = (
        dashboard.Dashboard("应急局总览 · 重大危险源").uid("hw-bureau")
        .tags(["hazardwatch", "bureau"]).time("now-24h", "now").timezone("browser").refresh(c.refresh)
        .description("每个企业和重大危险源的等级、实时风险、报警、超时未确认、联锁旁路/停用、数据在线率和报警趋势。")
        .with_variable(_var_query("county", "属地", _COUNTIES, c.ds, multi=True, include_all=True))
        .with_panel(c.stat("重大危险源", "SELECT count(*) AS \"重大危险源\" FROM hazard_source h JOIN enterprise e "
                           "ON e.id = h.enterprise_id WHERE h.retired_at IS NULL AND e.county IN ($county)"))
        .with_panel(c.stat("报警 (按优先级)", sql.bureau_active_by_priority(), w=8).no_value("0")
                    .thresholds(_thresholds([(None, GREEN), (1, ORANGE)])))
        .with_panel(c.stat("数据在线率 (24 小时)", sql.online_city("e.county IN ($county)"), w=5)
                    .unit("percentunit").decimals(1).time_from("24h")
                    .thresholds(_thresholds([(None, RED), (0.9, ORANGE), (0.95, GREEN)])))
        .with_panel(c.stat("超时未确认", sql.bureau_overdue_count(c.deadlines), w=5)
                    .thresholds(_thresholds([(None, GREEN), (1, RED)])))
        .with_panel(sources)
        .with_panel(c.series("报警趋势 (按优先级)", sql.bureau_alarm_trend(), w=12)
                    .draw_style(common.GraphDrawStyle.BARS).stacking(common_b.StackingConfig().mode(common.StackingMode.NORMAL)))
        .with_panel(c.table("各企业数据在线率 (24 小时)", sql.online_by_enterprise("e.county IN ($county)"), w=12)
                    .time_from("24h").override_by_name("在线率", [
                        dm.DynamicConfigValue(id_val="unit", value="percentunit"),
                        dm.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"}),
                        dm.DynamicConfigValue(id_val="thresholds", value=_thresholds(
                            [(None, RED), (0.9, ORANGE), (0.95, GREEN)]).build().to_json())]))
        .with_panel(c.table("超时未确认报警", sql.bureau_overdue(c.deadlines), w=12)
                    .data_links([c.alarm_link()]).override_by_name("key", [_hidden()]))
        .with_panel(c.table("联锁旁路 / 停用 / 输入故障", sql.interlock_exceptions(interlocks), w=12))
    )  # fmt: skip
    return d


# --- hazard source detail ----------------------------------------------------------------------

# one trend per measured kind (a tag's unit is in its series name, sql.SERIES_NAME)
_KIND_PANELS = (
    (TagKind.LEVEL, "液位"),
    (TagKind.PRESSURE, "压力"),
    (TagKind.TEMPERATURE, "温度"),
    (TagKind.FLOW, "流量"),
    (TagKind.GAS, "可燃/有毒气体"),
    (TagKind.COMPOSITION, "组分"),
)
_SCOPE = "e.code = '$enterprise' AND h.code = '$hazard_source'"


def _limit_steps(limits: Limits) -> list[tuple[float | None, str]]:
    """Grafana thresholds drawn as lines: LL/HH red, L/H orange (a step's colour applies from
    its value up; a transparent base keeps the area below the lowest limit unpainted)."""
    steps: list[tuple[float | None, str]] = [(None, "transparent")]
    for value, colour in ((limits.ll, RED), (limits.l, ORANGE), (limits.h, ORANGE), (limits.hh, RED)):
        if value is not None:
            steps.append((float(value), colour))
    return steps


def _limit_overrides(panel: timeseries.Panel, tags: Sequence[Tag]) -> timeseries.Panel:
    """One override per tag with alarm limits, matched by its series name (sql.SERIES_NAME):
    the board holds the limits of the plant's tags of that kind (rebuilt with the config)."""
    for t in sorted(tags, key=lambda t: t.key):
        props: list[dm.DynamicConfigValue] = []
        if t.limits is not None and len(_limit_steps(t.limits)) > 1:
            props += [
                dm.DynamicConfigValue(
                    id_val="thresholds", value=_thresholds(_limit_steps(t.limits)).build().to_json()
                ),
                dm.DynamicConfigValue(id_val="custom.thresholdsStyle", value={"mode": "dashed"}),
            ]
        if props:
            panel = panel.override_by_name(sql.series_name(t.key, t.name, t.unit), props)
    return panel


def hazard_source(plant: Plant, c: _Ctx) -> dashboard.Dashboard:
    interlocks = sql.interlocks_of(plant)
    tags = plant.tags()
    d = (
        dashboard.Dashboard("重大危险源详情").uid("hw-hazard-source")
        .tags(["hazardwatch", "hazard-source"]).time("now-6h", "now").timezone("browser").refresh(c.refresh)
        .description("液位、压力、温度、流量和气体检测 (报警限值画线)、紧急切断阀、联锁表决和最近报警。")
        .with_variable(_var_query("enterprise", "企业", _ENTERPRISES, c.ds, multi=False, include_all=False))
        .with_variable(_var_query("hazard_source", "危险源", _SOURCES, c.ds, multi=False, include_all=False))
        .link(dashboard.DashboardLink("应急局总览").type(dm.DashboardLinkType.LINK).url("/d/hw-bureau/")
              .keep_time(True))
    )  # fmt: skip
    for kind, label in _KIND_PANELS:
        of_kind = [t for t in tags if t.kind == kind]
        if of_kind:  # a plant without, say, analysers gets no empty panel for them
            # a point a minute over the board's 6 hours: the rollup, not raw rows, at every refresh
            panel = c.series(f"{label}", sql.series(f"{_SCOPE} AND t.kind = '{kind.value}'")).max_data_points(
                360
            )
            d = d.with_panel(_limit_overrides(panel, of_kind))
    d = (
        d.with_panel(c.table("联锁状态与有效表决", sql.interlock_status(
            interlocks, "d.enterprise = '$enterprise' AND d.hazard_source = '$hazard_source'"), h=7)
            .override_by_name("安全位置", [_cell_colour(), dm.DynamicConfigValue(id_val="mappings", value=[
                m.to_json() for m in _text_colours({"true": GREEN, "false": RED})])])
            .override_by_name("状态", [_cell_colour(), dm.DynamicConfigValue(id_val="mappings", value=[
                m.to_json() for m in _text_colours({"投用": GREEN, "降级": ORANGE, "无法动作": RED, "停用": RED})])]))
        .with_panel(c.table("紧急切断阀与开关量", sql.latest_table(f"{_SCOPE} AND t.kind = 'DISCRETE'"), h=7, w=12))
        .with_panel(c.table("最近报警", sql.alarm_rows(
            "s.enterprise = '$enterprise' AND s.hazard_source = '$hazard_source'"), h=7, w=12)
            .data_links([c.alarm_link()]).override_by_name("key", [_hidden()]))
        .with_panel(c.table("全部测点当前值", sql.latest_table(_SCOPE), h=10))
    )  # fmt: skip
    return d


# --- alarm performance -------------------------------------------------------------------------


def alarm_performance(c: _Ctx) -> dashboard.Dashboard:
    stale_h = (
        dashboard.CustomVariable("stale_h").label("陈旧报警 (小时)").values("24,8,1,0")
        .current(dm.VariableOption(selected=True, text="24", value="24"))
    )  # fmt: skip
    d = (
        dashboard.Dashboard("报警绩效 (ISA-18.2 / EEMUA 191)").uid("hw-alarms")
        .tags(["hazardwatch", "alarms", "kpi"]).time("now-7d", "now").timezone("browser").refresh(c.refresh)
        .description("每 10 分钟报警数 (目标 ≤1，>10 为泛滥)、泛滥时段、前 10 报警源、抖动与陈旧报警、优先级分布、确认时间。")
        # one operator position at a time: ISA-18.2's and EEMUA's rates are per position, and a
        # city's enterprises summed would look like a flood
        .with_variable(_var_query("enterprise", "企业 (操作岗位)", _ENTERPRISES, c.ds, multi=False, include_all=False))
        .with_variable(stale_h)
        .with_panel(c.stat("报警率与泛滥", sql.kpi_summary(), w=24)
                    .thresholds(_thresholds([(None, BLUE)]))
                    .override_by_name("平均报警数/10分钟", [dm.DynamicConfigValue(
                        id_val="thresholds", value=_thresholds([(None, GREEN), (sql.TARGET_PER_10MIN, ORANGE),
                                                                (sql.FLOOD_PER_10MIN, RED)]).build().to_json())])
                    .override_by_name("10分钟峰值", [dm.DynamicConfigValue(
                        id_val="thresholds", value=_thresholds([(None, GREEN), (sql.TARGET_PER_10MIN + 0.5, ORANGE),
                                                                (sql.FLOOD_PER_10MIN + 0.5, RED)]).build().to_json())])
                    .override_by_name("泛滥时间占比", [
                        dm.DynamicConfigValue(id_val="unit", value="percentunit"),
                        dm.DynamicConfigValue(id_val="thresholds", value=_thresholds(
                            [(None, GREEN), (0.01, RED)]).build().to_json())]))
        .with_panel(c.series("每 10 分钟报警数 (目标 1，泛滥 10)", sql.kpi_rate(), w=24)
                    .draw_style(common.GraphDrawStyle.BARS)
                    .thresholds(_thresholds([(None, GREEN), (sql.TARGET_PER_10MIN + 0.001, ORANGE),
                                             (sql.FLOOD_PER_10MIN + 0.001, RED)]))
                    .thresholds_style(common_b.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.LINE)))
        .with_panel(c.table("泛滥时段 (10 分钟 >10 条)", sql.kpi_floods(), w=12))
        .with_panel(c.table("前 10 报警源", sql.kpi_top(), w=12)
                    .data_links([c.alarm_link()])
                    .override_by_name("占比", [dm.DynamicConfigValue(id_val="unit", value="percentunit")]))
        .with_panel(c.table("抖动报警 (1 分钟内 ≥3 次)", sql.kpi_chattering(), w=12).data_links([c.alarm_link()]))
        .with_panel(c.table("陈旧报警", sql.kpi_stale(), w=12).data_links([c.alarm_link()]))
        .with_panel(piechart.Panel().id(c.pid()).no_value("0").title("优先级分布 (建议 低 ≈80% / 中 ≈15% / 高与紧急 ≈5%)")
                    .datasource(c.ds).height(8).span(12).with_target(Sql(sql.kpi_priority_mix(), "table", c.ds))
                    .pie_type(pm.PieChartType.DONUT)
                    .reduce_options(common_b.ReduceDataOptions().values(True).calcs([]).fields("")))
        .with_panel(c.table("确认时间 (按优先级)", sql.kpi_time_to_ack(c.deadlines), w=12))
    )  # fmt: skip
    return d


# --- data quality ------------------------------------------------------------------------------


def data_quality(c: _Ctx) -> dashboard.Dashboard:
    d = (
        dashboard.Dashboard("数据质量").uid("hw-data-quality")
        .tags(["hazardwatch", "data-quality"]).time("now-24h", "now").timezone("browser").refresh(c.refresh)
        .description("各企业和测点的在线率、陈旧/坏值/冻结测点、采集链路健康、历史库缓存和停机缺口。")
        .with_variable(_var_query("enterprise", "企业", _ENTERPRISES, c.ds, multi=True, include_all=True))
        .with_panel(bargauge.Panel().id(c.pid()).title("企业数据在线率").datasource(c.ds).height(8).span(12)
                    .with_target(Sql(sql.online_by_enterprise("e.code IN ($enterprise)"), "table", c.ds))
                    .unit("percentunit").min(0).max(1)
                    .thresholds(_thresholds([(None, RED), (0.9, ORANGE), (0.95, GREEN)]))
                    .reduce_options(common_b.ReduceDataOptions().values(True).calcs([]).fields("/^在线率$/")))
        .with_panel(c.stat("坏值 / 无数据测点", sql.quality_counts(), w=12)
                    .thresholds(_thresholds([(None, GREEN), (1, ORANGE)])))
        .with_panel(c.table("在线率最低的测点", sql.online_worst_points("e.code IN ($enterprise)"), w=12)
                    .override_by_name("在线率", [dm.DynamicConfigValue(id_val="unit", value="percentunit")]))
        .with_panel(c.table("陈旧 / 坏值 / 冻结测点", sql.quality_points(), w=12))
        .with_panel(c.table("采集链路", sql.collectors(), w=24)
                    .override_by_name("状态", [_cell_colour(), dm.DynamicConfigValue(id_val="mappings", value=[
                        m.to_json() for m in _text_colours(
                            {"正常": GREEN, "启动中": BLUE, "部分设备中断": ORANGE, "中断": RED, "未上报": RED})])]))
        .with_panel(c.table("历史库与落盘缓存", sql.historian(), h=5, w=24))
        .with_panel(c.table("采集缺口 (停机与通讯中断)", sql.gaps(), w=24))
    )  # fmt: skip
    return d


# --- all of them -------------------------------------------------------------------------------


def build_boards(plant: Plant, settings: Settings | None = None) -> list[dict[str, Any]]:
    """The four boards as Grafana dashboard JSON, deterministic for one plant and settings.

    ``plant`` as ``core.config.load_plant`` gives it (keys set, gas levels resolved to limits)."""
    settings = settings or plant.settings
    boards = []
    for make in (
        lambda c: bureau(plant, c), lambda c: hazard_source(plant, c), alarm_performance, data_quality
    ):  # fmt: skip
        ctx = _Ctx(settings)
        board = _plain(make(ctx).build())
        _flow(board["panels"])
        boards.append(board)
    return boards


def _flow(panels: list[dict[str, Any]]) -> None:
    """Lay panels out left to right, starting a new row where the next one does not fit (the
    SDK's own flow places a full-width panel after a half-width one off the 24-column grid)."""
    x = y = row_h = 0
    for p in panels:
        g = p["gridPos"]
        if x + g["w"] > 24:
            x, y, row_h = 0, y + row_h, 0
        g["x"], g["y"] = x, y
        x += g["w"]
        row_h = max(row_h, g["h"])


def _plain(obj: object) -> dict[str, Any]:
    """The SDK's object tree as plain JSON data (its encoder calls each object's to_json)."""
    import json

    data: dict[str, Any] = json.loads(json.dumps(obj, cls=JSONEncoder, ensure_ascii=False))
    return data
