"""No password in any output: every way a database URL can fail, through the storage boundary,
the logging setup and the CLI (``run`` and ``db upgrade`` as subprocesses)."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.errors import StorageError
from core.redact import redact
from hazardwatch import logs
from hazardwatch.cli import app
from storage.db import connect
from tests.hazardwatch.refusing_postgres import Refusal, refusing_servers

ROOT = Path(__file__).resolve().parents[2]
PLANT = ROOT / "tests/core/data/two_enterprises.yaml"
SECRET = "S3cr3t-q7Zx"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('bad URI: "postgres://u:S3cr3t@[::1:5432/db"\n', 'bad URI: "postgres://u:***@[::1:5432/db"\n'),
        ("postgresql://u:p@ss@host/db?x=a@b", "postgresql://u:***@host/db?x=a@b"),  # '@' in the password
        ("postgres://:S3cr3t@h/db", "postgres://:***@h/db"),
        ("postgres://u:ab/c+d=@h/db", "postgres://u:***@h/db"),  # '/' in a generated password
        ("dsn postgres://u:a/b@c@h:5/d?x=y@z failed", "dsn postgres://u:***@h:5/d?x=y@z failed"),
        ("host=h password=S3cr3t user=u", "host=h password=*** user=u"),
        ("host=h password='S3 cr\\'3t' user=u", "host=h password=*** user=u"),
        (
            "postgresql://h/db?password=S3cr3t&sslmode=require",
            "postgresql://h/db?password=***&sslmode=require",
        ),
        ("PASSWORD = S3cr3t", "PASSWORD = ***"),
        # nothing secret: unchanged
        ("postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),
        ("opc.tcp://[::1]:4840/x", "opc.tcp://[::1]:4840/x"),
        (
            'connection to server at "127.0.0.1", port 1 failed',
            'connection to server at "127.0.0.1", port 1 failed',
        ),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.fixture
def dsns() -> Iterator[dict[str, str]]:
    """Each failing form, keyed by name, with SECRET as its password."""
    with refusing_servers() as servers:
        password, no_ssl, ssl_required = (servers[r].port for r in Refusal)
        yield {
            "malformed URL": f"postgres://u:{SECRET}@[::1:5432/db",
            "malformed conninfo": f"host=127.0.0.1 password={SECRET} port=notaport",
            "wrong host": f"postgresql://u:{SECRET}@nonexistent.invalid:5432/db",
            "refused port": f"postgresql://u:{SECRET}@127.0.0.1:1/db",
            "wrong password": f"postgresql://u:{SECRET}@127.0.0.1:{password}/db?sslmode=disable",
            "wrong password (conninfo)": (
                f"host=127.0.0.1 port={password} user=u password={SECRET} dbname=db sslmode=disable"
            ),
            "client requires SSL": f"postgresql://u:{SECRET}@127.0.0.1:{no_ssl}/db?sslmode=require",
            "server requires SSL": f"postgresql://u:{SECRET}@127.0.0.1:{ssl_required}/db",
        }
        # The test is not vacuous: the password did reach a server that refused it.
        assert SECRET.encode() in servers[Refusal.PASSWORD].passwords


async def test_storage_errors_carry_no_password(dsns: dict[str, str]) -> None:
    for form, dsn in dsns.items():
        with pytest.raises(StorageError) as caught:
            await connect(dsn, connect_timeout_s=2)
        text = "".join(traceback.format_exception(caught.value))
        assert "connect" in text, form
        assert SECRET not in text, f"{form}: {text}"


def test_log_records_are_redacted_as_a_last_line_of_defence() -> None:
    stream = io.StringIO()
    logs.setup("INFO", "plain", stream=stream)
    log = logging.getLogger("tests.redaction")
    try:
        log.warning("cannot reach %s", f"postgres://u:{SECRET}@db:5432/x")
        try:
            raise RuntimeError(f"libpq said host=db password={SECRET}")
        except RuntimeError:
            log.exception("connect failed")
    finally:
        logs.shutdown()
    out = stream.getvalue()
    assert "cannot reach postgres://u:***@db:5432/x" in out
    assert "RuntimeError: libpq said host=db password=***" in out
    assert SECRET not in out


def _args(command: str, dsn: str) -> tuple[list[str], dict[str, str]]:
    if command == "db upgrade":
        return ["db", "upgrade", "--dsn", dsn], {}
    if command == "demo":
        demo = ["demo", str(ROOT / "config/demo"), "--no-view", "--scenario", "none", "--duration", "1"]
        return demo, {"DATABASE_URL": dsn}
    run = ["run", str(PLANT), "--duration", "1", "--metrics-port", "0", "--log-level", "DEBUG"]
    return run, {"DATABASE_URL": dsn}


@pytest.mark.parametrize("command", ["db upgrade", "run"])
def test_cli_never_prints_the_password(
    command: str, dsns: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # `run` keeps its data directory (var/) here
    for form, dsn in dsns.items():
        args, env = _args(command, dsn)
        result = CliRunner().invoke(app, args, env={"COLUMNS": "300", **env})
        assert result.exit_code == 1, f"{command} with {form}: {result.output}"
        assert "connect" in result.output, f"{command} with {form}: {result.output}"
        assert SECRET not in result.output, f"{command} with {form} printed the password:\n{result.output}"


@pytest.mark.parametrize("command", ["db upgrade", "run", "demo"])
def test_cli_process_never_prints_the_password(command: str, tmp_path: Path) -> None:
    """The whole process (exception hooks, exit handlers) with the URL of the report."""
    args, env = _args(command, f"postgres://u:{SECRET}@[::1:5432/db")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "hazardwatch"), *args],
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "300", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert 'in URI: "postgres://u:***@[::1:5432/db"' in out
    assert "Traceback" not in out
    assert SECRET not in out


def test_an_exception_that_ends_the_process_is_logged_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    stream = io.StringIO()
    logs.setup("INFO", "json", stream=stream)
    try:
        raise RuntimeError(f"cannot use postgres://u:{SECRET}@h/db")
    except RuntimeError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)  # what the interpreter calls at the end
        after_shutdown = exc
    [record] = (json.loads(line) for line in stream.getvalue().splitlines())
    assert record["level"] == "CRITICAL" and record["message"] == "unhandled exception"
    assert record["exception"].endswith("RuntimeError: cannot use postgres://u:***@h/db")
    sys.excepthook(type(after_shutdown), after_shutdown, after_shutdown.__traceback__)  # logging stopped
    err = capsys.readouterr().err
    assert "RuntimeError: cannot use postgres://u:***@h/db" in err and SECRET not in err
