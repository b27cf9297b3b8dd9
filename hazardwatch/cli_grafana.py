"""``hazardwatch grafana build|push|grant``: the boards as JSON files, pushed to a Grafana, and the
read-only database role Grafana reads as.

Secrets never come from the command line where ``ps`` and shell history keep them, unless asked:
the Grafana token from $GRAFANA_TOKEN or ``--token-file`` (``--token`` exists for the issue's
``push --url --token`` but shows in ``ps``), the database password from
$HAZARDWATCH_GRAFANA_DB_PASSWORD or ``--db-password-file``. Exit codes follow hazardwatch.cli.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import psycopg
import typer
from psycopg.conninfo import conninfo_to_dict
from rich.console import Console
from rich.table import Table

import hazardwatch
from core.errors import StorageError
from core.redact import redact
from dashboards.reader import ROLE
from hazardwatch.cli_alarms import DSN_OPTION, _dsn, _say
from hazardwatch.cli_common import load_plant_or_exit
from storage.db import connect_blocking

if TYPE_CHECKING:
    from dashboards.push import DatabaseTarget

__all__ = ["register"]

grafana_app = typer.Typer(
    help="Grafana boards as code: build the JSON, push it to a Grafana, grant the read-only role.",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True)
TOKEN_ENV = "GRAFANA_TOKEN"
PASSWORD_ENV = "HAZARDWATCH_GRAFANA_DB_PASSWORD"
# dashboards.push (grafana-client, requests) loads only for `grafana push`: every other command
# of the CLI would pay for it at start-up.


@grafana_app.command("build")
def build(
    config: Path = typer.Argument(Path("config/demo"), help="Plant YAML, or a folder holding plant.yaml."),
    out_dir: Path = typer.Option(
        Path("dashboards/build"), "--out", help="Where the dashboard JSON and provisioning files go."
    ),
    timescaledb: bool = typer.Option(
        False,
        "--timescaledb/--no-timescaledb",
        help="Whether the provisioned datasource's database is TimescaleDB ($__timeGroup uses time_bucket).",
    ),
    db_sslmode: str = typer.Option(
        "require",
        "--db-sslmode",
        help="The provisioned datasource's: disable, require, verify-ca or verify-full.",
    ),
) -> None:
    """Write every board's JSON and Grafana's file provisioning under --out; the same config
    writes the same bytes. Grafana's provisioning files take no defaults from its environment, so
    the datasource's TLS mode and TimescaleDB are written in them from these options."""
    from dashboards.build import write_build

    _check_sslmode(db_sslmode)
    plant = load_plant_or_exit(config)
    _warn_loopback_console(plant.settings.grafana.console_url)
    for path in write_build(plant, plant.settings, out_dir, timescaledb=timescaledb, sslmode=db_sslmode):
        _say(out, str(path))


@grafana_app.command("push")
def push_cmd(
    config: Path = typer.Argument(..., help="Plant YAML, or a folder holding plant.yaml."),
    url: str = typer.Option(..., "--url", help="Grafana's root URL, e.g. http://grafana.example:3000/"),
    token_file: Path | None = typer.Option(
        None, "--token-file", help=f"A file holding the service account token (default: ${TOKEN_ENV})."
    ),
    token: str | None = typer.Option(
        None, "--token", help=f"The token itself: visible in ps and shell history; prefer ${TOKEN_ENV}."
    ),
    dsn: str | None = DSN_OPTION,
    db_host: str | None = typer.Option(
        None, "--db-host", help="The database host as Grafana's server reaches it (default: the DSN's)."
    ),
    db_port: int | None = typer.Option(
        None, "--db-port", min=1, max=65535, help="Default: the DSN's, or 5432."
    ),
    db_name: str | None = typer.Option(None, "--db-name", help="Default: the DSN's database."),
    db_user: str = typer.Option(ROLE, "--db-user", help="The read-only role Grafana logs in as."),
    db_sslmode: str | None = typer.Option(
        None,
        "--db-sslmode",
        help="disable, require, verify-ca or verify-full (default: the DSN's, or require).",
    ),
    db_password_file: Path | None = typer.Option(
        None, "--db-password-file", help=f"A file holding that role's password (default: ${PASSWORD_ENV})."
    ),
    update_password: bool = typer.Option(
        False, "--update-password", help="Send the password again (Grafana never shows the one it holds)."
    ),
    timescaledb: bool | None = typer.Option(
        None,
        "--timescaledb/--no-timescaledb",
        help="Whether the database is TimescaleDB (default: asked of the DSN's database).",
        show_default=False,
    ),
    timeout_s: float = typer.Option(10.0, "--timeout", min=0.1, max=300, help="Seconds per HTTP request."),
) -> None:
    """Create or update the folder, the PostgreSQL datasource and the boards in a Grafana, by their
    stable uids; what is already as built is left alone, so a second push writes nothing."""
    from dashboards.build import build_boards
    from dashboards.push import Grafana, PushError, push

    plant = load_plant_or_exit(config)
    _warn_loopback_console(plant.settings.grafana.console_url)
    secret = _token(token, token_file)
    password = (
        _secret_file(db_password_file, "--db-password-file")
        if db_password_file
        else os.environ.get(PASSWORD_ENV)
    )
    target = _target(
        dsn or plant.settings.storage.dsn, db_host, db_port, db_name, db_user, db_sslmode, timescaledb
    )
    boards = build_boards(plant, plant.settings)
    try:
        grafana = Grafana(url, secret, timeout_s)
        results = push(
            grafana,
            plant.settings.grafana,
            target,
            boards,
            password=password or None,
            update_password=update_password,
            message=f"hazardwatch grafana push (hazardwatch {hazardwatch.__version__})",
        )
    except PushError as exc:
        _say(err, f"hazardwatch grafana push: {exc}", "red")
        raise typer.Exit(2 if exc.usage else 1) from None
    table = Table(title=f"Grafana at {grafana.url}", show_edge=False)
    for col in ("kind", "uid", "title", "action"):
        table.add_column(col)
    for r in results:
        table.add_row(r.kind, r.uid, r.title, r.action.value)
    out.print(table)


@grafana_app.command("grant")
def grant_cmd(dsn: str | None = DSN_OPTION) -> None:
    """(Re)apply the read-only role's grants (hazardwatch_grafana: SELECT on what the boards read),
    as the database owner; for when the migration could not create the role."""
    from dashboards.reader import grant

    try:
        warnings = asyncio.run(grant(_dsn(dsn)))
    except StorageError as exc:
        _say(err, redact(f"hazardwatch grafana grant: {exc}"), "red")
        raise typer.Exit(1) from None
    for w in warnings:
        _say(err, f"warning: {w}", "yellow")
    _say(out, f"granted {ROLE} read access (read-only sessions, 30 s statements by default)")


def _token(token: str | None, token_file: Path | None) -> str:
    if token and token_file:
        _say(err, "give --token or --token-file, not both", "red")
        raise typer.Exit(2)
    if token_file:
        return _secret_file(token_file, "--token-file")
    found = token or os.environ.get(TOKEN_ENV, "")
    if not found:
        _say(err, f"no Grafana token: set ${TOKEN_ENV}, or give --token-file", "red")
        raise typer.Exit(2)
    return found


def _secret_file(path: Path, option: str) -> str:
    """The file's first line (a trailing newline is an editor's, not the secret's)."""
    try:
        text = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        _say(err, f"{option} {path}: cannot read it ({type(exc).__name__})", "red")
        raise typer.Exit(2) from None
    if not text or not text[0]:
        _say(err, f"{option} {path}: the file is empty", "red")
        raise typer.Exit(2)
    return text[0]


def _target(
    dsn: str | None,
    host: str | None,
    port: int | None,
    name: str | None,
    user: str,
    sslmode: str | None,
    timescaledb: bool | None,
) -> DatabaseTarget:
    """The database as the datasource names it: the options, else what the DSN names. Whether it is
    TimescaleDB and its version are asked of the DSN's database when it answers."""
    from dashboards.push import SSL_MODES, DatabaseTarget

    dsn = dsn or os.environ.get("DATABASE_URL")
    parts: dict[str, str] = {}
    if dsn:
        try:
            parts = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
        except Exception:  # psycopg's ProgrammingError quotes the DSN whole
            _say(err, "--dsn / $DATABASE_URL: not a PostgreSQL URL or conninfo", "red")
            raise typer.Exit(2) from None
    name = name or parts.get("dbname")
    if not (host or parts.get("host")) or not name:
        _say(err, "name the database Grafana reads: --db-host and --db-name, or --dsn / $DATABASE_URL", "red")
        raise typer.Exit(2)
    host = _one_host(host, parts)
    port = port or _dsn_port(parts)
    # libpq's default "prefer" is not one of Grafana's: encryption required unless told otherwise
    sslmode = sslmode or (parts.get("sslmode") if parts.get("sslmode") in SSL_MODES else None) or "require"
    _check_sslmode(sslmode)
    version, detected = _detect(dsn) if dsn else (None, None)
    if timescaledb is None:
        if detected is None:
            asked = (
                f"cannot ask the database at {_dsn_address(parts)} whether it is TimescaleDB"
                if dsn
                else "no --dsn / $DATABASE_URL to ask whether the database is TimescaleDB"
            )
            _say(err, f"{asked}: give --timescaledb or --no-timescaledb", "red")
            raise typer.Exit(2)
        timescaledb = detected
    return DatabaseTarget(
        host=host,
        port=port,
        database=name,
        user=user,
        sslmode=sslmode,
        timescaledb=timescaledb,
        postgres_version=version or 1500,
    )


def _one_host(host: str | None, parts: dict[str, str]) -> str:
    """--db-host, else the DSN's host: one of them, for a Grafana datasource reads from one
    address (libpq's "h1,h2" lists fail-over hosts)."""
    if host:
        if "," in host:
            _say(err, f"--db-host {host!r}: one host (Grafana's datasource reads from one address)", "red")
            raise typer.Exit(2)
        return host
    found = parts["host"]
    if "," in found:
        _say(
            err,
            f"the DSN names several hosts ({found}); Grafana's datasource reads from one: give --db-host "
            "(and --db-port)",
            "red",
        )
        raise typer.Exit(2)
    return found


def _dsn_port(parts: dict[str, str]) -> int:
    """The DSN's port, or 5432; a usage error where it names several or none usable."""
    found = parts.get("port") or "5432"
    if "," in found:
        _say(
            err,
            f"the DSN names several ports ({found}); Grafana's datasource reads one: give --db-port",
            "red",
        )
        raise typer.Exit(2)
    if not found.isascii() or not found.isdigit() or not 1 <= int(found) <= 65535:
        _say(err, f"the DSN's port {found!r} is not a port number (1-65535): give --db-port", "red")
        raise typer.Exit(2)
    return int(found)


def _dsn_address(parts: dict[str, str]) -> str:
    return f"{parts.get('host') or 'the local socket'} port {parts.get('port') or 5432}"


def _check_sslmode(sslmode: str) -> None:
    from dashboards.push import SSL_MODES

    if sslmode not in SSL_MODES:
        _say(err, f"--db-sslmode {sslmode!r}: one of {', '.join(SSL_MODES)}", "red")
        raise typer.Exit(2)


def _warn_loopback_console(console_url: str) -> None:
    """A warning, not an error (a Grafana on the console's own machine may be what is wanted):
    Grafana's alarm rows link to the console as the viewer's browser reaches it, and a loopback
    address is the viewer's own machine."""
    host = urlsplit(console_url).hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost" or host.endswith(".localhost")
    if loopback:
        _say(
            err,
            f"warning: settings.grafana.console_url {console_url} is a loopback address: every alarm link "
            "in Grafana would open the viewer's own machine; set it to the console's address as the "
            "control room reaches it",
            "yellow",
        )


def _detect(dsn: str) -> tuple[int | None, bool | None]:
    """(Grafana's postgresVersion, whether timescaledb is installed), or Nones when the database
    does not answer."""
    from dashboards.push import postgres_version_code

    try:
        with connect_blocking(dsn, application_name="hazardwatch-cli") as conn:
            row = conn.execute(
                "SELECT current_setting('server_version_num')::int,"
                " EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb')"
            ).fetchone()
    except (StorageError, psycopg.Error):
        return None, None
    assert row is not None
    return postgres_version_code(int(row[0])), bool(row[1])


def register(app: typer.Typer) -> None:
    app.add_typer(grafana_app, name="grafana")
