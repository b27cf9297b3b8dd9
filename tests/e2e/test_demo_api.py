"""`hazardwatch demo` serves the API and the operator console: it prints the console's address
and the demo logins, and a demo operator logs in and sees the simulated plant's alarms."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def test_demo_serves_the_console_with_demo_logins(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("HAZARDWATCH_JWT")}
    exe = Path(sys.executable).parent / "hazardwatch"
    with subprocess.Popen(
        [str(exe), "demo", str(ROOT / "config/demo"), "--duration", "40", "--no-view"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        seen: list[str] = []
        url = None
        deadline = time.monotonic() + 180
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            m = re.search(r"operator console: (http://\S+)/console/", line)
            if m:
                url = m.group(1)
        assert url is not None, "".join(seen)
        logins = "".join(proc.stdout.readline() for _ in range(6))
        assert "demo logins (password hazardwatch-demo):" in logins
        assert "  op_lhjh (enterprise_operator LHJH)\n" in logins and "  bureau (bureau_duty)\n" in logins
        r = httpx.post(
            f"{url}/api/v1/auth/token", data={"username": "op_lhjh", "password": "hazardwatch-demo"}
        )
        assert r.status_code == 200, r.text
        me = httpx.get(
            f"{url}/api/v1/auth/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"}
        )
        assert me.json()["enterprise"] == "LHJH"
        assert httpx.get(f"{url}/console/", follow_redirects=True).status_code == 200
        proc.terminate()
        rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, "".join(seen) + rest
    secret = tmp_path / "var/api-secret"
    assert secret.stat().st_mode & 0o077 == 0  # the signing secret is the owner's only
