"""``hazardwatch db``: upgrade twice, status, sync a config, retention dry run, exit codes."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from hazardwatch.cli_db import db_app
from storage.migrate import latest_version

DATA = Path(__file__).parent / "data"
runner = CliRunner()
WIDE = {"COLUMNS": "200"}
VERSION = latest_version()


def test_upgrade_status_sync_retention(empty_db: str) -> None:
    first = runner.invoke(db_app, ["upgrade", "--dsn", empty_db], env=WIDE)
    assert first.exit_code == 0, first.output
    assert "applied 0001_registry" in first.output and f"{VERSION} migration(s) applied" in first.output
    again = runner.invoke(db_app, ["upgrade"], env={**WIDE, "DATABASE_URL": empty_db})
    assert again.exit_code == 0 and "0 migration(s) applied" in again.output

    synced = runner.invoke(db_app, ["sync", str(DATA / "plant.yaml"), "--dsn", empty_db], env=WIDE)
    assert synced.exit_code == 0, synced.output
    assert "3 active tags" in synced.output

    status = runner.invoke(db_app, ["status", "--dsn", empty_db], env=WIDE)
    assert status.exit_code == 0, status.output
    assert f"schema version {VERSION} (code {VERSION})" in status.output
    assert "tags: 3 active, 0 retired" in status.output

    dry = runner.invoke(db_app, ["retention", "--dry-run", "--dsn", empty_db], env=WIDE)
    assert dry.exit_code == 0, dry.output
    assert "would drop 0 partition(s)/chunk(s)" in dry.output


def test_missing_database_and_bad_config(empty_db: str, tmp_path: Path) -> None:
    nodsn = runner.invoke(db_app, ["status"], env={"DATABASE_URL": ""})
    assert nodsn.exit_code == 2 and "DATABASE_URL" in nodsn.output
    unmigrated = runner.invoke(db_app, ["sync", str(DATA / "plant.yaml"), "--dsn", empty_db])
    assert unmigrated.exit_code == 1 and "hazardwatch db upgrade" in unmigrated.output
    broken = tmp_path / "plant.yaml"
    broken.write_text((DATA / "plant.yaml").read_text(encoding="utf-8").replace("grade: 2", "grade: 9"))
    bad = runner.invoke(db_app, ["sync", str(broken), "--dsn", empty_db])
    assert bad.exit_code == 2 and "grade" in bad.output
    down = runner.invoke(db_app, ["status", "--dsn", "postgresql://postgres@127.0.0.1:1/x"])
    assert down.exit_code == 1 and "DatabaseUnavailable" in down.output
