"""The operator console in a real browser: Debian's chromium driven by Playwright against a real
API server (api.server's uvicorn on a loopback port) over a seeded database, with the real alarm engine.

An operator logs in, sees an alarm the engine raises appear live (no reload), acknowledges it
through the dialog and sees its state change, then opens the trend of the alarmed tag (history
with limit lines; a drag zooms in and re-queries). The bureau sees its county's enterprises and
supervises (督办) an alarm. Also: the stream resuming after a server restart, token refresh,
a pending command followed until applied, and static files served by name only. Screenshots go
to docs/img/ with HW_SCREENSHOTS=1, else tmp_path. tests/e2e/test_console_demo.py does the
first over the whole chain, the simulated plant raising the alarm.
"""

from __future__ import annotations

import asyncio
import math
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest
from playwright.async_api import Browser, Page, expect

from api.app import ApiConfig, create_app
from api.server import ApiServer, server_config
from core.batch import ReadingBatch
from core.clock import SystemClock
from core.plant import Plant
from core.quality import Quality
from core.settings import ApiSettings
from storage.writer import BatchWriter
from tests.api.conftest import PASSWORD, SECRET
from tests.support.api_engine import AA_GAS, AA_HH, BB_GAS, running_engine
from tests.support.console_browser import chromium, has_class, new_page, screenshot_dir, watch
from tests.support.console_browser import log_in as console_log_in
from tests.support.waiting import eventually

TAG = "AA.V1.LT1"  # the tag of AA_HH; limits h 8, hh 9 (tests/core/data/two_enterprises.yaml)
TIMEOUT_MS = 15_000


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    return screenshot_dir(tmp_path)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


class LiveServer:
    """The API (console included) served by api.server on one loopback port, on this loop;
    stopped and started again on the same port as a restarted replica would be."""

    def __init__(self, dsn: str, plant: Plant, settings: ApiSettings | None = None) -> None:
        self.dsn = dsn
        self.plant = plant
        self.settings = settings or ApiSettings(command_wait_s=10.0)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self._srv: ApiServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        app = create_app(ApiConfig(self.dsn, SECRET, self.settings, self.plant))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        # as `hazardwatch api` serves it (streams ended first at shutdown); signals stay pytest's
        self._srv = srv = ApiServer(server_config(app, "127.0.0.1", self.port), embedded=True)
        self._task = task = asyncio.create_task(srv.serve(sockets=[sock]))
        await eventually(lambda: srv.started or task.done(), timeout=20)
        assert srv.started, task.exception() if task.done() else "uvicorn did not start"

    async def stop(self) -> None:
        if self._srv is not None and self._task is not None:
            self._srv.should_exit = True
            await asyncio.wait_for(self._task, 20)
            self._srv = self._task = None


@pytest.fixture
async def live(seeded: str, plant: Plant) -> AsyncIterator[LiveServer]:
    s = LiveServer(seeded, plant)
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


@pytest.fixture
def server(live: LiveServer) -> str:
    return live.url


async def write_readings(dsn: str, tag: str, hours: float = 24.0, step_s: int = 20, offset_s: int = 0) -> int:
    """A wave through the tag's limits for the last ``hours`` into reading, reading_1m and
    tag_latest (the historian's own writer, closed so that every minute is rolled up)."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        row = await (await conn.execute("SELECT id FROM tag WHERE key = %s", [tag])).fetchone()
    assert row is not None, tag
    now_us = (SystemClock().now_us() // 1_000_000 + offset_s) * 1_000_000
    n = int(hours * 3600 / step_s)
    ts = now_us - np.arange(n, 0, -1, dtype=np.int64) * step_s * 1_000_000
    values = 7.5 + 2.0 * np.sin(np.arange(n) * 2 * math.pi / 540)  # 7.5 ± 2 in 3 h: crosses H 8 and HH 9
    batch = ReadingBatch.from_rows(
        [(int(row[0]), int(t), float(v), int(Quality.GOOD)) for t, v in zip(ts, values, strict=True)]
    )
    writer = await BatchWriter.connect(dsn, np.array([row[0]], dtype=np.int32))
    try:
        await writer.write_resolved(batch)
    finally:
        await writer.close()
    return n


async def log_in(page: Page, base: str, username: str) -> None:
    await console_log_in(page, base, username, PASSWORD)


async def test_operator_sees_a_new_alarm_live_acknowledges_it_and_opens_its_trend(
    server: str, seeded: str, plant: Plant, browser: Browser, shots: Path, tmp_path: Path
) -> None:
    await write_readings(seeded, TAG)
    async with running_engine(plant, seeded, tmp_path / "alarms") as engine:
        page = await new_page(browser)
        errors = watch(page)
        await log_in(page, server, "op_aa")
        await expect(page.locator("#alarm-empty")).to_be_visible()

        await engine.raise_(AA_HH)  # no reload from here on: the stream brings it
        row = page.locator(f'tr[data-key="{AA_HH}"]')
        await expect(row).to_be_visible(timeout=TIMEOUT_MS)
        await expect(row.locator("td.status")).to_have_text("未确认")
        await expect(row).to_have_class(has_class("unacked"))
        await expect(row.locator(".prio")).to_have_text("高")
        beeps = page.locator("#mute")
        await expect(beeps).to_have_attribute("data-beeps", "0")  # high: no sound

        await engine.raise_(AA_GAS)  # critical: listed first (both unacknowledged) and beeps
        gas = page.locator(f'tr[data-key="{AA_GAS}"]')
        await expect(gas).to_be_visible(timeout=TIMEOUT_MS)
        await expect(beeps).to_have_attribute("data-beeps", "1")
        await expect(page.locator("#alarm-rows tr").first).to_have_attribute("data-key", AA_GAS)
        await page.screenshot(path=shots / "console-alarms.png")

        # a refusal shows the engine's reason: critical alarms are never shelved
        dialog = page.locator("#dialog")
        await gas.locator("button[data-action=shelve]").click()
        await dialog.locator("textarea[name=reason]").fill("检修")
        await dialog.locator("#dialog-ok").click()
        await expect(page.locator("#dialog-result")).to_have_text(
            re.compile("^被拒绝：.*critical alarms cannot be shelved"), timeout=TIMEOUT_MS
        )
        await dialog.locator("#dialog-cancel").click()
        await expect(gas.locator("td.status")).to_have_text("未确认")

        await gas.locator("button[data-action=ack]").click()
        await expect(dialog).to_be_visible()
        await dialog.locator("textarea[name=comment]").fill("现场确认氨气浓度偏高，已启动应急处置")
        await dialog.locator("#dialog-ok").click()
        await expect(page.locator("#dialog-result")).to_have_text(
            "已执行：当前状态 已确认", timeout=TIMEOUT_MS
        )
        await dialog.locator("#dialog-cancel").click()
        await expect(gas.locator("td.status")).to_have_text("已确认")
        await expect(gas).not_to_have_class(has_class("unacked"))
        # acknowledged sorts after unacknowledged, whatever its priority
        await expect(page.locator("#alarm-rows tr").first).to_have_attribute("data-key", AA_HH)
        await expect(page.locator("#alarm-rows tr").last).to_have_attribute("data-key", AA_GAS)

        # handling feedback (处置反馈): a cause category, what was done, by whom
        await gas.locator("button[data-action=feedback]").click()
        await dialog.locator("select[name=cause_category]").select_option("leak")
        await dialog.locator("textarea[name=action]").fill("关闭根部阀，启动喷淋吸收")
        await expect(dialog.locator("input[name=handler]")).to_have_value("张伟")
        await dialog.locator("#dialog-ok").click()
        await expect(page.locator("#dialog-result")).to_have_text(
            "已执行：当前状态 已确认", timeout=TIMEOUT_MS
        )
        await dialog.locator("#dialog-cancel").click()
        async with await psycopg.AsyncConnection.connect(seeded) as conn:
            cur = await conn.execute(
                "SELECT actor, detail FROM alarm_journal WHERE alarm_key = %s AND action = 'FEEDBACK'",
                [AA_GAS],
            )
            assert await cur.fetchall() == [
                (
                    "张伟 (op_aa)",
                    {"cause_category": "leak", "action": "关闭根部阀，启动喷淋吸收", "handler": "张伟"},
                )
            ]

        # the hazard sources: AA's two, by the worst active priority (BB's are not in scope)
        await page.click("nav a[data-view=sources]")
        cards = page.locator("#source-cards article")
        await expect(cards).to_have_count(2)
        await expect(page.locator('article[data-code="AA-HS1"]')).to_have_class(has_class("st-critical"))
        await expect(page.locator('article[data-code="AA-HS1"] .grade')).to_have_text("二级")
        await expect(page.locator('article[data-code="AA-HS2"]')).to_have_class(has_class("st-normal"))
        await page.screenshot(path=shots / "console-sources.png")

        await page.click("nav a[data-view=alarms]")
        await row.locator("a.trend-link").click()
        chart = page.locator("#trend-chart")
        await expect(chart).to_have_attribute("data-tag", TAG, timeout=TIMEOUT_MS)
        await expect(chart.locator("canvas")).to_be_visible()
        await expect(chart).to_have_attribute("data-limits-drawn", "2")
        assert "H=8" in (await chart.get_attribute("data-limits") or "")
        assert int(await chart.get_attribute("data-points") or 0) > 100
        hour = await chart.get_attribute("data-bucket")
        assert hour == "raw" or int(hour or 60) < 60  # the last hour, from raw readings
        # a new reading reaches the open chart through the stream's value events
        shown = int(await chart.get_attribute("data-points") or 0)
        await write_readings(seeded, TAG, hours=1 / 3600, step_s=1, offset_s=1)
        await expect(chart).to_have_attribute("data-points", str(shown + 1), timeout=TIMEOUT_MS)

        await page.select_option("#trend-range", "86400")
        await page.click("#trend-form button[type=submit]")
        await expect(chart).to_have_attribute("data-bucket", "60")  # 24 hours: minute rollups
        assert int(await chart.get_attribute("data-points") or 0) > 1000
        await expect(chart).to_have_attribute("data-limits-drawn", "2")
        first_bucket = "60"
        await page.screenshot(path=shots / "console-trend.png")

        # drag across a tenth of the plot: that window is re-queried, from raw readings (raw, or
        # buckets under a minute: reading_1m cannot serve them)
        over = chart.locator(".u-over")
        box = await over.bounding_box()
        assert box is not None
        y = box["y"] + box["height"] / 2
        await page.mouse.move(box["x"] + box["width"] * 0.88, y)
        await page.mouse.down()
        await page.mouse.move(box["x"] + box["width"] * 0.99, y, steps=8)
        await page.mouse.up()
        await expect(chart).not_to_have_attribute("data-bucket", first_bucket or "", timeout=TIMEOUT_MS)
        zoomed = await chart.get_attribute("data-bucket")
        assert zoomed == "raw" or int(zoomed or 60) < 60, zoomed
        assert int(await chart.get_attribute("data-points") or 0) > 100
        await expect(chart).to_have_attribute("data-limits-drawn", "2")

        assert not errors, errors


async def test_bureau_sees_its_jurisdiction_and_supervises_an_alarm_the_operator_sees_live(
    server: str, seeded: str, plant: Plant, browser: Browser, shots: Path, tmp_path: Path
) -> None:
    async with running_engine(plant, seeded, tmp_path / "alarms") as engine:
        await engine.raise_(AA_HH, BB_GAS)
        operator = await new_page(browser)
        bureau = await new_page(browser)
        errors = [watch(operator), watch(bureau)]
        await log_in(operator, server, "op_aa")
        mine = operator.locator(f'tr[data-key="{AA_HH}"]')
        await expect(mine).to_be_visible()
        await expect(mine.locator("button[data-action=respond]")).to_have_count(0)

        await log_in(bureau, server, "bureau_xy")  # 孝义市: AA only, never BB (文水县)
        await bureau.click("nav a[data-view=bureau]")
        county = bureau.locator('section.county[data-county="孝义市"]')
        await expect(county).to_be_visible(timeout=TIMEOUT_MS)
        await expect(county.locator('tr[data-code="AA"]')).to_be_visible()
        await expect(bureau.locator("section.county")).to_have_count(1)
        row = bureau.locator(f'#bureau-alarms tr[data-key="{AA_HH}"]')
        await expect(row).to_be_visible()
        await expect(bureau.locator("#bureau-alarms tr")).to_have_count(1)  # not BB's gas alarm

        await row.locator("button[data-action=supervise]").click()
        dialog = bureau.locator("#dialog")
        await dialog.locator("textarea[name=text]").fill("请立即核查液位高高报警原因并反馈")
        await dialog.locator("#dialog-ok").click()
        await expect(bureau.locator("#dialog-result")).to_contain_text("已执行", timeout=TIMEOUT_MS)
        await dialog.locator("#dialog-cancel").click()
        async with await psycopg.AsyncConnection.connect(seeded) as conn:
            cur = await conn.execute(
                "SELECT actor, detail->>'text' FROM alarm_journal WHERE alarm_key = %s AND action = 'SUPERVISE'",
                [AA_HH],
            )
            assert await cur.fetchall() == [("孙强 (bureau_xy)", "请立即核查液位高高报警原因并反馈")]
        # the enterprise's operator sees the supervision arrive, and may answer it
        await expect(mine.locator(".supervised")).to_have_text("督办", timeout=TIMEOUT_MS)
        await expect(mine.locator("button[data-action=respond]")).to_be_visible()

        # the city bureau sees both counties; picking an enterprise narrows its alarms
        await bureau.click("#logout")
        await log_in(bureau, server, "bureau_city")
        await bureau.click("nav a[data-view=bureau]")
        await expect(bureau.locator("section.county")).to_have_count(2, timeout=TIMEOUT_MS)
        await expect(bureau.locator("#bureau-alarms tr")).to_have_count(2)
        await engine.raise_(AA_GAS)  # the counts follow the alarms while the view is open
        await expect(bureau.locator('tr[data-code="AA"] td').nth(2)).to_have_text("2", timeout=TIMEOUT_MS)
        await expect(bureau.locator('tr[data-code="AA"]')).to_have_class(has_class("st-critical"))
        await expect(bureau.locator("#bureau-alarms tr")).to_have_count(3)
        await bureau.locator('tr[data-code="BB"]').click()
        await expect(bureau.locator('tr[data-code="BB"]')).to_have_class(has_class("picked"))
        await expect(bureau.locator("#bureau-alarms tr")).to_have_count(1)
        await expect(bureau.locator("#bureau-alarms tr")).to_have_attribute("data-key", BB_GAS)
        await bureau.locator('tr[data-code="BB"]').click()
        await expect(bureau.locator("#bureau-alarms tr")).to_have_count(3)
        await bureau.screenshot(path=shots / "console-bureau.png")
        assert errors == [[], []]


async def test_a_dropped_stream_resumes_where_it_left_off(
    live: LiveServer, seeded: str, plant: Plant, browser: Browser, tmp_path: Path
) -> None:
    async with running_engine(plant, seeded, tmp_path / "alarms") as engine:
        page = await new_page(browser)
        errors = watch(page)
        await log_in(page, live.url, "op_aa")
        await engine.raise_(AA_HH)
        await expect(page.locator(f'tr[data-key="{AA_HH}"]')).to_be_visible(timeout=TIMEOUT_MS)

        await live.stop()  # the stream drops; the page keeps trying
        await expect(page.locator("#link")).to_have_text("○ 重连中", timeout=TIMEOUT_MS)
        await engine.raise_(AA_GAS)  # while nobody serves the page
        await engine.clear(AA_HH)
        await live.start()
        await expect(page.locator("#link")).to_have_text("● 实时", timeout=30_000)
        # resumed after the last event it saw (Last-Event-ID): the alarm raised meanwhile is
        # there, and the one whose condition cleared meanwhile shows it (returned, unacknowledged)
        gas = page.locator(f'tr[data-key="{AA_GAS}"]')
        await expect(gas).to_be_visible(timeout=TIMEOUT_MS)
        await expect(gas.locator("td.status")).to_have_text("未确认")
        hh = page.locator(f'tr[data-key="{AA_HH}"] td.status')
        await expect(hh).to_have_text("已恢复未确认")
        assert not errors, errors


async def test_a_stream_dropped_before_any_alarm_event_reloads_the_list(
    live: LiveServer, seeded: str, plant: Plant, browser: Browser, tmp_path: Path
) -> None:
    """A quiet plant: no alarm event carried a position before the drop, so the reconnect can
    only start from now; what was raised meanwhile comes from reloading the list (review F5)."""
    async with running_engine(plant, seeded, tmp_path / "alarms") as engine:
        page = await new_page(browser)
        errors = watch(page)
        await log_in(page, live.url, "op_aa")
        await expect(page.locator("#link")).to_have_text("● 实时", timeout=TIMEOUT_MS)
        await live.stop()
        await expect(page.locator("#link")).to_have_text("○ 重连中", timeout=TIMEOUT_MS)
        await engine.raise_(AA_GAS)  # while nobody serves the page
        await live.start()
        await expect(page.locator("#link")).to_have_text("● 实时", timeout=30_000)
        await expect(page.locator(f'tr[data-key="{AA_GAS}"]')).to_be_visible(timeout=TIMEOUT_MS)
        assert not errors, errors


async def test_tokens_are_refreshed_before_they_expire_and_after_a_401(server: str, browser: Browser) -> None:
    page = await new_page(browser)
    errors = watch(page)
    await log_in(page, server, "op_aa")
    stored = "() => JSON.parse(sessionStorage.getItem('hw.tokens'))"
    first = await page.evaluate(stored)
    assert first["access"] and first["refresh"] and "hw.tokens" not in page.url

    # a token the server no longer takes: the call is refused once, refreshed, and retried
    await page.evaluate(
        "(t) => sessionStorage.setItem('hw.tokens', JSON.stringify(t))", {**first, "access": "x"}
    )
    await page.click("nav a[data-view=sources]")
    await expect(page.locator("#source-cards article")).to_have_count(2)
    second = await page.evaluate(stored)
    assert second["access"] not in ("x", first["access"])
    assert [e.split(" ")[0] for e in errors] == ["401"], errors  # the one refusal, nothing else
    errors.clear()

    # one about to expire: refreshed ahead of time by the timer the page sets when it loads
    await page.evaluate(
        "(t) => sessionStorage.setItem('hw.tokens', JSON.stringify(t))", {**second, "expiresAt": 0}
    )
    await page.reload()
    await expect(page.locator("#main")).to_be_visible()
    await page.wait_for_function(
        "(old) => JSON.parse(sessionStorage.getItem('hw.tokens')).access !== old", arg=second["access"]
    )
    assert (await page.evaluate(stored))["expiresAt"] > 0
    assert not errors, errors


async def test_a_command_the_engine_has_not_applied_yet_is_followed_until_it_is(
    seeded: str, plant: Plant, browser: Browser, tmp_path: Path
) -> None:
    live = LiveServer(seeded, plant, ApiSettings(command_wait_s=0))  # answers 202 at once
    await live.start()
    try:
        async with running_engine(plant, seeded, tmp_path / "alarms") as engine:
            await engine.raise_(AA_HH)
        page = await new_page(browser)
        errors = watch(page)
        await log_in(page, live.url, "op_aa")
        row = page.locator(f'tr[data-key="{AA_HH}"]')
        await row.locator("button[data-action=ack]").click()
        await page.locator("#dialog-ok").click()  # nobody applies commands now
        result = page.locator("#dialog-result")
        await expect(result).to_have_text(re.compile("^已提交，等待报警引擎处理"))
        await expect(result).to_have_class("pending")
        async with running_engine(plant, seeded, tmp_path / "alarms"):  # the engine is back
            await expect(result).to_have_text("已执行：当前状态 已确认", timeout=TIMEOUT_MS)
            await page.locator("#dialog-cancel").click()
            await expect(row.locator("td.status")).to_have_text("已确认")
        assert not errors, errors
    finally:
        await live.stop()


async def test_console_files_are_served_by_name_only(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert (r.status_code, r.headers["location"]) == (307, "/console/")
    page = await client.get("/console/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script type="module" src="app.js">' in page.text
    js = await client.get("/console/vendor/uPlot.iife.min.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    for path in (
        "/console/nope.js",
        "/console/../api/console.py",
        "/console/%2e%2e/app.py",
        "/console//etc/passwd",
    ):
        assert (await client.get(path)).status_code == 404, path
