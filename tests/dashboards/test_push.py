"""dashboards.push against a loopback Grafana (tests.support.fake_grafana): the requests a first push
sends, nothing written by a second, only what changed written after that; and every way a Grafana
can refuse or fail (token, permissions, conflicts, provisioned objects, down, slow, not Grafana)
reported with its URL and object, never with the token or the database password."""

from __future__ import annotations

import asyncio
import copy
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from typer.testing import CliRunner, Result

from core.config import load_plant
from core.settings import GrafanaSettings
from dashboards.boards import build_boards
from dashboards.push import (
    Action,
    DatabaseTarget,
    Grafana,
    PushError,
    PushResult,
    datasource_model,
    postgres_version_code,
    push,
)
from hazardwatch.cli import app
from storage.db import Backend
from tests.support.databases import fetch_all, migrated_db
from tests.support.fake_grafana import ADMIN_TOKEN, VIEWER_TOKEN, FakeGrafana
from tests.support.http_server import HANG, Reply, free_port

SETTINGS = GrafanaSettings()
DB = DatabaseTarget(host="historian.example", port=5433, database="hazardwatch", timescaledb=True)
PASSWORD = "pw-Shh-7f3a9c"  # the test's database password, looked for in every output
UIDS = ("hw-bureau", "hw-hazard-source", "hw-alarms", "hw-data-quality")
BOARDS: list[dict[str, Any]] = [
    {
        "uid": uid,
        "title": f"board {uid}",
        "schemaVersion": 41,
        "panels": [{"id": 1, "type": "table", "datasource": {"type": "grafana-postgresql-datasource", "uid": "hazardwatch-pg"}}],
    }
    for uid in UIDS
]  # fmt: skip
READ = ("GET",)


@pytest.fixture
async def grafana() -> AsyncIterator[FakeGrafana]:
    fake = await FakeGrafana().start()
    yield fake
    await fake.stop()


async def run(
    fake: FakeGrafana,
    boards: list[dict[str, Any]] = BOARDS,
    *,
    token: str = ADMIN_TOKEN,
    db: DatabaseTarget = DB,
    password: str | None = PASSWORD,
    settings: GrafanaSettings = SETTINGS,
    timeout_s: float = 5.0,
    url: str | None = None,
    update_password: bool = False,
) -> list[PushResult]:
    """One push from a worker thread (grafana-client blocks), the fake answering on this loop."""

    def job() -> list[PushResult]:
        client = Grafana(url or fake.url, token, timeout_s)
        return push(client, settings, db, boards, password=password, update_password=update_password)

    return await asyncio.to_thread(job)


async def failure(fake: FakeGrafana, **kwargs: Any) -> PushError:
    with pytest.raises(PushError) as caught:
        await run(fake, **kwargs)
    text = str(caught.value)
    assert ADMIN_TOKEN not in text and VIEWER_TOKEN not in text and PASSWORD not in text
    return caught.value


def actions(results: list[PushResult]) -> list[tuple[str, str, Action]]:
    return [(r.kind, r.uid, r.action) for r in results]


# --- the first, second and a changed push ------------------------------------------------------


async def test_first_push_creates_folder_datasource_and_boards(grafana: FakeGrafana) -> None:
    results = await run(grafana)
    assert actions(results) == [
        ("folder", "hazardwatch", Action.CREATED),
        ("datasource", "hazardwatch-pg", Action.CREATED),
        *[("dashboard", uid, Action.CREATED) for uid in UIDS],
    ]
    assert grafana.writes() == [
        ("POST", "/api/folders"),
        ("POST", "/api/datasources"),
        *[("POST", "/api/dashboards/db")] * 4,
    ]
    assert grafana.bodies("POST", "/api/folders") == [
        {"uid": "hazardwatch", "title": "HazardWatch 重大危险源"}
    ]
    [ds] = grafana.bodies("POST", "/api/datasources")
    assert ds == {
        "uid": "hazardwatch-pg",
        "name": "HazardWatch historian",
        "type": "grafana-postgresql-datasource",
        "access": "proxy",
        "url": "historian.example:5433",
        "user": "hazardwatch_grafana",
        "basicAuth": False,
        "isDefault": False,
        "jsonData": {
            "database": "hazardwatch",
            "sslmode": "require",
            "postgresVersion": 1500,
            "timescaledb": True,
            "maxOpenConns": 10,
            "maxIdleConns": 10,
            "connMaxLifetime": 14400,
            "timeInterval": "1s",
        },
        "secureJsonData": {"password": PASSWORD},
    }
    boards = grafana.bodies("POST", "/api/dashboards/db")
    assert [b["dashboard"]["uid"] for b in boards] == list(UIDS)
    for sent, ours in zip(boards, BOARDS, strict=True):
        assert sent["folderUid"] == "hazardwatch" and sent["overwrite"] is True and sent["message"]
        assert sent["dashboard"] == {**ours, "id": None}
    # the password went once, in secureJsonData; every API call carried the token
    assert sum(PASSWORD.encode() in r.body for r in grafana.requests) == 1
    api_calls = [r for r in grafana.requests if r.path != "/api/health"]
    assert {r.header("Authorization") for r in api_calls} == {f"Bearer {ADMIN_TOKEN}"}
    # Grafana holds them as a later GET shows them
    assert grafana.passwords == {"hazardwatch-pg": PASSWORD}
    assert {uid: d["meta"]["folderUid"] for uid, d in grafana.dashboards.items()} == dict.fromkeys(
        UIDS, "hazardwatch"
    )
    assert {d["dashboard"]["version"] for d in grafana.dashboards.values()} == {1}


async def test_second_push_writes_nothing(grafana: FakeGrafana) -> None:
    await run(grafana)
    first = len(grafana.requests)
    results = await run(grafana)
    assert {r.action for r in results} == {Action.UNCHANGED} and len(results) == 6
    again = grafana.requests[first:]
    assert {r.method for r in again} == set(READ)
    assert len(again) == 1 + 1 + 1 + 4  # health, folder, datasource, one GET per board
    assert not any(PASSWORD.encode() in r.body for r in again)


async def test_a_changed_board_updates_only_that_board(grafana: FakeGrafana) -> None:
    await run(grafana)
    changed = copy.deepcopy(BOARDS)
    changed[2]["panels"][0]["title"] = "报警绩效"
    mark = len(grafana.writes())
    results = await run(grafana, changed)
    assert [r.uid for r in results if r.action is not Action.UNCHANGED] == ["hw-alarms"]
    assert grafana.writes()[mark:] == [("POST", "/api/dashboards/db")]
    assert grafana.bodies("POST", "/api/dashboards/db")[-1]["dashboard"]["panels"][0]["title"] == "报警绩效"
    versions = {uid: d["dashboard"]["version"] for uid, d in grafana.dashboards.items()}
    assert versions == {"hw-bureau": 1, "hw-hazard-source": 1, "hw-alarms": 2, "hw-data-quality": 1}
    assert actions(await run(grafana, changed))[4][2] is Action.UNCHANGED


async def test_a_board_moved_out_of_the_folder_is_moved_back(grafana: FakeGrafana) -> None:
    await run(grafana)
    grafana.dashboards["hw-bureau"]["meta"]["folderUid"] = ""
    results = await run(grafana)
    assert [(r.uid, r.action) for r in results if r.action is not Action.UNCHANGED] == [
        ("hw-bureau", Action.UPDATED)
    ]
    assert grafana.dashboards["hw-bureau"]["meta"]["folderUid"] == "hazardwatch"


async def test_a_renamed_folder_gets_its_title_back_with_its_version(grafana: FakeGrafana) -> None:
    await run(grafana)
    grafana.folders["hazardwatch"].update(title="someone's", version=4)
    results = await run(grafana)
    assert actions(results)[0] == ("folder", "hazardwatch", Action.UPDATED)
    assert grafana.bodies("PUT", "/api/folders/hazardwatch") == [
        {"title": "HazardWatch 重大危险源", "version": 4}
    ]
    assert grafana.folders["hazardwatch"]["title"] == "HazardWatch 重大危险源"


async def test_datasource_updated_only_when_its_fields_differ_and_keeps_its_password(
    grafana: FakeGrafana,
) -> None:
    await run(grafana)
    moved = DatabaseTarget(host="10.0.0.7", port=5432, database="hazardwatch", timescaledb=False)
    results = await run(grafana, db=moved, password=None)
    assert actions(results)[1] == ("datasource", "hazardwatch-pg", Action.UPDATED)
    [put] = grafana.bodies("PUT", "/api/datasources/uid/hazardwatch-pg")
    assert "secureJsonData" not in put and put["version"] == 1
    assert put["url"] == "10.0.0.7:5432" and put["jsonData"]["timescaledb"] is False
    assert grafana.passwords == {"hazardwatch-pg": PASSWORD}  # Grafana kept it
    mark = len(grafana.writes())
    assert actions(await run(grafana, db=moved))[1][2] is Action.UNCHANGED  # a password alone sends nothing
    assert grafana.writes()[mark:] == []


async def test_update_password_sends_only_then(grafana: FakeGrafana) -> None:
    await run(grafana)
    results = await run(grafana, password="new-secret-2", update_password=True)
    assert actions(results)[1][2] is Action.UPDATED
    assert grafana.bodies("PUT", "/api/datasources/uid/hazardwatch-pg")[0]["secureJsonData"] == {
        "password": "new-secret-2"
    }
    assert grafana.passwords["hazardwatch-pg"] == "new-secret-2"
    error = await failure(grafana, password=None, update_password=True)
    assert error.usage and "--update-password" in str(error)


async def test_a_grafana_s_own_default_choice_is_kept(grafana: FakeGrafana) -> None:
    await run(grafana)
    grafana.datasources["hazardwatch-pg"]["isDefault"] = True  # an admin made it the default
    assert actions(await run(grafana))[1][2] is Action.UNCHANGED
    results = await run(grafana, db=DatabaseTarget(host="elsewhere", port=5432, database="hazardwatch"))
    assert actions(results)[1][2] is Action.UPDATED
    assert grafana.datasources["hazardwatch-pg"]["isDefault"] is True


async def test_a_datasource_without_a_password_in_grafana_gets_ours(grafana: FakeGrafana) -> None:
    await run(grafana)
    grafana.passwords.clear()  # someone pressed "reset" in Grafana's editor
    assert actions(await run(grafana))[1][2] is Action.UPDATED
    assert grafana.passwords == {"hazardwatch-pg": PASSWORD}


async def test_creating_the_datasource_needs_the_password(grafana: FakeGrafana) -> None:
    error = await failure(grafana, password=None)
    assert error.usage
    assert "datasource hazardwatch-pg does not exist" in str(
        error
    ) and "HAZARDWATCH_GRAFANA_DB_PASSWORD" in str(error)
    assert grafana.writes() == [("POST", "/api/folders")]  # the folder, and nothing half-made


def test_datasource_model_and_version_codes() -> None:
    ipv6 = datasource_model(SETTINGS, DatabaseTarget(host="::1", port=5432, database="d"))
    assert ipv6["url"] == "[::1]:5432"
    socket = datasource_model(SETTINGS, DatabaseTarget(host="/var/run/postgresql", port=5432, database="d"))
    assert socket["url"] == "/var/run/postgresql"
    assert [postgres_version_code(n) for n in (90603, 100023, 140011, 150020, 170012)] == [
        906,
        1000,
        1400,
        1500,
        1500,
    ]


# --- Grafana refusing ---------------------------------------------------------------------------


async def test_wrong_token_names_url_and_object(grafana: FakeGrafana) -> None:
    error = await failure(grafana, token="glsa_wrong")
    assert str(error).startswith(
        f"Grafana at {grafana.url} refused the token (401 Unauthorized) reading folder hazardwatch"
    )
    assert "GRAFANA_TOKEN" in str(error) and not error.usage
    assert grafana.writes() == []


async def test_a_viewer_token_is_forbidden_to_write(grafana: FakeGrafana) -> None:
    error = await failure(grafana, token=VIEWER_TOKEN)
    assert f"Grafana at {grafana.url}: 403 Forbidden creating folder hazardwatch" in str(error)
    assert "Admin role" in str(error)


async def test_a_datasource_name_taken_by_another_uid_is_a_conflict(grafana: FakeGrafana) -> None:
    other = datasource_model(SETTINGS, DB) | {"uid": "someone-else", "id": 99, "version": 1}
    grafana.datasources["someone-else"] = other
    error = await failure(grafana)
    assert (
        "409 Conflict creating datasource hazardwatch-pg (data source with the same name already exists)"
        in str(error)
    )


async def test_a_file_provisioned_datasource_or_board_is_not_overwritten(grafana: FakeGrafana) -> None:
    await run(grafana)
    grafana.datasources["hazardwatch-pg"]["readOnly"] = True
    assert actions(await run(grafana))[1][2] is Action.UNCHANGED  # equal: nothing to do
    error = await failure(grafana, db=DatabaseTarget(host="elsewhere", port=5432, database="hazardwatch"))
    assert "provisioned from a file" in str(error)
    grafana.datasources["hazardwatch-pg"]["readOnly"] = False
    grafana.dashboards["hw-alarms"]["meta"]["provisioned"] = True
    changed = copy.deepcopy(BOARDS)
    changed[2]["title"] = "changed"
    error = await failure(grafana, boards=changed)
    assert "dashboard hw-alarms in Grafana at" in str(error) and "provisioned from files" in str(error)
    assert ("POST", "/api/dashboards/db") not in grafana.writes()[6:]


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Reply(500, {"message": "database is locked"}), "500 saving dashboard hw-bureau (database is locked)"),
        (Reply(412, {"message": "version-mismatch", "status": "version-mismatch"}), "412 Precondition Failed saving dashboard hw-bureau"),
        (Reply(404, {"message": "Not found"}), "404 Not Found saving dashboard hw-bureau"),
        (Reply(502, None, raw=b"<html>Bad Gateway</html>"), "502 saving dashboard hw-bureau (no message)"),
    ],
)  # fmt: skip
async def test_failed_writes_name_status_and_object(
    grafana: FakeGrafana, fault: Reply, expected: str
) -> None:
    grafana.faults[("POST", "/api/dashboards/db")] = fault
    error = await failure(grafana)
    assert f"Grafana at {grafana.url}" in str(error) and expected in str(error)


async def test_grafana_down(grafana: FakeGrafana) -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    error = await failure(grafana, url=url)
    assert str(error).startswith(f"cannot reach Grafana at {url} reading /api/health:")
    assert "Connection refused" in str(error)


async def test_grafana_too_slow(grafana: FakeGrafana) -> None:
    grafana.faults[("GET", "/api/folders/hazardwatch")] = HANG
    error = await failure(grafana, timeout_s=0.3)
    assert str(error) == f"Grafana at {grafana.url}: no answer within 0.3 s reading folder hazardwatch"


async def test_not_grafana_or_too_old(grafana: FakeGrafana) -> None:
    error = await failure(grafana, url=grafana.url + "not-grafana/")
    assert "does not answer as Grafana does" in str(error)
    grafana.faults[("GET", "/api/health")] = Reply(200, {"database": "ok"})  # version hidden: go on
    assert {r.action for r in await run(grafana)} == {Action.CREATED}
    grafana.version = "10.4.2"
    error = await failure(grafana)
    assert "is version 10.4.2: HazardWatch's boards need Grafana 11 or later" in str(error)
    assert len(grafana.writes()) == 6  # the first run's


async def test_grafana_under_a_sub_path() -> None:
    fake = await FakeGrafana(prefix="/grafana").start()
    try:
        results = await run(fake)
        assert {r.action for r in results} == {Action.CREATED}
        assert all(r.path.startswith("/grafana/api/") for r in fake.requests)
    finally:
        await fake.stop()


@pytest.mark.parametrize(
    ("url", "token", "expected"),
    [
        ("grafana.example:3000", ADMIN_TOKEN, "give Grafana's address"),
        ("http://admin:admin@grafana.example/", ADMIN_TOKEN, "no credentials in the URL"),
        ("http://grafana.example/", "", "no Grafana token"),
    ],
)
def test_bad_url_or_no_token_is_a_usage_error(url: str, token: str, expected: str) -> None:
    with pytest.raises(PushError) as caught:
        Grafana(url, token)
    assert caught.value.usage and expected in str(caught.value) and "admin:admin" not in str(caught.value)


# --- the command line, end to end ------------------------------------------------------------

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo"
HAZARDWATCH = str(Path(sys.executable).parent / "hazardwatch")
runner = CliRunner()


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``hazardwatch ARGS`` in its own process: (exit code, stdout, stderr)."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GRAFANA_TOKEN", "DATABASE_URL", "HAZARDWATCH_GRAFANA_DB_PASSWORD")
    }
    proc = await asyncio.create_subprocess_exec(
        HAZARDWATCH, *args, env={**clean, "COLUMNS": "200", **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, stdout.decode(), stderr.decode()


async def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """The same in this process, from a worker thread (the loopback Grafana answers on this loop)."""
    unset: dict[str, str | None] = dict.fromkeys(
        ("GRAFANA_TOKEN", "DATABASE_URL", "HAZARDWATCH_GRAFANA_DB_PASSWORD")
    )
    return await asyncio.to_thread(runner.invoke, app, list(args), env={**unset, **(env or {})})


@pytest.mark.parametrize("backend", [Backend.POSTGRES, Backend.TIMESCALEDB])
async def test_cli_push_then_push_again(grafana: FakeGrafana, backend: Backend) -> None:
    with migrated_db(backend) as dsn:
        env = {"GRAFANA_TOKEN": ADMIN_TOKEN, "HAZARDWATCH_GRAFANA_DB_PASSWORD": PASSWORD, "DATABASE_URL": dsn}
        push_args = ("grafana", "push", str(DEMO), "--url", grafana.url, "--db-sslmode", "disable")
        code, stdout, stderr = await cli(*push_args, env=env)
        assert code == 0, stderr
        assert stdout.count("created") == 6 and f"Grafana at {grafana.url}" in stdout
        ds = grafana.datasources["hazardwatch-pg"]
        conninfo = conninfo_to_dict(dsn)
        assert ds["url"] == f"127.0.0.1:{conninfo['port']}" and ds["user"] == "hazardwatch_grafana"
        assert ds["jsonData"]["database"] == conninfo["dbname"] and ds["jsonData"]["sslmode"] == "disable"
        assert ds["jsonData"]["timescaledb"] is (backend is Backend.TIMESCALEDB)  # asked of the database
        assert ds["jsonData"]["postgresVersion"] == 1500
        assert grafana.passwords == {"hazardwatch-pg": PASSWORD}
        built = build_boards(load_plant(DEMO))
        assert sorted(grafana.dashboards) == sorted(b["uid"] for b in built) == sorted(UIDS)
        for board in built:
            stored = grafana.dashboards[board["uid"]]
            assert {k: v for k, v in stored["dashboard"].items() if k not in ("id", "version")} == {
                k: v for k, v in board.items() if k not in ("id", "version")
            }
            assert stored["meta"]["folderUid"] == "hazardwatch"
        writes = len(grafana.writes())
        code, stdout_again, stderr_again = await cli(*push_args, env=env)
        assert code == 0, stderr_again
        assert stdout_again.count("unchanged") == 6 and "created" not in stdout_again
        assert len(grafana.writes()) == writes
    for text in (stdout, stderr, stdout_again, stderr_again):
        assert PASSWORD not in text and ADMIN_TOKEN not in text


async def test_cli_push_reads_secrets_from_files_and_needs_no_database(
    grafana: FakeGrafana, tmp_path: Path
) -> None:
    (tmp_path / "token").write_text(ADMIN_TOKEN + "\n")
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    code, stdout, stderr = await cli(
        "grafana", "push", str(DEMO), "--url", grafana.url, "--token-file", str(tmp_path / "token"),
        "--db-host", "db.internal", "--db-name", "hw", "--db-password-file", str(tmp_path / "pw"), "--no-timescaledb",
    )  # fmt: skip
    assert code == 0, stderr
    assert grafana.passwords == {"hazardwatch-pg": PASSWORD}  # without the editor's newline
    ds = grafana.datasources["hazardwatch-pg"]
    assert ds["url"] == "db.internal:5432" and ds["jsonData"]["sslmode"] == "require"
    assert ds["jsonData"]["timescaledb"] is False and ds["jsonData"]["postgresVersion"] == 1500
    assert PASSWORD not in stdout + stderr and ADMIN_TOKEN not in stdout + stderr


async def test_cli_push_failures_exit_non_zero_with_the_reason(grafana: FakeGrafana, tmp_path: Path) -> None:
    base = ("grafana", "push", str(DEMO), "--db-host", "db", "--db-name", "hw", "--no-timescaledb")
    env = {"GRAFANA_TOKEN": ADMIN_TOKEN, "HAZARDWATCH_GRAFANA_DB_PASSWORD": PASSWORD}
    code, stdout, stderr = await cli(*base, "--url", grafana.url, env={**env, "GRAFANA_TOKEN": "glsa_wrong"})
    assert code == 1 and f"Grafana at {grafana.url} refused the token (401 Unauthorized)" in stderr
    assert "glsa_wrong" not in stdout + stderr and PASSWORD not in stdout + stderr
    down = f"http://127.0.0.1:{free_port()}/"
    code, _, stderr = await cli(*base, "--url", down, env=env)
    assert code == 1 and f"cannot reach Grafana at {down}" in stderr and "Connection refused" in stderr
    # the usage errors, in-process (each a CLI start less)
    r = await invoke(*base, "--url", grafana.url)
    assert r.exit_code == 2 and "no Grafana token" in r.stderr
    r = await invoke(*base, "--url", grafana.url, env={"GRAFANA_TOKEN": ADMIN_TOKEN})
    assert r.exit_code == 2 and "HAZARDWATCH_GRAFANA_DB_PASSWORD" in r.stderr and "does not exist" in r.stderr
    assert grafana.writes() == [("POST", "/api/folders")]  # only that run got as far as writing
    r = await invoke(*base, "--url", "http://admin:s3cret@grafana.example/", env=env)
    assert r.exit_code == 2 and "no credentials in the URL" in r.stderr and "s3cret" not in r.stderr
    unreachable = f"postgresql://postgres:sekrit@127.0.0.1:{free_port()}/hw"
    r = await invoke("grafana", "push", str(DEMO), "--url", grafana.url, "--dsn", unreachable, env=env)
    assert r.exit_code == 2 and "--timescaledb or --no-timescaledb" in r.stderr and "sekrit" not in r.stderr
    r = await invoke(*base, "--url", grafana.url, "--db-sslmode", "prefer", env=env)
    assert r.exit_code == 2 and "--db-sslmode 'prefer'" in r.stderr
    (tmp_path / "empty").write_text("")
    r = await invoke(*base, "--url", grafana.url, "--token-file", str(tmp_path / "empty"), env=env)
    assert r.exit_code == 2 and "the file is empty" in r.stderr
    r = await invoke(
        *base, "--url", grafana.url, "--token-file", str(tmp_path / "empty"), "--token", "x", env=env
    )
    assert r.exit_code == 2 and "not both" in r.stderr
    r = await invoke("grafana", "push", str(DEMO), "--url", grafana.url, "--no-timescaledb", env=env)
    assert r.exit_code == 2 and "--db-host and --db-name" in r.stderr


async def test_cli_push_database_address_usage_errors(grafana: FakeGrafana, tmp_path: Path) -> None:
    """A datasource reads from one address: a DSN listing fail-over hosts or ports (libpq's
    "h1:p1,h2:p2") needs --db-host / --db-port, said as a usage error, not a traceback."""
    env = {"GRAFANA_TOKEN": ADMIN_TOKEN, "HAZARDWATCH_GRAFANA_DB_PASSWORD": PASSWORD}
    base = ("grafana", "push", str(DEMO), "--url", grafana.url, "--no-timescaledb")
    p1, p2 = free_port(), free_port()
    two = f"postgresql://postgres:sekrit@127.0.0.1:{p1},127.0.0.2:{p2}/hw"
    r = await invoke(*base, "--dsn", two, env=env)
    assert r.exit_code == 2 and "the DSN names several hosts (127.0.0.1,127.0.0.2)" in r.stderr
    assert "give --db-host" in r.stderr and isinstance(r.exception, SystemExit)
    r = await invoke(*base, "--dsn", two, "--db-host", "db.internal", env=env)
    assert (
        r.exit_code == 2
        and f"the DSN names several ports ({p1},{p2})" in r.stderr
        and "--db-port" in r.stderr
    )
    assert isinstance(r.exception, SystemExit)  # not a ValueError from int("5432,5433")
    r = await invoke(*base, "--dsn", "postgresql://postgres@127.0.0.1:abc/hw", env=env)
    assert r.exit_code == 2 and "the DSN's port 'abc' is not a port number" in r.stderr
    r = await invoke(*base, "--db-host", "h1,h2", "--db-name", "hw", env=env)
    assert r.exit_code == 2 and "--db-host 'h1,h2': one host" in r.stderr
    assert grafana.writes() == []
    # --db-host and --db-port name the one the datasource reads
    r = await invoke(*base, "--dsn", two, "--db-host", "db.internal", "--db-port", "6432", env=env)
    assert r.exit_code == 0, r.stderr
    assert grafana.datasources["hazardwatch-pg"]["url"] == "db.internal:6432"
    assert grafana.datasources["hazardwatch-pg"]["jsonData"]["database"] == "hw"
    assert "sekrit" not in r.output + r.stderr


async def test_cli_push_says_why_it_cannot_tell_timescaledb() -> None:
    r = await invoke(
        "grafana", "push", str(DEMO), "--url", "http://grafana.example/", "--db-host", "db", "--db-name", "hw",
        env={"GRAFANA_TOKEN": ADMIN_TOKEN},
    )  # fmt: skip
    assert r.exit_code == 2 and "None" not in r.stderr
    assert "no --dsn / $DATABASE_URL to ask whether the database is TimescaleDB" in r.stderr
    assert "give --timescaledb or --no-timescaledb" in r.stderr
    r = await invoke(  # no host in the DSN: libpq's socket, here with nothing listening
        "grafana", "push", str(DEMO), "--url", "http://grafana.example/", "--db-host", "db",
        "--dsn", f"dbname=hw port={free_port()}", env={"GRAFANA_TOKEN": ADMIN_TOKEN},
    )  # fmt: skip
    assert r.exit_code == 2 and "None" not in r.stderr
    assert "cannot ask the database at the local socket port " in r.stderr


LOOPBACK_WARNING = "is a loopback address: every alarm link in Grafana would open the viewer's own machine"


async def test_cli_push_warns_of_a_loopback_console(grafana: FakeGrafana, tmp_path: Path) -> None:
    env = {"GRAFANA_TOKEN": ADMIN_TOKEN, "HAZARDWATCH_GRAFANA_DB_PASSWORD": PASSWORD}
    db = ("--url", grafana.url, "--db-host", "db", "--db-name", "hw", "--no-timescaledb")
    r = await invoke("grafana", "push", str(DEMO), *db, env=env)  # the demo's console: 127.0.0.1
    assert r.exit_code == 0, r.stderr  # a warning: the push goes on
    [line] = [x for x in r.stderr.splitlines() if LOOPBACK_WARNING in x]
    assert line.startswith("warning: settings.grafana.console_url http://127.0.0.1:8000/console/ ")
    text = (DEMO / "plant.yaml").read_text(encoding="utf-8")
    assert "\nsettings:" not in text  # else the lines below would make a second settings block
    text = text.replace("reference: ../reference", f"reference: {DEMO.parent / 'reference'}")
    text += "settings:\n  grafana:\n    console_url: https://duty.example.cn/console/\n"
    (tmp_path / "plant.yaml").write_text(text, encoding="utf-8")
    for name in ("enterprises", "rosters.yaml", "routes.yaml", "scenarios"):
        (tmp_path / name).symlink_to(DEMO / name)
    r = await invoke("grafana", "push", str(tmp_path), *db, env=env)
    assert r.exit_code == 0, r.stderr
    assert LOOPBACK_WARNING not in r.stderr


async def test_cli_build_is_byte_for_byte_repeatable_and_names_config_errors(tmp_path: Path) -> None:
    # two processes: a set or dict ordered by string hashes would differ between them
    for out in ("a", "b"):
        code, _, stderr = await cli("grafana", "build", str(DEMO), "--out", str(tmp_path / out))
        assert code == 0, stderr
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert {f.name for f in files} >= {f"{uid}.json" for uid in UIDS} | {"hazardwatch.yaml"}
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file()) == files
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "plant.yaml").write_text(
        "enterprises:\n  - code: E1\n    name: x\n    county: y\n    bogus_key: 3\n"
    )
    r = await invoke("grafana", "build", str(bad), "--out", str(tmp_path / "c"))
    assert r.exit_code == 2 and f"{bad / 'plant.yaml'}:5 enterprises[0].bogus_key" in r.stderr
    assert not (tmp_path / "c").exists()


async def test_cli_grant() -> None:
    with migrated_db(Backend.POSTGRES) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("REVOKE SELECT ON collector_status FROM hazardwatch_grafana")
        code, stdout, stderr = await cli("grafana", "grant", env={"DATABASE_URL": dsn})
        assert code == 0, stderr
        assert "granted hazardwatch_grafana" in stdout
        sql = "SELECT has_table_privilege('hazardwatch_grafana', 'collector_status', 'SELECT')"
        assert await fetch_all(dsn, sql) == [(True,)]
    unreachable = f"postgresql://postgres:sekrit@127.0.0.1:{free_port()}/hw"
    r = await invoke("grafana", "grant", "--dsn", unreachable)
    assert r.exit_code == 1 and "hazardwatch grafana grant:" in r.stderr and "sekrit" not in r.stderr
    r = await invoke("grafana", "grant")
    assert r.exit_code == 2 and "DATABASE_URL" in r.stderr
