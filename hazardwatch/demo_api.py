"""The API and operator console inside `hazardwatch demo`: demo logins, a signing secret kept
under the data directory, and uvicorn on the demo's event loop.

Demo only: the logins share one documented password (``DEMO_PASSWORD``) so a new user can try
every role at once; production creates users with `hazardwatch users add`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

from alarms.commands import Role
from alarms.rationale import RationaleDefaults
from api.app import ApiConfig, create_app
from api.security import SECRET_ENV, jwt_secret
from api.server import ApiServer, server_config
from api.users import UserError, add_user
from core.clock import SystemClock
from core.plant import Plant
from storage.db import connect
from storage.migrate import upgrade
from storage.registry_sync import sync_registry

__all__ = ["DEMO_PASSWORD", "DemoApi", "DemoLogin", "demo_logins", "running_api"]

log = logging.getLogger(__name__)

DEMO_PASSWORD = "hazardwatch-demo"  # the demo's published password, nothing else


@dataclass(frozen=True, slots=True)
class DemoLogin:
    username: str
    display_name: str
    role: Role
    enterprise: str | None = None


@dataclass(frozen=True, slots=True)
class DemoApi:
    url: str
    logins: tuple[DemoLogin, ...]


def demo_logins(plant: Plant) -> tuple[DemoLogin, ...]:
    """One operator per enterprise, the city bureau's duty desk, an engineer and an admin."""
    ops = tuple(
        DemoLogin(f"op_{e.code.lower()}", f"{e.name}值班员", Role.ENTERPRISE_OPERATOR, e.code)
        for e in plant.enterprises
    )
    return (
        *ops,
        DemoLogin("bureau", "应急局值班员", Role.BUREAU_DUTY),
        DemoLogin("engineer", "仪表工程师", Role.ENGINEER),
        DemoLogin("admin", "系统管理员", Role.ADMIN),
    )


def _secret(plant: Plant) -> bytes:
    """$HAZARDWATCH_JWT_SECRET(_FILE) when set, else a random one kept in <data_dir>/api-secret."""
    if os.environ.get(SECRET_ENV) or os.environ.get(f"{SECRET_ENV}_FILE"):
        return jwt_secret()
    path = plant.settings.local_path("api-secret")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return jwt_secret({f"{SECRET_ENV}_FILE": str(path)})


def _listen(host: str, wanted: int) -> socket.socket:
    """A listening socket on ``wanted`` if free, else on any free port (a second demo, or
    something else on 8000). Listening at once and handed to uvicorn as it is: a port only
    checked here and bound later could be taken by a demo starting at the same moment."""
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart within TIME_WAIT
        try:
            s.bind((host, wanted))
            s.listen(128)
        except OSError:
            s.close()
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            s.bind((host, 0))
            s.listen(128)
    except BaseException:
        s.close()
        raise
    return s


async def _prepare(plant: Plant, dsn: str, logins: tuple[DemoLogin, ...]) -> None:
    conn = await connect(dsn, autocommit=True, application_name="hazardwatch-demo")
    async with conn:
        await upgrade(conn)
        await sync_registry(conn, plant, now_us=SystemClock().now_us())
        cur = await conn.execute("SELECT username FROM app_user")
        existing = {row[0] for row in await cur.fetchall()}
        for who in logins:
            if who.username in existing:  # a second demo keeps the first one's users (and skips
                continue  # hashing their password again: Argon2id costs on purpose)
            with contextlib.suppress(UserError):
                await add_user(
                    conn, who.username, who.display_name, who.role, DEMO_PASSWORD, enterprise=who.enterprise
                )


@contextlib.asynccontextmanager
async def running_api(
    plant: Plant, dsn: str, rationale: RationaleDefaults | None = None
) -> AsyncIterator[DemoApi]:
    """Serve the API and console until the block ends."""
    logins = demo_logins(plant)
    await _prepare(plant, dsn, logins)
    s = plant.settings.api
    sock = _listen(s.host, s.port)
    try:
        port = int(sock.getsockname()[1])
        app = create_app(
            ApiConfig(dsn, _secret(plant), s, plant, rationale, grafana_url=plant.settings.grafana.url)
        )
        server = ApiServer(server_config(app, s.host, port), embedded=True)  # the demo owns Ctrl-C
        task = asyncio.create_task(server.serve(sockets=[sock]), name="api")
        try:
            while not server.started and not task.done():
                await asyncio.sleep(0.05)
            if task.done():
                task.result()  # raises why it could not start
            yield DemoApi(f"http://{_url_host(s.host)}:{port}/", logins)
        finally:
            server.should_exit = True
            done, _ = await asyncio.wait({task}, timeout=10)
            if not done:
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # its failure, if any, was raised above
    finally:
        sock.close()


def _url_host(host: str) -> str:
    """How a browser on this machine reaches ``host``: a wildcard address is loopback, an IPv6
    one goes in brackets."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{host}]" if ":" in host else host
