"""bench/grafana.py's pure helpers: plan reading, percentiles, and the generated plant's shape."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from bench.grafana import CITY, PROVINCE, ROUND_S, executions, percentile, plan_summary, relations
from bench.grafana_data import write_plant

# An EXPLAIN (ANALYZE, FORMAT JSON) "Plan": an aggregate over a nested loop of a tag scan and
# 100 index scans of two reading_1m partitions. Own times (ms, × loops): aggregate 205 - 180 = 25,
# nested loop 180 - 2 - 90 = 88, append 90 - 60 - 10 = 20, the partitions 60 and 10, the tags 2.
PLAN: dict[str, Any] = {
    "Node Type": "Aggregate", "Actual Total Time": 205.0, "Actual Loops": 1, "Actual Rows": 1,
    "Plans": [{
        "Node Type": "Nested Loop", "Actual Total Time": 180.0, "Actual Loops": 1, "Actual Rows": 100,
        "Plans": [
            {"Node Type": "Seq Scan", "Relation Name": "tag", "Actual Total Time": 2.0, "Actual Loops": 1,
             "Actual Rows": 100},
            {"Node Type": "Append", "Actual Total Time": 0.9, "Actual Loops": 100, "Actual Rows": 1440,
             "Plans": [
                 {"Node Type": "Index Only Scan", "Index Name": "reading_1m_p202611_pkey",
                  "Relation Name": "reading_1m_p202611", "Actual Total Time": 0.6, "Actual Loops": 100,
                  "Actual Rows": 1400},
                 {"Node Type": "Index Scan", "Index Name": "reading_1m_p202612_pkey",
                  "Relation Name": "reading_1m_p202612", "Actual Total Time": 0.1, "Actual Loops": 100,
                  "Actual Rows": 40},
             ]},
        ],
    }],
}  # fmt: skip


def test_relations_lists_every_scanned_relation_at_any_depth() -> None:
    assert relations(PLAN) == ["tag", "reading_1m_p202611", "reading_1m_p202612"]
    assert relations({"Node Type": "Result", "Actual Total Time": 0.0}) == []


def test_plan_summary_ranks_nodes_by_their_own_time_over_all_loops() -> None:
    assert plan_summary(PLAN) == [
        "43% Nested Loop (100 rows × 1 loops)",
        "29% Index Only Scan using reading_1m_p202611_pkey on reading_1m_p202611 (1,400 rows × 100 loops)",
        "12% Aggregate (1 rows × 1 loops)",
        "10% Append (1,440 rows × 100 loops)",
    ]
    assert plan_summary(PLAN, top=6)[-2:] == [
        "5% Index Scan using reading_1m_p202612_pkey on reading_1m_p202612 (40 rows × 100 loops)",
        "1% Seq Scan on tag (100 rows × 1 loops)",
    ]


def test_plan_summary_never_gives_a_node_negative_time() -> None:
    plan = {"Node Type": "Gather", "Actual Total Time": 1.0, "Actual Loops": 1, "Actual Rows": 1,
            "Plans": [{"Node Type": "Seq Scan", "Relation Name": "x", "Actual Total Time": 1.5, "Actual Loops": 2,
                       "Actual Rows": 5}]}  # fmt: skip
    top = plan_summary(plan)
    assert top[-1] == "0% Gather (1 rows × 1 loops)"  # workers' time exceeds the leader's: clipped to 0


def test_percentile_interpolates_and_is_nan_for_nothing() -> None:
    assert percentile([10.0, 20.0, 30.0, 40.0, 50.0], 50) == 30.0
    assert percentile([1.0, 2.0], 95) == pytest.approx(1.95)
    assert math.isnan(percentile([], 95))


def test_a_slow_query_runs_as_often_as_fits_in_a_round() -> None:
    assert executions(20, 0.01) == 20  # fast: all of them
    assert executions(20, ROUND_S / 4) == 4
    assert executions(20, ROUND_S * 10) == 1  # never none
    assert executions(20, 0.0) == 20


def test_the_worlds_are_the_sizes_the_section_claims() -> None:
    assert sum(CITY.hazard_sources_of(e) for e in range(CITY.enterprises)) == 14
    assert CITY.tags == 210
    assert {CITY.county_of(e) for e in range(CITY.enterprises)} == {"孝义市", "汾阳市", "介休市"}
    assert PROVINCE.tags == 100_000
    assert len({PROVINCE.county_of(e) for e in range(PROVINCE.enterprises)}) == 10


def test_the_generated_plant_loads_with_its_interlocks(tmp_path: Path) -> None:
    small = dataclasses.replace(CITY, enterprises=2, hazard_sources=(4, 3), tags_per_source=15)
    plant = write_plant(tmp_path, small)
    assert [e.county for e in plant.enterprises] == ["孝义市", "汾阳市"]
    assert [len(e.hazard_sources) for e in plant.enterprises] == [4, 3]
    assert len(plant.tags()) == small.tags == 105
    assert plant.tags()[0].key == "E000.V00000.LT-0000"
    ils = [(e.code, h.code, il) for e in plant.enterprises for h in e.hazard_sources for il in h.interlocks]
    assert len(ils) == 7  # one per complete ten-tag equipment: one per hazard source here
    # out of service: the first interlock where enterprise + hazard source ≡ 3 (mod 7)
    assert [(e, h) for e, h, il in ils if not il.in_service] == [("E000", "E000-H03"), ("E001", "E001-H02")]
