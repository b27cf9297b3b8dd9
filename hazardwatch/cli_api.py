"""``hazardwatch api`` (the API and operator console), ``hazardwatch users`` and ``hazardwatch keys``.

Passwords are read from a prompt (typed twice) or from stdin (``--password-stdin``), never from
the command line, where ``ps`` and shell history would keep them. An API key is printed once.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from alarms.commands import Role
from alarms.rationale import defaults_for
from api.app import ApiConfig, create_app
from api.security import MIN_PASSWORD, SecretError, jwt_secret
from api.server import ApiServer, server_config
from api.users import (
    UserError,
    add_user,
    create_key,
    list_keys,
    list_users,
    revoke_key,
    set_disabled,
    set_password,
)
from core.redact import redact
from hazardwatch.cli_alarms import DSN_OPTION, _dsn, _run, _say
from hazardwatch.cli_common import load_plant_or_exit
from hazardwatch.cli_logging import LOG_FORMAT, LOG_LEVEL_INFO, start_logging
from hazardwatch.logs import LogFormat
from storage.db import Conn

__all__ = ["register"]

log = logging.getLogger(__name__)
out = Console()
err = Console(stderr=True)
users_app = typer.Typer(
    help="People who use the API and console: add, list, disable, passwd.", no_args_is_help=True
)
keys_app = typer.Typer(help="API keys for machine clients: create, list, revoke.", no_args_is_help=True)


def api(
    config: Path = typer.Argument(..., help="Plant YAML, or a folder holding plant.yaml."),
    host: str | None = typer.Option(
        None, "--host", help="Address to listen on (default: settings.api.host)."
    ),
    port: int | None = typer.Option(
        None, "--port", min=1, max=65535, help="Port (default: settings.api.port)."
    ),
    dsn: str | None = DSN_OPTION,
    forwarded_allow_ips: str | None = typer.Option(
        None,
        "--forwarded-allow-ips",
        help="Proxies whose X-Forwarded-For is trusted (the audit log's address); default none.",
    ),
    log_level: str = LOG_LEVEL_INFO,
    log_format: LogFormat = LOG_FORMAT,
) -> None:
    """Serve the HTTP API and the operator console. Several may run against one database; the
    engine (`hazardwatch run`) applies the alarm commands they submit."""
    start_logging(log_level, log_format)
    plant = load_plant_or_exit(config)
    url = dsn or plant.settings.storage.dsn
    url = _dsn(url)
    try:
        secret = jwt_secret()
    except SecretError as exc:
        _say(err, str(exc), "red")
        raise typer.Exit(2) from None
    s = plant.settings.api
    rationale = defaults_for(config, plant)
    app = create_app(ApiConfig(url, secret, s, plant, rationale, grafana_url=plant.settings.grafana.url))
    server = ApiServer(
        server_config(
            app,
            host or s.host,
            port or s.port,
            proxy_headers=forwarded_allow_ips is not None,
            forwarded_allow_ips=forwarded_allow_ips or "",
        )
    )
    log.info("API on http://%s:%d/ (console: /console/, OpenAPI: /docs)", host or s.host, port or s.port)
    try:
        server.run()
    except OSError as exc:
        _say(err, redact(f"cannot serve: {exc}"), "red")
        raise typer.Exit(1) from None


def _password(stdin: bool) -> str:
    if stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD:
        _say(err, f"password: at least {MIN_PASSWORD} characters", "red")
        raise typer.Exit(2)
    return password


def _user_job(dsn: str | None, job: object) -> object:
    async def run(conn: Conn) -> object:
        try:
            return await job(conn)  # type: ignore[operator]
        except UserError as exc:
            return exc

    result = _run(_dsn(dsn), run)
    if isinstance(result, UserError):
        _say(err, str(result), "red")
        raise typer.Exit(2)
    return result


PASSWORD_STDIN = typer.Option(False, "--password-stdin", help="Read the password from stdin (one line).")


@users_app.command("add")
def users_add(
    username: str = typer.Argument(..., help="Login name (no spaces)."),
    name: str = typer.Option(..., "--name", help="The person's name as the journal shows it: 李娜."),
    role: Role = typer.Option(..., "--role", help="What the user may do."),
    enterprise: str | None = typer.Option(None, "--enterprise", help="Enterprise code (enterprise roles)."),
    county: str | None = typer.Option(None, "--county", help="bureau_duty: the county bureau (none: city)."),
    no_password: bool = typer.Option(False, "--no-password", help="A key-only user (machine client)."),
    password_stdin: bool = PASSWORD_STDIN,
    dsn: str | None = DSN_OPTION,
) -> None:
    """Add a user (the enterprise must be in the registry: `hazardwatch db sync`)."""
    password = None if no_password else _password(password_stdin)
    user = _user_job(
        dsn, lambda c: add_user(c, username, name, role, password, enterprise=enterprise, county=county)
    )
    _say(out, f"added {user.username} ({user.role})")  # type: ignore[attr-defined]


@users_app.command("list")
def users_list(dsn: str | None = DSN_OPTION) -> None:
    """Every user with role, scope and whether disabled or locked."""
    users = _user_job(dsn, list_users)
    table = Table("username", "name", "role", "enterprise", "county", "state")
    now = datetime.now(UTC)
    for u in users:  # type: ignore[attr-defined]
        state = (
            "disabled" if u.disabled else ("locked" if u.locked_until and u.locked_until > now else "active")
        )
        table.add_row(u.username, u.display_name, u.role, u.enterprise or "", u.county or "", state)
    out.print(table)


@users_app.command("disable")
def users_disable(
    username: str = typer.Argument(...),
    enable: bool = typer.Option(False, "--enable", help="Enable again instead."),
    dsn: str | None = DSN_OPTION,
) -> None:
    """Disable a user: every session and key of theirs stops working at once."""
    _user_job(dsn, lambda c: set_disabled(c, username, not enable))
    _say(out, f"{'enabled' if enable else 'disabled'} {username}")


@users_app.command("passwd")
def users_passwd(
    username: str = typer.Argument(...), password_stdin: bool = PASSWORD_STDIN, dsn: str | None = DSN_OPTION
) -> None:
    """Set a new password (unlocks the account and ends its sessions)."""
    password = _password(password_stdin)
    _user_job(dsn, lambda c: set_password(c, username, password))
    _say(out, f"password changed for {username}")


@keys_app.command("create")
def keys_create(
    username: str = typer.Argument(..., help="The user the key acts as (its role and scope)."),
    name: str = typer.Option(..., "--name", help="What uses the key: 'SCADA bridge'."),
    dsn: str | None = DSN_OPTION,
) -> None:
    """Create an API key; it is printed once (send it as X-API-Key)."""
    issued = _user_job(dsn, lambda c: create_key(c, username, name))
    _say(out, issued.key)  # type: ignore[attr-defined]
    _say(err, f"key {issued.prefix} for {username}: store it now, it cannot be shown again")  # type: ignore[attr-defined]


@keys_app.command("list")
def keys_list(dsn: str | None = DSN_OPTION) -> None:
    keys = _user_job(dsn, list_keys)
    table = Table("prefix", "user", "name", "created", "last used", "revoked")
    for k in keys:  # type: ignore[attr-defined]
        table.add_row(
            k.prefix, k.username, k.name, f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "",
            f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "",
        )  # fmt: skip
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    prefix: str = typer.Argument(..., help="The key's prefix (hwk_xxxxxxxx)."), dsn: str | None = DSN_OPTION
) -> None:
    _user_job(dsn, lambda c: revoke_key(c, prefix))
    _say(out, f"revoked {prefix}")


def register(app: typer.Typer) -> None:
    app.command("api")(api)
    app.add_typer(users_app, name="users")
    app.add_typer(keys_app, name="keys")
