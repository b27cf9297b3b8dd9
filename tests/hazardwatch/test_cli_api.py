"""``hazardwatch users``, ``hazardwatch keys`` and ``hazardwatch api`` against real PostgreSQL:
users are created with the password from stdin (never argv), listed, disabled, re-passworded; a
key is printed once and works until revoked; ``api`` serves the app, refuses to start without a
signing secret, and the engine's heartbeat makes it ready."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from typer.testing import CliRunner, Result

from api.users import login, principal_by_key
from core.clock import SystemClock
from core.config import load_plant
from hazardwatch.cli import app
from storage.db import Backend
from storage.engine_beat import engine_beat_loop
from storage.registry_sync import sync_registry
from tests.support.databases import fetch_all, migrated_db

PLANT = Path(__file__).resolve().parents[1] / "core" / "data" / "two_enterprises.yaml"
runner = CliRunner()
SECRET = "s" * 40
HAZARDWATCH = str(Path(sys.executable).parent / "hazardwatch")


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with migrated_db(Backend.POSTGRES) as url:

        async def sync() -> None:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await sync_registry(conn, load_plant(PLANT), now_us=1_700_000_000_000_000)

        asyncio.run(sync())
        yield url


def invoke(dsn: str, *args: str, stdin: str | None = None) -> Result:
    return runner.invoke(app, list(args), env={"DATABASE_URL": dsn}, input=stdin)


def test_users_add_list_disable_and_passwd(dsn: str) -> None:
    r = invoke(dsn, "users", "add", "li.na", "--name", "李娜", "--role", "enterprise_operator", "--enterprise", "AA",
               "--password-stdin", stdin="a long password 1\n")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "added li.na (enterprise_operator)" in r.output
    r = invoke(dsn, "users", "list")
    assert "li.na" in r.output and "李娜" in r.output and "active" in r.output

    async def check(password: str) -> str:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            return (await login(conn, "li.na", password, max_failures=5, lockout=timedelta(minutes=1))).reason

    assert asyncio.run(check("a long password 1")) == "ok"
    assert (
        invoke(dsn, "users", "passwd", "li.na", "--password-stdin", stdin="another password 2\n").exit_code
        == 0
    )
    assert asyncio.run(check("a long password 1")) == "wrong password"
    assert asyncio.run(check("another password 2")) == "ok"
    assert invoke(dsn, "users", "disable", "li.na").exit_code == 0
    assert "disabled" in invoke(dsn, "users", "list").output
    assert asyncio.run(check("another password 2")) == "disabled"


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (
            ["--role", "enterprise_operator"],
            "a long password 1\n",
            "enterprise: role enterprise_operator needs",
        ),
        (
            ["--role", "enterprise_operator", "--enterprise", "ZZ"],
            "a long password 1\n",
            "no enterprise 'ZZ'",
        ),
        (["--role", "admin", "--county", "孝义市"], "a long password 1\n", "county: only bureau_duty"),
        (["--role", "bureau_duty"], "short\n", "password: at least 10"),
    ],
    ids=["no-enterprise", "unknown-enterprise", "county-not-bureau", "short-password"],
)
def test_bad_users_are_refused_naming_the_field(dsn: str, args: list[str], stdin: str, message: str) -> None:
    r = invoke(dsn, "users", "add", "bad.user", "--name", "某人", *args, "--password-stdin", stdin=stdin)
    assert r.exit_code == 2
    assert message in r.output


def test_keys_are_printed_once_and_work_until_revoked(dsn: str) -> None:
    r = invoke(dsn, "users", "add", "scada", "--name", "SCADA", "--role", "bureau_duty", "--no-password")
    assert r.exit_code == 0, r.output
    r = invoke(dsn, "keys", "create", "scada", "--name", "SCADA bridge")
    assert r.exit_code == 0, r.output
    key = r.stdout.strip().splitlines()[0]
    prefix = "_".join(key.split("_", 2)[:2])  # hwk_XXXXXXXX (the secret may hold "_" too)

    async def who() -> str | None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            p = await principal_by_key(conn, key)
            return p.username if p else None

    assert asyncio.run(who()) == "scada"
    listed = invoke(dsn, "keys", "list").output
    assert prefix in listed and key not in listed
    assert invoke(dsn, "keys", "revoke", prefix).exit_code == 0
    assert asyncio.run(who()) is None
    assert invoke(dsn, "keys", "revoke", prefix).exit_code == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_api_serves_and_becomes_ready_with_an_engine_heartbeat(dsn: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAZARDWATCH_JWT")}
    r = subprocess.run([HAZARDWATCH, "api", str(PLANT), "--dsn", dsn],
                       env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2
    assert "HAZARDWATCH_JWT_SECRET" in r.stderr
    port = _free_port()
    proc = subprocess.Popen(
        [HAZARDWATCH, "api", str(PLANT), "--dsn", dsn, "--port", str(port)],
        env={**env, "HAZARDWATCH_JWT_SECRET": SECRET},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"api exited: {proc.stdout.read() if proc.stdout else ''}")
            asyncio.run(asyncio.sleep(0.1))
        assert httpx.get(f"{url}/readyz").json()["engine"] == "none"

        async def one_beat() -> None:
            task = asyncio.create_task(engine_beat_loop(dsn, "site", SystemClock(), interval_s=60))
            for _ in range(100):
                if await fetch_all(dsn, "SELECT 1 FROM engine_heartbeat"):
                    break
                await asyncio.sleep(0.05)
            task.cancel()

        asyncio.run(one_beat())
        assert httpx.get(f"{url}/readyz").status_code == 200
        assert httpx.get(f"{url}/api/v1/auth/me").status_code == 401
        # an open live stream does not keep a stopping server up (uvicorn waits for responses)
        r = invoke(dsn, "users", "add", "streamer", "--name", "值班", "--role", "bureau_duty", "--password-stdin",
                   stdin="a long password 1\n")  # fmt: skip
        assert r.exit_code == 0, r.output
        token = httpx.post(
            f"{url}/api/v1/auth/token", data={"username": "streamer", "password": "a long password 1"}
        ).json()["access_token"]
        opened = threading.Event()
        lines: list[str] = []

        def read() -> None:
            with httpx.stream("GET", f"{url}/api/v1/stream", headers={"Authorization": f"Bearer {token}"},
                              timeout=60) as stream:  # fmt: skip
                opened.set()
                lines.extend(stream.iter_lines())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert opened.wait(20)
        started = time.monotonic()
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - started < 8  # not the 10 s grace: the stream was ended
        reader.join(timeout=10)
        assert "event: end" in lines
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stdout:
            proc.stdout.close()
