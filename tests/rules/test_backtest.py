"""Back-test: the same history through current and candidate rules, counted per tag and hour;
candidate rules from an overlay validated with file:line; the ``backtest`` command on a CSV."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from core.clock import US_PER_S, to_datetime
from core.errors import ConfigError
from hazardwatch.cli_rules import register
from rules.backtest import backtest, batches_of
from rules.compile import compile_rules
from rules.overlay import load_candidate
from tests.rules.streams import DATA, T0, plant_for_tests, rules_for_tests

HOUR = 3600 * US_PER_S
OVERLAY = """tags:
  E1.V1.LT2:
    limits: {ll: 10, l: 20, h: 85, hh: 90, deadband: 2, on_delay_s: 0}
"""


def history() -> list[tuple[int, str, float, int]]:
    """LT2 touches 82 twice in the first hour and 87 once in the second."""
    values = [50, 82, 50, 82, 50, 50, 87, 50]
    times = [0, 600, 1200, 1800, 2400] + [HOUR // US_PER_S + s for s in (0, 600, 1200)]
    return [
        (T0 - T0 % HOUR + s * US_PER_S, "E1.V1.LT2", float(v), 0xC0)
        for s, v in zip(times, values, strict=True)
    ]


@pytest.fixture
def overlay(tmp_path: Path) -> Path:
    path = tmp_path / "tuning.yaml"
    path.write_text(OVERLAY, encoding="utf-8")
    return path


def test_counts_per_tag_and_hour(overlay: Path) -> None:
    current = rules_for_tests()
    candidate = compile_rules(load_candidate(DATA / "plant.yaml", overlay))
    result = backtest(current, candidate, batches_of(history(), current.tag_keys))
    h = [r for r in result.rows if r.kind == "H"]
    hour0 = T0 - T0 % HOUR
    assert [(r.subject, r.hour_us, r.current, r.candidate) for r in h] == [
        ("E1.V1.LT2", hour0, 2, 0),
        ("E1.V1.LT2", hour0 + HOUR, 1, 1),
    ]
    subject, current_n, candidate_n = result.by_subject()[0]  # largest change first
    assert subject == "E1.V1.LT2" and candidate_n - current_n == -2
    assert result.readings == 8
    assert all(r.kind == "H" for r in result.changed())


def test_identical_rules_give_no_changes() -> None:
    rules = rules_for_tests()
    result = backtest(rules, rules, batches_of(history(), rules.tag_keys))
    assert result.changed() == [] and result.totals[0] > 0


def test_gaps_in_history_let_stale_timers_run() -> None:
    rules = rules_for_tests()
    rows = [(T0, "E1.V1.LT3", 50.0, 0xC0), (T0 + 300 * US_PER_S, "E1.V1.LT3", 50.0, 0xC0)]
    result = backtest(rules, rules, batches_of(rows, rules.tag_keys))
    stale = [(r.subject, r.current) for r in result.rows if r.kind == "STALE"]
    assert ("E1.V1.LT3", 1) in stale  # 30 s without data, seen on the ticks inside the 300 s gap


@pytest.mark.parametrize(
    ("text", "line", "path", "message"),
    [
        (
            "tags:\n  E1.V1.LT9:\n    limits: {h: 1}\n",
            2,
            "tags.E1.V1.LT9",
            "unknown tag 'E1.V1.LT9' (give ENTERPRISE.EQUIPMENT.CODE)",
        ),
        (
            "tags:\n  E1.V1.LT2:\n    source: {device: OPC1}\n",
            3,
            "tags.E1.V1.LT2.source",
            "only rule settings can be changed: limits, gas, data_quality, rate, deviation, state, in_service",
        ),
    ],
)
def test_overlay_errors_name_the_overlay_line(
    tmp_path: Path, text: str, line: int, path: str, message: str
) -> None:
    f = tmp_path / "tuning.yaml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_candidate(DATA / "plant.yaml", f)
    (issue,) = info.value.issues
    assert (issue.line, issue.path, issue.message) == (line, path, message) and issue.file.endswith(
        "tuning.yaml"
    )


def test_overlay_values_are_validated_at_their_overlay_line(tmp_path: Path) -> None:
    f = tmp_path / "tuning.yaml"
    f.write_text("tags:\n  E1.V1.LT2:\n    limits:\n      h: 85\n      hh: 84\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_candidate(DATA / "plant.yaml", f)
    (issue,) = info.value.issues
    assert (
        issue.file.endswith("tuning.yaml")
        and issue.line == 5
        and issue.message == "must be above h (85), is 84"
    )


def test_backtest_command_on_a_csv(tmp_path: Path, overlay: Path) -> None:
    from simulators.replay import write_csv

    csv = tmp_path / "history.csv"
    write_csv(csv, history())
    app = typer.Typer()
    register(app)
    hour0 = T0 - T0 % HOUR
    start, end = to_datetime(hour0).isoformat(), to_datetime(hour0 + 2 * HOUR).isoformat()
    result = CliRunner().invoke(
        app,
        ["backtest", str(DATA), "--start", start, "--end", end, "--csv", str(csv), "--rules", str(overlay)],
    )
    assert result.exit_code == 0, result.output
    assert "current rules raised" in result.output and "E1.V1.LT2" in result.output
    assert "E1.V1.LT2 H" in result.output  # the changed hour is listed
    bad = CliRunner().invoke(
        app,
        [
            "backtest",
            str(DATA),
            "--start",
            start,
            "--end",
            end,
            "--csv",
            str(csv),
            "--rules",
            str(DATA / "nope.yaml"),
        ],
    )
    assert bad.exit_code == 2


def test_rules_command_lists_the_compiled_rules() -> None:
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["rules", str(DATA)])
    assert result.exit_code == 0, result.output
    assert "H1.IL1:NO_ACTION\tCRITICAL" in result.output
    assert f"{len(rules_for_tests())} rules" in result.output
    assert plant_for_tests().name == "rules test plant"


def test_backtest_command_reads_the_historian(monkeypatch: pytest.MonkeyPatch) -> None:
    """History written by the BatchWriter into real PostgreSQL, read back by the command."""
    import asyncio

    import numpy as np
    import psycopg

    from core.batch import ReadingBatch
    from storage.db import Backend
    from storage.registry_sync import active_tag_ids, sync_registry
    from storage.writer import BatchWriter
    from tests.storage.conftest import create_scratch_db, drop_scratch_db, migrate

    plant = plant_for_tests()
    keys = rules_for_tests().tag_keys
    dsn = create_scratch_db(Backend.POSTGRES)
    try:

        async def fill() -> None:
            await migrate(dsn)
            async with await psycopg.AsyncConnection.connect(dsn) as conn:
                await sync_registry(conn, plant, now_us=T0)
                await conn.commit()
                ids = await active_tag_ids(conn)
            writer = await BatchWriter.connect(dsn, np.array([ids[k] for k in keys], np.int32))
            try:
                rows = history()
                await writer.write(ReadingBatch.from_rows((keys.index(k), ts, v, q) for ts, k, v, q in rows))
            finally:
                await writer.close()

        asyncio.run(fill())
        monkeypatch.setenv("DATABASE_URL", dsn)
        app = typer.Typer()
        register(app)
        hour0 = T0 - T0 % HOUR
        start, end = to_datetime(hour0).isoformat(), to_datetime(hour0 + 2 * HOUR).isoformat()
        result = CliRunner().invoke(app, ["backtest", str(DATA), "--start", start, "--end", end])
        assert result.exit_code == 0, result.output
        assert result.output.startswith("8 readings")
        assert "E1.V1.LT2" in result.output and "changed" not in result.output
    finally:
        drop_scratch_db(Backend.POSTGRES, dsn)
