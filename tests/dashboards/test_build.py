"""The generated boards: structure Grafana needs, stability, and what they take from the config."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from core.config import load_plant
from core.errors import ConfigError
from core.plant import Plant, TagKind
from core.settings import GrafanaSettings
from dashboards.boards import BOARD_UIDS, DATASOURCE_TYPE, build_boards
from dashboards.build import board_json, panel_queries, write_build
from dashboards.sql import literal, series_name

ROOT = Path(__file__).resolve().parents[2]
TWO = ROOT / "tests/core/data/two_enterprises.yaml"


@pytest.fixture(scope="module")
def demo() -> Plant:
    return load_plant(ROOT / "config/demo")


@pytest.fixture(scope="module")
def boards(demo: Plant) -> list[dict[str, Any]]:
    return build_boards(demo)


def _panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for top in board["panels"] for p in (top, *top.get("panels", []))]


def test_four_boards_with_stable_uids_and_grafana_11_schema(boards: list[dict[str, Any]]) -> None:
    assert [b["uid"] for b in boards] == list(BOARD_UIDS)
    for b in boards:
        assert b["schemaVersion"] == 41  # Grafana 11.6's dashboard schema (grafana-foundation-sdk 11.6)
        assert (b["title"] and "id" not in b) or b.get("id") is None
        assert "hazardwatch" in b["tags"]


def test_panel_ids_unique_and_layout_inside_the_grid(boards: list[dict[str, Any]]) -> None:
    for b in boards:
        ids = [p["id"] for p in _panels(b)]
        assert len(ids) == len(set(ids)), b["uid"]
        for p in _panels(b):
            g = p["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, (b["uid"], p["title"], g)


def test_every_query_and_variable_uses_the_hazardwatch_datasource(boards: list[dict[str, Any]]) -> None:
    ref = {"type": DATASOURCE_TYPE, "uid": "hazardwatch-pg"}
    for b in boards:
        for p in _panels(b):
            assert p["datasource"] == ref, (b["uid"], p["title"])
            for t in p["targets"]:
                assert (
                    t["datasource"] == ref
                    and t["rawQuery"] is True
                    and t["format"] in ("table", "time_series")
                )
        for v in b["templating"]["list"]:
            if v["type"] == "query":
                assert v["datasource"] == ref


def test_a_settings_datasource_and_console_reach_every_reference(demo: Plant) -> None:
    settings = demo.settings.model_copy(
        update={
            "grafana": GrafanaSettings(
                datasource_uid="plant-7", console_url="https://duty.example.cn/console/"
            )
        }
    )
    text = "".join(board_json(b) for b in build_boards(demo, settings))
    assert '"uid": "hazardwatch-pg"' not in text
    assert text.count('"uid": "plant-7"') > 30
    assert "https://duty.example.cn/console/#alarm?key=${__data.fields.key:percentencode}" in text


def test_generation_is_deterministic_and_the_committed_build_is_current(demo: Plant, tmp_path: Path) -> None:
    first = [board_json(b) for b in build_boards(demo)]
    second = [board_json(b) for b in build_boards(load_plant(ROOT / "config/demo"))]
    assert first == second
    written = write_build(demo, None, tmp_path)
    committed = ROOT / "dashboards/build"
    for path in written:
        rel = path.relative_to(tmp_path)
        assert (committed / rel).read_text(encoding="utf-8") == path.read_text(encoding="utf-8"), (
            f"dashboards/build/{rel} is stale: run `hazardwatch grafana build`"
        )


def test_alarm_limits_from_the_config_are_drawn_as_threshold_lines(
    demo: Plant, boards: list[dict[str, Any]]
) -> None:
    detail = next(b for b in boards if b["uid"] == "hw-hazard-source")
    overrides = {
        o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
        for p in _panels(detail)
        for o in p.get("fieldConfig", {}).get("overrides", [])
        if o["matcher"]["id"] == "byName"
    }
    checked = 0
    for tag in demo.tags():
        if tag.limits is None or tag.kind not in (
            TagKind.PRESSURE,
            TagKind.LEVEL,
            TagKind.GAS,
            TagKind.TEMPERATURE,
        ):
            continue
        props = overrides[series_name(tag.key, tag.name, tag.unit)]
        steps = props["thresholds"]["steps"]
        want = [v for v in (tag.limits.ll, tag.limits.l, tag.limits.h, tag.limits.hh) if v is not None]
        assert [s["value"] for s in steps[1:]] == want, tag.key
        assert props["custom.thresholdsStyle"] == {"mode": "dashed"}
        checked += 1
    gas = [t for t in demo.tags() if t.kind == TagKind.GAS]
    assert gas and all(
        overrides[series_name(t.key, t.name, t.unit)]["thresholds"]["steps"][1]["value"] for t in gas
    )  # resolved GB/T 50493 levels
    assert checked > 20


def test_alarm_rows_link_to_the_console_and_sources_to_their_board(boards: list[dict[str, Any]]) -> None:
    by_uid = {b["uid"]: b for b in boards}
    alarm_tables = [
        p for b in boards for p in _panels(b) if p["type"] == "table" and any(re.search(r"(s\.key|alarm_key) AS key", t["rawSql"])
                                                     for t in p["targets"])
    ]  # fmt: skip
    assert len(alarm_tables) >= 5
    for p in alarm_tables:
        links = p["fieldConfig"]["defaults"]["links"]
        assert any(link["url"].endswith("#alarm?key=${__data.fields.key:percentencode}") for link in links), (
            p["title"]
        )
    sources = next(p for p in _panels(by_uid["hw-bureau"]) if p["title"].startswith("重大危险源一览"))
    link = next(o for o in sources["fieldConfig"]["overrides"] if o["matcher"]["options"] == "危险源")
    url = link["properties"][0]["value"][0]["url"]
    assert url.startswith("/d/hw-hazard-source/?var-enterprise=${__data.fields.enterprise:percentencode}")
    assert "var-hazard_source=${__data.fields.hazard_source:percentencode}" in url


def test_a_plant_without_analysers_gets_no_empty_analyser_panel(demo: Plant) -> None:
    titles = [p["title"] for p in build_boards(demo)[1]["panels"]]
    assert "组分" not in titles and "压力" in titles  # the demo plant has no COMPOSITION tags


def test_series_queries_pick_raw_or_rollup_by_interval(boards: list[dict[str, Any]]) -> None:
    series = [q for b in boards for q in panel_queries(b) if "JOIN reading r" in q.raw_sql]
    assert series
    for q in series:
        assert "$__interval_ms < 60000 AND $__timeFilter(r.time)" in q.raw_sql
        assert "$__interval_ms >= 60000 AND $__timeFilter(m.bucket)" in q.raw_sql


def test_literals_refuse_what_would_break_the_sql() -> None:
    assert literal("O'Brien 罐区") == "'O''Brien 罐区'"
    assert literal(1.5) == "1.5" and literal(True) == "true" and literal(None) == "NULL"
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite"):
            literal(bad)
    with pytest.raises(ValueError, match="NUL"):
        literal("a\x00b")


@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ("url: ftp://grafana.local", "url"),
        ("console_url: /console/", "console_url"),
        ("refresh: 0s", "refresh"),
        ("folder_uid: 'has space'", "folder_uid"),
        ("ack_deadline_s: {critical: .nan}", "critical"),
        ("ack_deadline_s: {high: 0}", "high"),
        ("colour: red", "colour"),
    ],
)
def test_bad_grafana_settings_name_the_file_line_and_field(tmp_path: Path, setting: str, field: str) -> None:
    text = TWO.read_text(encoding="utf-8").replace(
        "reference: ../../../config/reference", f"reference: {ROOT}/config/reference"
    )
    plant = tmp_path / "plant.yaml"
    plant.write_text(text + f"settings:\n  grafana:\n    {setting}\n", encoding="utf-8")
    line = len(text.splitlines()) + 3
    with pytest.raises(ConfigError) as err:
        load_plant(plant)
    message = str(err.value)
    assert re.search(rf"plant\.yaml:{line}\b", message), message
    assert field in message


def test_good_grafana_settings_load(tmp_path: Path) -> None:
    text = TWO.read_text(encoding="utf-8").replace(
        "reference: ../../../config/reference", f"reference: {ROOT}/config/reference"
    )
    plant = tmp_path / "plant.yaml"
    plant.write_text(
        text + "settings:\n  grafana:\n    url: https://grafana.lvliang.gov.cn/\n    refresh: 1m\n"
        "    ack_deadline_s: {critical: 60}\n",
        encoding="utf-8",
    )
    g = load_plant(plant).settings.grafana
    assert (
        g.url == "https://grafana.lvliang.gov.cn/" and g.refresh == "1m" and g.ack_deadline_s.critical == 60
    )
    assert json.dumps(build_boards(load_plant(plant))).count('"refresh": "1m"') == 4


@pytest.mark.parametrize(
    "text", ["泵$county停", "${county}", "[[county]]", "$__timeFilter(x)", "a\\b", "O'Brien", "$$"]
)
def test_config_text_reaches_the_database_as_written_through_grafanas_expansion(text: str) -> None:
    """Grafana expands $name, ${name}, [[name]] and $__macro() even inside string literals:
    text from the config (an interlock's name) must not be one of them when Grafana is done."""
    from datetime import UTC, datetime, timedelta

    from dashboards.expand import TimeRange, Variable, expand

    now = datetime.now(UTC)
    sql = f"SELECT {literal(text)}"
    expanded = expand(
        sql,
        TimeRange(now - timedelta(hours=1), now),
        interval=timedelta(seconds=1),
        variables=[Variable("county", ["孝义市", "文水县"], multi=True, include_all=True)],
        timescaledb=False,
    )
    assert expanded == sql
    import psycopg

    with psycopg.connect(
        os.environ.get("HW_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    ) as conn:
        assert conn.execute(expanded).fetchone() == (text,)


def test_the_detail_boards_default_range_reads_the_rollup(boards: list[dict[str, Any]]) -> None:
    """At its default 6 hours, every refresh of the detail board's trends reads minute rollups:
    Grafana's $__interval from the range and the panel's maxDataPoints is a minute or more."""
    from datetime import UTC, datetime, timedelta

    from dashboards.expand import TimeRange, interval_for

    detail = next(b for b in boards if b["uid"] == "hw-hazard-source")
    assert detail["time"] == {"from": "now-6h", "to": "now"}
    now = datetime.now(UTC)
    series = [q for q in panel_queries(detail) if q.format == "time_series"]
    assert series
    for q in series:
        interval = interval_for(
            TimeRange(now - timedelta(hours=6), now), q.max_data_points, timedelta(seconds=1)
        )
        assert interval >= timedelta(minutes=1), (q.title, interval)
