"""The console over the whole chain, as `make demo` runs it: the simulated plant (OPC UA and
Modbus servers) -> collectors -> rules -> the alarm engine -> the API's live stream -> chromium.

The gas-holder-overpressure scenario ramps LHJH's holder G101 until its pressure PT-101 passes
H (4.8 kPa) about 400 simulated seconds in; the operator, logged in well before, sees that alarm
arrive without a reload, acknowledges it, and opens the pressure's trend with its limit lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import expect

from hazardwatch.demo_api import DEMO_PASSWORD
from storage.db import Backend
from tests.support.console_browser import chromium, has_class, log_in, new_page, watch
from tests.support.databases import create_scratch_db, drop_scratch_db

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "config/demo/scenarios/gas-holder-overpressure.yaml"
ALARM = "LHJH.G101.PT-101:H"
TAG = "LHJH.G101.PT-101"  # limits l 3.0, h 4.8, hh 5.2 (config/demo/enterprises/lhjh.yaml)
SPEED = 16  # the alarm comes ~25 s of wall time after the scenario starts: the login is long done


@contextlib.asynccontextmanager
async def running_demo(cwd: Path) -> AsyncIterator[str]:
    """`hazardwatch demo` on a scratch database until the block ends (then Ctrl-C, as a person
    stops it); yields the console's base URL from what it prints."""
    dsn = create_scratch_db(Backend.POSTGRES)
    env = {**os.environ, "DATABASE_URL": dsn, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    exe = Path(sys.executable).parent / "hazardwatch"
    proc = await asyncio.create_subprocess_exec(
        str(exe), "demo", str(ROOT / "config/demo"), "--scenario", str(SCENARIO), "--speed", str(SPEED),
        "--no-view", cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    out: list[str] = []
    drain: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(120):
            while (m := re.search(r"operator console: (\S+)console/", "".join(out))) is None:
                line = await proc.stdout.readline()
                assert line, "".join(out)  # the demo ended before serving the console
                out.append(line.decode())
        drain = asyncio.create_task(_collect(proc.stdout, out))
        yield m.group(1)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if drain is not None:
            await drain
        drop_scratch_db(Backend.POSTGRES, dsn)
    assert proc.returncode == 0, "".join(out)


async def _collect(stream: asyncio.StreamReader, out: list[str]) -> None:
    while line := await stream.readline():
        out.append(line.decode())


async def test_an_alarm_raised_by_the_simulated_plant_reaches_the_console_live(tmp_path: Path) -> None:
    async with running_demo(tmp_path) as base, chromium() as browser:
        page = await new_page(browser)
        errors = watch(page)
        await log_in(page, base, "op_lhjh", DEMO_PASSWORD)
        row = page.locator(f'tr[data-key="{ALARM}"]')
        await expect(page.locator("#alarm-count")).not_to_be_empty()  # the list is in
        assert await row.count() == 0, "raised before the operator looked: not a live arrival"

        await expect(row).to_be_visible(timeout=120_000)  # no reload: the stream brought it
        await expect(row.locator("td.status")).to_have_text("未确认")
        await expect(row).to_have_class(has_class("unacked"))
        await expect(row.locator(".prio")).to_have_text(re.compile("^(紧急|高|中|低)$"))

        await row.locator("button[data-action=ack]").click()
        await page.locator("#dialog-ok").click()
        await expect(page.locator("#dialog-result")).to_have_text("已执行：当前状态 已确认", timeout=20_000)
        await page.locator("#dialog-cancel").click()
        await expect(row.locator("td.status")).to_have_text("已确认")
        await expect(row).not_to_have_class(has_class("unacked"))

        await row.locator("a.trend-link").click()
        chart = page.locator("#trend-chart")
        await expect(chart).to_have_attribute("data-tag", TAG, timeout=20_000)
        await expect(chart).to_have_attribute("data-limits", "L=3,H=4.8,HH=5.2")
        await expect(chart).to_have_attribute("data-limits-drawn", "3")
        assert int(await chart.get_attribute("data-points") or 0) > 10
        await page.screenshot(path=tmp_path / "console-demo-trend.png")
        assert not errors, errors
