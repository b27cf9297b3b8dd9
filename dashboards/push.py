"""Folder, datasource and dashboards pushed to a running Grafana over its HTTP API (grafana-client).

Idempotent: every object has a stable uid, and is written only where Grafana's copy differs from
ours, so a second push writes nothing. The database password reaches Grafana only when the
datasource is created or when asked (Grafana never returns it: GET shows only that one is set),
and no message, log record or report holds it or the API token.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import requests
from grafana_client import GrafanaApi
from grafana_client.client import GrafanaException, TokenAuth

from core.settings import GrafanaSettings

__all__ = [
    "DATASOURCE_TYPE",
    "GRAFANA_DB_USER",
    "SSL_MODES",
    "TIME_INTERVAL",
    "Action",
    "DatabaseTarget",
    "Grafana",
    "PushError",
    "PushResult",
    "datasource_model",
    "postgres_version_code",
    "push",
]

DATASOURCE_TYPE = "grafana-postgresql-datasource"  # Grafana 11's id of its core PostgreSQL datasource
GRAFANA_DB_USER = "hazardwatch_grafana"  # the read-only role of migration 0010
SSL_MODES = ("disable", "require", "verify-ca", "verify-full")  # what Grafana's datasource accepts
# The datasource's minimum interval: $__interval never finer than the collectors' 1 s cycle. Both
# push and the file provisioning (dashboards.build) send it through datasource_model.
TIME_INTERVAL = "1s"
MIN_GRAFANA_MAJOR = 11  # the boards' schema and the datasource type id are Grafana 11's
_IGNORED_BOARD_KEYS = ("id", "version")  # Grafana's bookkeeping, not the board


class Action(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class PushResult:
    kind: str  # folder | datasource | dashboard
    uid: str
    title: str
    action: Action


class PushError(Exception):
    """A push that cannot go on. The message names the Grafana URL and the object, and is safe
    to print: it never holds the token or the database password. ``usage``: the command lacks
    something only its user can give (exit code 2, not 1)."""

    def __init__(self, message: str, *, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


@dataclass(frozen=True)
class DatabaseTarget:
    """The historian as Grafana's server reaches it, which need not be how this host does."""

    host: str
    port: int
    database: str
    user: str = GRAFANA_DB_USER
    sslmode: str = "require"
    timescaledb: bool = False
    postgres_version: int = 1500
    # A bureau Grafana with many open boards must not take every connection of the historian.
    max_open_conns: int = 10
    conn_max_lifetime_s: int = 14400


def postgres_version_code(server_version_num: int) -> int:
    """Grafana's ``postgresVersion`` for a server's ``server_version_num``: 903 for 9.3, 1400
    for 14; newer than 15 is 1500, the highest Grafana's editor offers (it changes only which
    functions its query builder lists)."""
    major, rest = divmod(server_version_num, 10000)
    if major < 10:
        return 900 + rest // 100
    return min(major, 15) * 100


def datasource_model(settings: GrafanaSettings, db: DatabaseTarget) -> dict[str, Any]:
    """The datasource's non-secret fields, as Grafana's provisioning docs lay them out for the
    PostgreSQL datasource (database in jsonData since Grafana 10). The file provisioning
    (dashboards.build.write_build) writes these too, so either way Grafana reads alike."""
    return {
        "uid": settings.datasource_uid,
        "name": settings.datasource_name,
        "type": DATASOURCE_TYPE,
        "access": "proxy",
        # a socket directory (Grafana on the database's host) takes no port
        "url": db.host if db.host.startswith("/") else f"{_bracket(db.host)}:{db.port}",
        "user": db.user,
        "basicAuth": False,
        "isDefault": False,
        "jsonData": {
            "database": db.database,
            "sslmode": db.sslmode,
            "postgresVersion": db.postgres_version,
            "timescaledb": db.timescaledb,
            "maxOpenConns": db.max_open_conns,
            "maxIdleConns": db.max_open_conns,
            "connMaxLifetime": db.conn_max_lifetime_s,
            "timeInterval": TIME_INTERVAL,
        },
    }


# Not isDefault: whether a Grafana makes it its default datasource is that Grafana's choice, kept.
_COMPARED_DATASOURCE_FIELDS = ("name", "type", "access", "url", "user", "basicAuth", "jsonData")


class Grafana:
    """One Grafana's HTTP API through grafana-client; every failure becomes a PushError that
    names the URL and what was being done."""

    def __init__(self, url: str, token: str, timeout_s: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PushError(
                f"--url {url!r}: give Grafana's address, e.g. http://grafana.example:3000/", usage=True
            )
        if parts.username is not None or parts.password is not None:
            # a password in the URL would end up in every message that names the URL
            raise PushError(
                "--url: no credentials in the URL; give a token (GRAFANA_TOKEN or --token-file)", usage=True
            )
        if not token:
            raise PushError(
                "no Grafana token: set GRAFANA_TOKEN, or give --token-file or --token", usage=True
            )
        prefix = parts.path.strip("/")
        self.url = f"{parts.scheme}://{parts.netloc}/{prefix + '/' if prefix else ''}"
        self.timeout_s = timeout_s
        # grafana-client joins "{host}:{port}/{prefix}api": a sub-path needs its trailing slash
        self.api = GrafanaApi(
            auth=TokenAuth(token),
            host=_bracket(parts.hostname),
            port=parts.port,
            url_path_prefix=prefix + "/" if prefix else "",
            protocol=parts.scheme,
            timeout=timeout_s,
        )

    def read(self, what: str, call: Callable[..., Any], *args: Any) -> dict[str, Any] | None:
        """The object, or None where Grafana answers 404 (it does not exist)."""
        try:
            return self._call(what, call, *args)
        except _NotFound:
            return None

    def write(self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return self._call(what, call, *args, **kwargs)
        except _NotFound as exc:
            raise PushError(
                f"Grafana at {self.url}: 404 Not Found {what} ({exc}): is this Grafana's root URL "
                "(with its sub-path, if any)?"
            ) from None

    def _call(self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            answer = call(*args, **kwargs)
        except GrafanaException as exc:
            raise self._http_error(what, exc) from None
        except requests.Timeout:
            raise PushError(f"Grafana at {self.url}: no answer within {self.timeout_s:g} s {what}") from None
        except requests.ConnectionError as exc:
            raise PushError(f"cannot reach Grafana at {self.url} {what}: {_reason(exc)}") from None
        except (requests.RequestException, ValueError) as exc:  # ValueError: not JSON
            raise PushError(
                f"Grafana at {self.url}: unexpected answer {what} ({type(exc).__name__}): is this Grafana?"
            ) from None
        if not isinstance(answer, dict):
            raise PushError(f"Grafana at {self.url}: unexpected answer {what}: is this Grafana?")
        return answer

    def _http_error(self, what: str, exc: GrafanaException) -> Exception:
        status = exc.status_code
        said = _grafana_message(exc.response)
        where = f"Grafana at {self.url}"
        if status == 404:
            return _NotFound(said)
        if status == 401:
            return PushError(
                f"{where} refused the token (401 Unauthorized) {what}: check GRAFANA_TOKEN / "
                "--token-file (a service account token of this Grafana)"
            )
        if status == 403:
            return PushError(
                f"{where}: 403 Forbidden {what} ({said}): the token's service account needs the "
                "Admin role (datasources) or edit rights on the folder"
            )
        if status == 409:
            return PushError(f"{where}: 409 Conflict {what} ({said}): another object holds this name or uid")
        if status == 412:
            return PushError(
                f"{where}: 412 Precondition Failed {what} ({said}): it was changed in Grafana meanwhile "
                "or another one has its title; push again, or rename the other"
            )
        return PushError(f"{where}: {status} {what} ({said})")


class _NotFound(Exception):
    pass


def push(
    grafana: Grafana,
    settings: GrafanaSettings,
    db: DatabaseTarget,
    boards: Sequence[dict[str, Any]],
    *,
    password: str | None = None,
    update_password: bool = False,
    message: str = "hazardwatch grafana push",
) -> list[PushResult]:
    """Create or update the folder, the datasource and ``boards`` (their uids as given), in that
    order; what each got. ``password``: the database password, sent when the datasource is
    created, when Grafana holds none, or with ``update_password``."""
    if update_password and not password:
        raise PushError(
            "--update-password: no password given (HAZARDWATCH_GRAFANA_DB_PASSWORD or --db-password-file)",
            usage=True,
        )
    _check_version(grafana)
    results = [_push_folder(grafana, settings)]
    results.append(_push_datasource(grafana, settings, db, password, update_password))
    results += [_push_board(grafana, settings, board, message) for board in boards]
    return results


def _check_version(grafana: Grafana) -> None:
    health = grafana.read("reading /api/health", grafana.api.health.check)
    if health is None or "database" not in health:
        raise PushError(f"{grafana.url} does not answer as Grafana does (at /api/health)")
    version = str(health.get("version", ""))  # absent where Grafana hides its version
    major = re.match(r"(\d+)\.", version)
    if major and int(major.group(1)) < MIN_GRAFANA_MAJOR:
        raise PushError(
            f"Grafana at {grafana.url} is version {version}: HazardWatch's boards need Grafana "
            f"{MIN_GRAFANA_MAJOR} or later"
        )


def _push_folder(grafana: Grafana, settings: GrafanaSettings) -> PushResult:
    uid, title = settings.folder_uid, settings.folder_title
    what = f"folder {uid}"
    theirs = grafana.read(f"reading {what}", grafana.api.folder.get_folder, uid)
    if theirs is None:
        grafana.write(f"creating {what}", grafana.api.folder.create_folder, title, uid)
        return PushResult("folder", uid, title, Action.CREATED)
    if theirs.get("title") == title:
        return PushResult("folder", uid, title, Action.UNCHANGED)
    grafana.write(
        f"renaming {what}", grafana.api.folder.update_folder, uid, title=title, version=theirs.get("version")
    )
    return PushResult("folder", uid, title, Action.UPDATED)


def _push_datasource(
    grafana: Grafana,
    settings: GrafanaSettings,
    db: DatabaseTarget,
    password: str | None,
    update_password: bool,
) -> PushResult:
    ours = datasource_model(settings, db)
    uid, name = ours["uid"], ours["name"]
    what = f"datasource {uid}"
    theirs = grafana.read(f"reading {what}", grafana.api.datasource.get_datasource_by_uid, uid)
    if theirs is None:
        if not password:
            raise PushError(
                f"{what} does not exist in Grafana at {grafana.url} yet: give the password of database "
                f"user {db.user} (HAZARDWATCH_GRAFANA_DB_PASSWORD or --db-password-file)",
                usage=True,
            )
        body = {**ours, "secureJsonData": {"password": password}}
        grafana.write(f"creating {what}", grafana.api.datasource.create_datasource, body)
        return PushResult("datasource", uid, name, Action.CREATED)
    has_password = bool((theirs.get("secureJsonFields") or {}).get("password"))
    send_password = bool(password) and (update_password or not has_password)
    same = all(theirs.get(k) == ours[k] for k in _COMPARED_DATASOURCE_FIELDS)
    if same and not send_password:
        return PushResult("datasource", uid, name, Action.UNCHANGED)
    if theirs.get("readOnly"):
        raise PushError(
            f"{what} in Grafana at {grafana.url} is provisioned from a file (read-only) and differs: "
            "change the provisioning file instead (hazardwatch grafana build)"
        )
    body = {**ours, "isDefault": bool(theirs.get("isDefault")), "version": theirs.get("version")}
    if send_password:
        body["secureJsonData"] = {"password": password}
    # Grafana keeps the stored password when secureJsonData leaves it out.
    grafana.write(f"updating {what}", grafana.api.datasource.update_datasource_by_uid, uid, body)
    return PushResult("datasource", uid, name, Action.UPDATED)


def _push_board(
    grafana: Grafana, settings: GrafanaSettings, board: dict[str, Any], message: str
) -> PushResult:
    uid, title = str(board["uid"]), str(board.get("title", ""))
    what = f"dashboard {uid}"
    theirs = grafana.read(f"reading {what}", grafana.api.dashboard.get_dashboard, uid)
    if theirs is not None:
        meta = theirs.get("meta") or {}
        in_folder = meta.get("folderUid") == settings.folder_uid
        if in_folder and _comparable(theirs.get("dashboard") or {}) == _comparable(board):
            return PushResult("dashboard", uid, title, Action.UNCHANGED)
        if meta.get("provisioned"):
            raise PushError(
                f"{what} in Grafana at {grafana.url} is provisioned from files and differs: update "
                "the files (hazardwatch grafana build) instead of pushing"
            )
    body = {
        "dashboard": {**_comparable(board), "uid": uid, "id": None},
        "folderUid": settings.folder_uid,
        "overwrite": True,
        "message": message,
    }
    grafana.write(f"saving {what}", grafana.api.dashboard.update_dashboard, body)
    return PushResult("dashboard", uid, title, Action.CREATED if theirs is None else Action.UPDATED)


def _comparable(board: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(board)
    for key in _IGNORED_BOARD_KEYS:
        out.pop(key, None)
    return out


def _grafana_message(response: object) -> str:
    if isinstance(response, dict) and response.get("message"):
        return str(response["message"])
    text = str(response or "").strip()
    return text[:200] if text and not text.startswith("<") else "no message"


_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")]+")


def _reason(exc: requests.ConnectionError) -> str:
    """The operating system's reason (connection refused, name unknown), not urllib3's retry
    bookkeeping."""
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS handshake failed"
    found = _ERRNO.search(str(exc))
    return found.group(0) if found else type(exc).__name__


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
